"""Checkpoints in the Mongo-protocol store (FerretDB v1 locally, MongoDB in prod).

`segments`: one document per partition per checkpoint, the compact facts of offsets [s, e) as one
MessagePack blob of typed facts (`domain.facts`). `partition_offsets`: one
document with every partition's next offset, raised with `$max` after the segments are stored.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pymongo import ASCENDING
from pymongo.asynchronous.database import AsyncDatabase

from kasse_metrics.application.ingest import Segment, TopicPartition
from kasse_metrics.domain.facts import Fact, decode_facts, encode_facts

OFFSETS_DOC = "next_offsets"


def _offset_field(tp: TopicPartition) -> str:
    """`topic|partition` with the topic's dots escaped: a dot in a field name would mean nesting."""
    return f"{tp[0].replace('%', '%25').replace('.', '%2E')}|{tp[1]}"


def _offset_key(field: str) -> TopicPartition:
    topic, partition = field.rsplit("|", 1)
    return topic.replace("%2E", ".").replace("%25", "%"), int(partition)


def segment_to_document(s: Segment) -> dict[str, Any]:
    # _id left to the driver: two writers of the same range (a replay after a crash between the two
    # writes, a zombie owner during a rebalance) both keep theirs; readers skip repeated event ids.
    # The facts are one MessagePack blob (typed, tagged structs): cheap to encode and to read back.
    return {"t": s.topic, "p": s.partition, "s": s.start, "e": s.end, "n": len(s.facts), "b": encode_facts(s.facts)}


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
        return [f async for seg in cursor for f in decode_facts(seg["b"])]
