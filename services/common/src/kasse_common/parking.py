"""Parked events: records about an aggregate that does not exist here yet, kept until it does.

One small document per parked record (`parked_events` in the service's database): the record as it
came (topic, partition, offset, key, value, headers), the aggregate it is about (its CloudEvents
subject) and when it was parked. The collection only holds what waits, so scanning it is cheap.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError

COLLECTION = "parked_events"


class ParkedEvents:
    def __init__(self, collection: AsyncCollection[Any]) -> None:
        self.collection = collection

    async def park(self, event_id: str, aggregate: str, raw: Any, headers: dict[str, str], reason: str) -> None:
        doc = {
            "_id": event_id,
            "aggregate": aggregate,
            "topic": raw.topic,
            "partition": raw.partition,
            "offset": raw.offset,
            "key": raw.key,
            "value": raw.value,
            "headers": headers,
            "reason": reason[:500],
            "parked_at": datetime.now(UTC),
            "attempts": 0,
        }
        try:
            await self.collection.insert_one(doc)
        except DuplicateKeyError:
            pass  # a redelivery of a record parked already

    async def waiting(self, aggregate: str | None = None, limit: int = 500) -> list[dict[str, Any]]:
        query = {"aggregate": aggregate} if aggregate is not None else {}
        return await self.collection.find(query, limit=limit).sort("parked_at", 1).to_list()

    async def count(self) -> int:
        return await self.collection.count_documents({})

    async def still_parked(self, event_id: str) -> bool:
        return await self.collection.find_one({"_id": event_id}, {"_id": 1}) is not None

    async def remove(self, event_id: str) -> None:
        await self.collection.delete_one({"_id": event_id})

    async def tried(self, event_id: str) -> None:
        await self.collection.update_one({"_id": event_id}, {"$inc": {"attempts": 1}})
