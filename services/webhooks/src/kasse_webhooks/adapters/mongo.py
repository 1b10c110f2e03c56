"""Mongo repositories: endpoints, the event log (for replay) and deliveries (the durable queue).

FerretDB v1 compatible: plain finds, single-document conditional updates, no aggregation stages.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from pymongo import ASCENDING, DESCENDING
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, DuplicateKeyError

from kasse_common.envelope import OutgoingRecord
from kasse_common.persistence import HEAVY_FIELDS_EXCLUDED, DocumentStore
from kasse_contracts.base import Event
from kasse_webhooks.application.ports import Delivery, LoggedEvent
from kasse_webhooks.domain.deliveries import AttemptResult, DeliveryStatus
from kasse_webhooks.domain.endpoints import Endpoint, EndpointStatus, SigningSecret

DUPLICATE_KEY = 11000


def _endpoint_doc(e: Endpoint) -> dict[str, Any]:
    return {
        "_id": e.endpoint_id,
        "url": e.url,
        "event_types": e.event_types,
        "description": e.description,
        "secrets": [{"value": s.value, "created_at": s.created_at, "expires_at": s.expires_at} for s in e.secrets],
        "status": e.status.value,
        "created_at": e.created_at,
        "disabled_reason": e.disabled_reason,
        "disabled_at": e.disabled_at,
        "_version": e.version,
    }


def _endpoint(doc: dict[str, Any]) -> Endpoint:
    return Endpoint(
        endpoint_id=doc["_id"],
        url=doc["url"],
        event_types=list(doc["event_types"]),
        description=doc.get("description", ""),
        secrets=[SigningSecret(s["value"], s["created_at"], s.get("expires_at")) for s in doc["secrets"]],
        status=EndpointStatus(doc["status"]),
        created_at=doc["created_at"],
        disabled_reason=doc.get("disabled_reason", ""),
        disabled_at=doc.get("disabled_at"),
        version=doc.get("_version", 0),
    )


class MongoEndpoints:
    """Endpoints on the kit's DocumentStore: a change and the events it causes (WebhookEndpointDisabled,
    WebhookEndpointEnabled) are one write; the outbox relay publishes them."""

    def __init__(self, store: DocumentStore, encode: Callable[[Event, str], OutgoingRecord]) -> None:
        self.store = store
        self.collection = store.collection
        self._encode = encode

    async def add(self, endpoint: Endpoint) -> None:
        await self.collection.insert_one(_endpoint_doc(endpoint))

    async def get(self, endpoint_id: str) -> Endpoint | None:
        doc = await self.collection.find_one({"_id": endpoint_id}, HEAVY_FIELDS_EXCLUDED)
        return None if doc is None else _endpoint(doc)

    async def all(self) -> list[Endpoint]:
        return [
            _endpoint(doc)
            async for doc in self.collection.find({}, HEAVY_FIELDS_EXCLUDED).sort("created_at", ASCENDING)
        ]

    async def save(self, endpoint: Endpoint, events: Sequence[tuple[str, Event]] = ()) -> Endpoint:
        doc = _endpoint_doc(endpoint)
        del doc["_id"], doc["_version"]
        # $set, not replace: the worker lease fields on the same document stay as they are
        await self.store.commit(
            endpoint.endpoint_id,
            expected_version=endpoint.version,
            state=doc,
            events=[self._encode(event, event_id) for event_id, event in events],
        )
        return _endpoint({**doc, "_id": endpoint.endpoint_id, "_version": endpoint.version + 1})

    async def acquire_worker_lease(self, endpoint_id: str, owner: str, now: datetime, until: datetime) -> bool:
        """One replica at a time delivers an endpoint's messages: it holds the endpoint's lease."""
        result = await self.collection.update_one(
            {
                "_id": endpoint_id,
                "$or": [{"_worker": owner}, {"_worker_until": None}, {"_worker_until": {"$lte": now}}],
            },
            {"$set": {"_worker": owner, "_worker_until": until}},
        )
        return result.matched_count == 1

    async def delete(self, endpoint_id: str) -> bool:
        return (await self.collection.delete_one({"_id": endpoint_id})).deleted_count == 1


class MongoEventLog:
    def __init__(self, db: AsyncDatabase[Any]) -> None:
        self.collection = db["events"]

    async def ensure_indexes(self) -> None:
        await self.collection.create_index([("time", ASCENDING)])
        await self.collection.create_index([("topic", ASCENDING), ("partition", ASCENDING), ("offset", ASCENDING)])

    async def add(self, event: LoggedEvent) -> None:
        try:
            await self.collection.insert_one(
                {
                    "_id": event.event_id,
                    "type": event.event_type,
                    "subject": event.subject,
                    "time": event.time,
                    "topic": event.topic,
                    "partition": event.partition,
                    "offset": event.offset,
                    "body": event.body,
                }
            )
        except DuplicateKeyError:
            pass  # the record came again (at least once): kept already

    async def since(
        self, *, time: datetime | None, offsets: dict[tuple[str, int], int] | None, limit: int
    ) -> list[LoggedEvent]:
        if time is not None:
            query: dict[str, Any] = {"time": {"$gte": time}}
        else:
            query = {
                "$or": [
                    {"topic": topic, "partition": partition, "offset": {"$gte": offset}}
                    for (topic, partition), offset in (offsets or {}).items()
                ]
            }
        docs = [doc async for doc in self.collection.find(query).sort([("time", ASCENDING)]).limit(limit)]
        # Kafka's order within a partition, time across partitions
        docs.sort(key=lambda d: (d["time"], d["topic"], d["partition"], d["offset"]))
        return [
            LoggedEvent(
                event_id=d["_id"],
                event_type=d["type"],
                subject=d["subject"],
                time=d["time"],
                topic=d["topic"],
                partition=d["partition"],
                offset=d["offset"],
                body=d["body"],
            )
            for d in docs
        ]

    async def purge_before(self, time: datetime) -> int:
        return (await self.collection.delete_many({"time": {"$lt": time}})).deleted_count


def _delivery_doc(d: Delivery) -> dict[str, Any]:
    return {
        "_id": d.delivery_id,
        "endpoint_id": d.endpoint_id,
        "event_id": d.event_id,
        "event_type": d.event_type,
        "key": d.key,
        "seq": d.seq,
        "body": d.body,
        "status": d.status.value,
        "created_at": d.created_at,
        "next_attempt_at": d.next_attempt_at,
        "origin": d.origin,
        "attempt_count": d.attempt_count,
        "attempts": d.attempts,
        "lease_until": d.lease_until,
        "delivered_at": d.delivered_at,
    }


def _delivery(doc: dict[str, Any]) -> Delivery:
    return Delivery(
        delivery_id=doc["_id"],
        endpoint_id=doc["endpoint_id"],
        event_id=doc["event_id"],
        event_type=doc["event_type"],
        key=doc["key"],
        seq=doc["seq"],
        body=doc["body"],
        status=DeliveryStatus(doc["status"]),
        created_at=doc["created_at"],
        next_attempt_at=doc["next_attempt_at"],
        origin=doc.get("origin", "event"),
        attempt_count=doc.get("attempt_count", 0),
        attempts=list(doc.get("attempts", [])),
        lease_until=doc.get("lease_until"),
        delivered_at=doc.get("delivered_at"),
    )


class MongoDeliveries:
    """Two collections: `deliveries` is the log (the message, its attempts, its status); `queue` holds
    a small entry per *pending* delivery (endpoint, key, seq, when due), so a worker's scan reads only
    what is still to do (FerretDB v1 reads a whole collection for such a query, and the log only grows).

    Writes go log first, queue second: a crash in between is repaired by the Kafka redelivery (the
    recorder writes both again, duplicates ignored) or, after an attempt, by the next scan (a queue
    entry whose log says finished is dropped). At worst a message is sent again: at least once.
    """

    def __init__(self, db: AsyncDatabase[Any]) -> None:
        self.collection = db["deliveries"]
        self.queue = db["queue"]

    async def ensure_indexes(self) -> None:
        await self.collection.create_index([("endpoint_id", ASCENDING), ("status", ASCENDING), ("seq", ASCENDING)])
        await self.collection.create_index([("endpoint_id", ASCENDING), ("seq", DESCENDING)])
        await self.queue.create_index([("endpoint_id", ASCENDING), ("seq", ASCENDING)])

    @staticmethod
    def _queue_doc(d: Delivery) -> dict[str, Any]:
        return {
            "_id": d.delivery_id,
            "endpoint_id": d.endpoint_id,
            "key": d.key,
            "seq": d.seq,
            "next_attempt_at": d.next_attempt_at,
        }

    @staticmethod
    async def _insert_ignoring_duplicates(collection: Any, docs: list[dict[str, Any]]) -> None:
        if not docs:
            return
        try:
            await collection.insert_many(docs, ordered=False)
        except BulkWriteError as exc:
            if any(e.get("code") != DUPLICATE_KEY for e in exc.details.get("writeErrors", [])):
                raise

    async def add_many(self, deliveries: list[Delivery]) -> None:
        await self._insert_ignoring_duplicates(self.collection, [_delivery_doc(d) for d in deliveries])
        await self._insert_ignoring_duplicates(self.queue, [self._queue_doc(d) for d in deliveries])

    async def get(self, delivery_id: str) -> Delivery | None:
        doc = await self.collection.find_one({"_id": delivery_id})
        return None if doc is None else _delivery(doc)

    async def pending_heads(self, endpoint_id: str, scan: int) -> list[Delivery]:
        cursor = self.queue.find({"endpoint_id": endpoint_id}).sort("seq", ASCENDING).limit(scan)
        heads: dict[str, dict[str, Any]] = {}
        async for entry in cursor:
            if entry["key"] not in heads:
                heads[entry["key"]] = entry
        if not heads:
            return []
        ids = [entry["_id"] for entry in heads.values()]
        # One read by `_id` each: FerretDB v1 answers `{_id: v}` from one row, while `{_id: {$in: [...]}}`
        # read the whole delivery history every round (issue 12).
        found = await asyncio.gather(*(self.collection.find_one({"_id": i}) for i in ids))
        docs = {doc["_id"]: doc for doc in found if doc is not None}
        out: list[Delivery] = []
        stale: list[str] = []
        for entry in heads.values():
            doc = docs.get(entry["_id"])
            if doc is None or doc["status"] != DeliveryStatus.PENDING.value:
                stale.append(entry["_id"])  # finished (crash between the two writes): drop it
                continue
            delivery = _delivery(doc)
            delivery.next_attempt_at = entry["next_attempt_at"]
            out.append(delivery)
        if stale:
            await self.queue.delete_many({"_id": {"$in": stale}})
        return sorted(out, key=lambda d: d.seq)

    async def record_attempt(
        self,
        delivery: Delivery,
        result: AttemptResult,
        status: DeliveryStatus,
        next_attempt_at: datetime | None,
    ) -> None:
        update: dict[str, Any] = {
            "status": status.value,
            "lease_until": None,
            "last_status_code": result.status_code,
        }
        if next_attempt_at is not None:
            update["next_attempt_at"] = next_attempt_at
        if status is DeliveryStatus.SUCCEEDED:
            update["delivered_at"] = result.started_at
        await self.collection.update_one(
            {"_id": delivery.delivery_id},
            {"$set": update, "$inc": {"attempt_count": 1}, "$push": {"attempts": result.to_document()}},
        )
        if status is DeliveryStatus.PENDING:
            await self.queue.update_one({"_id": delivery.delivery_id}, {"$set": {"next_attempt_at": next_attempt_at}})
        else:
            await self.queue.delete_one({"_id": delivery.delivery_id})

    async def list(self, endpoint_id: str, status: DeliveryStatus | None, limit: int) -> list[Delivery]:
        query: dict[str, Any] = {"endpoint_id": endpoint_id}
        if status is not None:
            query["status"] = status.value
        cursor = self.collection.find(query).sort("seq", DESCENDING).limit(limit)
        return [_delivery(doc) async for doc in cursor]

    async def requeue(self, endpoint_id: str, now: datetime) -> int:
        failed = [
            _delivery(doc)
            async for doc in self.collection.find({"endpoint_id": endpoint_id, "status": DeliveryStatus.FAILED.value})
        ]
        result = await self.collection.update_many(
            {
                "endpoint_id": endpoint_id,
                "status": {"$in": [DeliveryStatus.PENDING.value, DeliveryStatus.FAILED.value]},
            },
            {
                "$set": {
                    "status": DeliveryStatus.PENDING.value,
                    "attempt_count": 0,
                    "next_attempt_at": now,
                    "lease_until": None,
                }
            },
        )
        await self._insert_ignoring_duplicates(self.queue, [self._queue_doc(d) for d in failed])
        await self.queue.update_many({"endpoint_id": endpoint_id}, {"$set": {"next_attempt_at": now}})
        return result.modified_count
