"""What the use cases need from the outside world: storage and the carrier."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from kasse_contracts.base import Event
from kasse_shipping.domain.fulfilment import Booking, Fulfilment, ShipmentStatus
from kasse_shipping.domain.rates import RateTable


@dataclass(frozen=True)
class PendingEvent:
    """An event to publish with a state change, under a deterministic id so a retry dedupes."""

    event: Event
    event_id: str


@dataclass
class Loaded:
    fulfilment: Fulfilment
    version: int | None  # None: not stored yet


class FulfilmentRepository(Protocol):
    async def load(self, order_id: str) -> Loaded: ...

    async def save(self, loaded: Loaded, events: Sequence[PendingEvent], consumed_event_id: str | None = None) -> bool:
        """Write state and events together. False: `consumed_event_id` was applied before (nothing
        written). Raises ConcurrencyError when someone else wrote first."""
        ...

    async def was_processed(self, order_id: str, event_id: str) -> bool: ...

    async def by_tracking_number(self, tracking_number: str) -> Fulfilment | None: ...

    async def order_id_of_return(self, return_id: str) -> str | None: ...

    async def due_for_scan(self, now: datetime, limit: int) -> list[str]:
        """Order ids whose shipment's next carrier scan is due."""
        ...


@dataclass(frozen=True)
class PublishedTable:
    revision: int
    fingerprint: str
    version: int


class RateTableRepository(Protocol):
    async def current(self, rate_table_id: str) -> PublishedTable | None: ...

    async def save(
        self,
        table: RateTable,
        revision: int,
        fingerprint: str,
        expected_version: int | None,
        events: Sequence[PendingEvent],
    ) -> None:
        """Raises ConcurrencyError when another instance published first."""
        ...


class Carrier(Protocol):
    """A parcel carrier. The simulated one (adapters.carrier) scans on a configurable schedule."""

    async def book(self, *, shipment_id: str, order_id: str, carrier: str, method_id: str) -> Booking:
        """Book the parcel; booking the same shipment again returns the same tracking number."""
        ...

    async def return_label(self, *, return_id: str, order_id: str) -> str:
        """A return label reference for the customer."""
        ...

    def next_scan(self, status: ShipmentStatus, since: datetime) -> datetime | None:
        """When the parcel that reached `status` at `since` will reach its next status (None: final)."""
        ...
