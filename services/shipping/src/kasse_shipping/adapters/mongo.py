"""Mongo repositories on the kit's DocumentStore: state and its events in one single-document write.

A fulfilment document is `{_id: order_id, fulfilment: {...}, tracking_number, due_at, return_ids}`:
the aggregate as JSON-mode data plus the few top-level fields the service queries by (indexed).
`due_at` is a real BSON date (not a JSON string) so the carrier job can range-query it; the job reads
the shipments with a scan ahead from a small companion collection (kit DueWork), not the history.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from pymongo import ASCENDING

from kasse_common.due import DueWork
from kasse_common.envelope import OutgoingRecord
from kasse_common.persistence import CommitOutcome, DocumentStore
from kasse_contracts.base import Event
from kasse_shipping.application.ports import Loaded, PendingEvent, PublishedTable
from kasse_shipping.domain.fulfilment import Fulfilment
from kasse_shipping.domain.rates import RateTable

Encoder = Callable[[Event, str], OutgoingRecord]


class MongoFulfilmentRepository:
    def __init__(self, store: DocumentStore, encode: Encoder) -> None:
        self._store = store
        self._encode = encode
        self.scans = DueWork(  # the store marks each committed shipment with a scan ahead
            store,
            "scan",
            has_work={"due_at": {"$ne": None}},
            at_field="due_at",
            pending=lambda state: state.get("due_at") is not None,
        )

    async def ensure_indexes(self) -> None:
        c = self._store.collection
        await self.scans.ensure_indexes()
        await c.create_index([("tracking_number", ASCENDING)], name="tracking_number")
        await c.create_index([("due_at", ASCENDING)], name="due_at")
        await c.create_index([("return_ids", ASCENDING)], name="return_ids")

    async def load(self, order_id: str) -> Loaded:
        doc = await self._store.load(order_id)
        if doc is None:
            return Loaded(Fulfilment(order_id=order_id), None)
        return Loaded(Fulfilment.model_validate(doc["fulfilment"]), doc["_version"])

    async def save(self, loaded: Loaded, events: Sequence[PendingEvent], consumed_event_id: str | None = None) -> bool:
        f = loaded.fulfilment
        state: dict[str, Any] = {
            "fulfilment": f.model_dump(mode="json"),
            "tracking_number": f.shipment.tracking_number if f.shipment else None,
            "due_at": f.shipment.next_transition_at if f.shipment else None,
            "return_ids": [r.return_id for r in f.returns],
        }
        outcome = await self._store.commit(
            f.order_id,
            expected_version=loaded.version,
            state=state,
            events=[self._encode(p.event, p.event_id) for p in events],
            consumed_event_id=consumed_event_id,
        )
        return outcome is CommitOutcome.APPLIED

    async def was_processed(self, order_id: str, event_id: str) -> bool:
        return await self._store.was_processed(order_id, event_id)

    async def by_tracking_number(self, tracking_number: str) -> Fulfilment | None:
        doc = await self._store.collection.find_one({"tracking_number": tracking_number}, {"fulfilment": 1})
        return Fulfilment.model_validate(doc["fulfilment"]) if doc else None

    async def order_id_of_return(self, return_id: str) -> str | None:
        doc = await self._store.collection.find_one({"return_ids": return_id}, {"_id": 1})
        return str(doc["_id"]) if doc else None

    async def due_for_scan(self, now: datetime, limit: int) -> list[str]:
        return [str(i) for i in await self.scans.due(now, limit, {"due_at": {"$lte": now}})]


class MongoRateTableRepository:
    def __init__(self, store: DocumentStore, encode: Encoder) -> None:
        self._store = store
        self._encode = encode

    async def current(self, rate_table_id: str) -> PublishedTable | None:
        doc = await self._store.load(rate_table_id)
        if doc is None:
            return None
        return PublishedTable(revision=doc["revision"], fingerprint=doc["fingerprint"], version=doc["_version"])

    async def save(
        self,
        table: RateTable,
        revision: int,
        fingerprint: str,
        expected_version: int | None,
        events: Sequence[PendingEvent],
    ) -> None:
        await self._store.commit(
            table.rate_table_id,
            expected_version=expected_version,
            state={"revision": revision, "fingerprint": fingerprint, "table": table.model_dump(mode="json")},
            events=[self._encode(p.event, p.event_id) for p in events],
        )
