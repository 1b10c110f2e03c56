"""In-memory repositories for unit tests: same contracts as the Mongo ones (versions, dedupe)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from kasse_common.errors import ConcurrencyError
from kasse_shipping.application.ports import Loaded, PendingEvent, PublishedTable
from kasse_shipping.domain.fulfilment import Fulfilment
from kasse_shipping.domain.rates import RateTable


class InMemoryFulfilmentRepository:
    def __init__(self) -> None:
        self.docs: dict[str, tuple[str, int]] = {}  # order id -> (JSON, version)
        self.processed: dict[str, set[str]] = {}
        self.published: list[PendingEvent] = []

    async def load(self, order_id: str) -> Loaded:
        found = self.docs.get(order_id)
        if found is None:
            return Loaded(Fulfilment(order_id=order_id), None)
        return Loaded(Fulfilment.model_validate_json(found[0]), found[1])

    async def save(self, loaded: Loaded, events: Sequence[PendingEvent], consumed_event_id: str | None = None) -> bool:
        order_id = loaded.fulfilment.order_id
        if consumed_event_id and consumed_event_id in self.processed.get(order_id, set()):
            return False
        current = self.docs.get(order_id)
        if (current[1] if current else None) != loaded.version:
            raise ConcurrencyError(order_id)
        self.docs[order_id] = (loaded.fulfilment.model_dump_json(), (loaded.version or 0) + 1)
        if consumed_event_id:
            self.processed.setdefault(order_id, set()).add(consumed_event_id)
        self.published.extend(events)
        return True

    async def was_processed(self, order_id: str, event_id: str) -> bool:
        return event_id in self.processed.get(order_id, set())

    async def by_tracking_number(self, tracking_number: str) -> Fulfilment | None:
        for order_id in self.docs:
            f = (await self.load(order_id)).fulfilment
            if f.shipment and f.shipment.tracking_number == tracking_number:
                return f
        return None

    async def order_id_of_return(self, return_id: str) -> str | None:
        for order_id in self.docs:
            if (await self.load(order_id)).fulfilment.find_return(return_id):
                return order_id
        return None

    async def due_for_scan(self, now: datetime, limit: int) -> list[str]:
        due = []
        for order_id in self.docs:
            s = (await self.load(order_id)).fulfilment.shipment
            if s and s.next_transition_at is not None and s.next_transition_at <= now:
                due.append(order_id)
        return due[:limit]


class InMemoryRateTableRepository:
    def __init__(self) -> None:
        self.current_by_id: dict[str, PublishedTable] = {}
        self.published: list[PendingEvent] = []

    async def current(self, rate_table_id: str) -> PublishedTable | None:
        return self.current_by_id.get(rate_table_id)

    async def save(
        self,
        table: RateTable,
        revision: int,
        fingerprint: str,
        expected_version: int | None,
        events: Sequence[PendingEvent],
    ) -> None:
        now = self.current_by_id.get(table.rate_table_id)
        if (now.version if now else None) != expected_version:
            raise ConcurrencyError(table.rate_table_id)
        self.current_by_id[table.rate_table_id] = PublishedTable(revision, fingerprint, (expected_version or 0) + 1)
        self.published.extend(events)
