"""Facts and partition offsets in the Mongo-protocol store (FerretDB v1 locally, MongoDB in prod)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pymongo import ASCENDING
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError

from kasse_metrics.application.ingest import TopicPartition
from kasse_metrics.domain.facts import Fact, Position

DUPLICATE_KEY = 11000
OFFSETS_DOC = "next_offsets"


def _offset_field(tp: TopicPartition) -> str:
    """`topic|partition` with the topic's dots escaped: a dot in a field name would mean nesting."""
    return f"{tp[0].replace('%', '%25').replace('.', '%2E')}|{tp[1]}"


def _offset_key(field: str) -> TopicPartition:
    topic, partition = field.rsplit("|", 1)
    return topic.replace("%2E", ".").replace("%25", "%"), int(partition)


def fact_to_document(f: Fact) -> dict[str, Any]:
    return {
        "_id": f.event_id,
        "k": f.kind,
        "ts": f.occurred_at,
        "s": f.session_id,
        "t": f.position.topic,
        "p": f.position.partition,
        "o": f.position.offset,
        "d": f.data,
    }


def fact_from_document(doc: Mapping[str, Any]) -> Fact:
    return Fact(
        event_id=doc["_id"],
        kind=doc["k"],
        occurred_at=doc["ts"],
        position=Position(doc["t"], doc["p"], doc["o"]),
        session_id=doc.get("s"),
        data=doc.get("d") or {},
    )


class MongoFactStore:
    FACTS = "facts"
    OFFSETS = "partition_offsets"

    def __init__(self, db: AsyncDatabase[Any]) -> None:
        self.facts = db[self.FACTS]
        self.offsets = db[self.OFFSETS]

    async def ensure_indexes(self) -> None:
        await self.facts.create_index([("t", ASCENDING), ("p", ASCENDING), ("o", ASCENDING)], name="position")

    async def add(self, facts: Sequence[Fact]) -> dict[str, Position]:
        if not facts:
            return {}
        try:
            await self.facts.insert_many([fact_to_document(f) for f in facts], ordered=False)
            return {}
        except BulkWriteError as exc:
            errors = exc.details.get("writeErrors", [])
            others = [e for e in errors if e.get("code") != DUPLICATE_KEY]
            if others:
                raise
        # Rare (redelivery, replay after a crash, duplicated events): where were they stored first?
        ids = [facts[e["index"]].event_id for e in errors]
        cursor = self.facts.find({"_id": {"$in": ids}}, {"t": 1, "p": 1, "o": 1})
        return {d["_id"]: Position(d["t"], d["p"], d["o"]) async for d in cursor}

    async def raise_offsets(self, next_offsets: Mapping[TopicPartition, int]) -> None:
        # One document holds every partition's next offset: one atomic `$max` per batch, whatever
        # the number of partitions (on FerretDB a bulk of per-partition upserts costs 5-7x more).
        if not next_offsets:
            return
        await self.offsets.update_one(
            {"_id": OFFSETS_DOC},
            {"$max": {_offset_field(tp): offset for tp, offset in next_offsets.items()}},
            upsert=True,
        )

    async def committed_offsets(self) -> dict[TopicPartition, int]:
        doc = await self.offsets.find_one({"_id": OFFSETS_DOC})
        return {_offset_key(k): v for k, v in (doc or {}).items() if k != "_id"}

    async def read(self, tp: TopicPartition, start: int, end: int) -> list[Fact]:
        cursor = self.facts.find({"t": tp[0], "p": tp[1], "o": {"$gte": start, "$lt": end}}).sort("o", ASCENDING)
        return [fact_from_document(d) async for d in cursor]
