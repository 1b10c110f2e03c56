"""Checkpoints in the Mongo-protocol store (FerretDB v1 locally, MongoDB in prod).

`segments`: one document per partition per checkpoint, the compact facts of offsets [s, e) as an array
of sub-documents (FerretDB v1 refuses arrays of arrays, so none are used). `partition_offsets`: one
document with every partition's next offset, raised with `$max` after the segments are stored.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pymongo import ASCENDING
from pymongo.asynchronous.database import AsyncDatabase

from kasse_metrics.application.ingest import Segment, TopicPartition
from kasse_metrics.domain.facts import Fact, Position

OFFSETS_DOC = "next_offsets"


def _offset_field(tp: TopicPartition) -> str:
    """`topic|partition` with the topic's dots escaped: a dot in a field name would mean nesting."""
    return f"{tp[0].replace('%', '%25').replace('.', '%2E')}|{tp[1]}"


def _offset_key(field: str) -> TopicPartition:
    topic, partition = field.rsplit("|", 1)
    return topic.replace("%2E", ".").replace("%25", "%"), int(partition)


def fact_to_document(f: Fact) -> dict[str, Any]:
    """A fact inside its segment: the partition is the segment's, only the offset is kept."""
    return {"i": f.event_id, "k": f.kind, "ts": f.occurred_at, "s": f.session_id, "o": f.position.offset, "d": f.data}


def fact_from_document(doc: Mapping[str, Any], topic: str, partition: int) -> Fact:
    return Fact(
        event_id=doc["i"],
        kind=doc["k"],
        occurred_at=doc["ts"],
        position=Position(topic, partition, doc["o"]),
        session_id=doc.get("s"),
        data=doc.get("d") or {},
    )


def segment_to_document(s: Segment) -> dict[str, Any]:
    # _id left to the driver: two writers of the same range (a replay after a crash between the two
    # writes, a zombie owner during a rebalance) both keep theirs; readers skip repeated event ids.
    return {"t": s.topic, "p": s.partition, "s": s.start, "e": s.end, "f": [fact_to_document(f) for f in s.facts]}


class MongoCheckpointStore:
    SEGMENTS = "segments"
    OFFSETS = "partition_offsets"

    def __init__(self, db: AsyncDatabase[Any]) -> None:
        self.segments = db[self.SEGMENTS]
        self.offsets = db[self.OFFSETS]

    async def ensure_indexes(self) -> None:
        await self.segments.create_index([("t", ASCENDING), ("p", ASCENDING), ("e", ASCENDING)], name="position")

    async def write(self, segments: Sequence[Segment]) -> None:
        if not segments:
            return
        await self.segments.insert_many([segment_to_document(s) for s in segments], ordered=True)
        # One document holds every partition's next offset: one atomic `$max` per checkpoint.
        next_offsets: dict[str, int] = {}
        for s in segments:
            key = _offset_field(s.tp)
            next_offsets[key] = max(next_offsets.get(key, 0), s.end)
        await self.offsets.update_one({"_id": OFFSETS_DOC}, {"$max": next_offsets}, upsert=True)

    async def committed_offsets(self) -> dict[TopicPartition, int]:
        doc = await self.offsets.find_one({"_id": OFFSETS_DOC})
        return {_offset_key(k): v for k, v in (doc or {}).items() if k != "_id"}

    async def read(self, tp: TopicPartition, start: int, end: int) -> list[Fact]:
        topic, partition = tp
        cursor = self.segments.find({"t": topic, "p": partition, "e": {"$gt": start}, "s": {"$lt": end}}).sort(
            "s", ASCENDING
        )
        return [fact_from_document(f, topic, partition) async for seg in cursor for f in seg["f"]]
