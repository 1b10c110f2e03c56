"""What the use cases need from the outside world (Mongo, HTTP, time)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from kasse_contracts.base import Event
from kasse_webhooks.domain.deliveries import AttemptResult, DeliveryStatus
from kasse_webhooks.domain.endpoints import Endpoint


class Clock(Protocol):
    """Scheduling time (tests control it). Signatures always carry the real time: receivers check it."""

    def now(self) -> datetime: ...


@dataclass(frozen=True)
class LoggedEvent:
    """An event as received, kept for replay; `body` is the CloudEvent in JSON structured mode."""

    event_id: str
    event_type: str
    subject: str
    time: datetime
    topic: str
    partition: int
    offset: int
    body: str


@dataclass
class Delivery:
    delivery_id: str
    endpoint_id: str
    event_id: str
    event_type: str
    key: str  # the CloudEvents subject (the order): deliveries of one key go out in order
    seq: int  # order of recording; per endpoint and key, lower goes first
    body: str
    status: DeliveryStatus
    created_at: datetime
    next_attempt_at: datetime
    origin: str = "event"  # event | resend | replay
    attempt_count: int = 0
    attempts: list[dict[str, Any]] = field(default_factory=list)
    lease_until: datetime | None = None
    delivered_at: datetime | None = None

    @classmethod
    def pending(
        cls,
        *,
        delivery_id: str,
        endpoint_id: str,
        event_id: str,
        event_type: str,
        key: str,
        body: str,
        seq: int,
        now: datetime,
        origin: str = "event",
    ) -> Delivery:
        """A new message to an endpoint, due at once (recorded event, resend or replay)."""
        return cls(
            delivery_id=delivery_id,
            endpoint_id=endpoint_id,
            event_id=event_id,
            event_type=event_type,
            key=key,
            seq=seq,
            body=body,
            status=DeliveryStatus.PENDING,
            created_at=now,
            next_attempt_at=now,
            origin=origin,
        )


class EndpointRepository(Protocol):
    async def add(self, endpoint: Endpoint) -> None: ...
    async def get(self, endpoint_id: str) -> Endpoint | None: ...
    async def all(self) -> list[Endpoint]: ...
    async def save(self, endpoint: Endpoint, events: Sequence[tuple[str, Event]] = ()) -> Endpoint:
        """Write at `endpoint.version` with `events` ((event id, payload)) in its outbox, in one write;
        raises ConcurrencyError if it changed meanwhile."""
        ...

    async def delete(self, endpoint_id: str) -> bool: ...
    async def acquire_worker_lease(self, endpoint_id: str, owner: str, now: datetime, until: datetime) -> bool:
        """Take or renew the right to deliver this endpoint's messages (one replica at a time)."""
        ...


class EventLog(Protocol):
    async def add(self, event: LoggedEvent) -> None:
        """Idempotent on the event id."""
        ...

    async def since(
        self, *, time: datetime | None, offsets: dict[tuple[str, int], int] | None, limit: int
    ) -> list[LoggedEvent]: ...
    async def purge_before(self, time: datetime) -> int: ...


class DeliveryRepository(Protocol):
    async def add_many(self, deliveries: list[Delivery]) -> None:
        """Idempotent on the delivery id (a redelivered Kafka record records nothing twice)."""
        ...

    async def get(self, delivery_id: str) -> Delivery | None: ...
    async def pending_heads(self, endpoint_id: str, scan: int) -> list[Delivery]:
        """The earliest pending delivery of each key of the endpoint (scanning at most `scan`)."""
        ...

    async def record_attempt(
        self,
        delivery: Delivery,
        result: AttemptResult,
        status: DeliveryStatus,
        next_attempt_at: datetime | None,
    ) -> None: ...
    async def list(self, endpoint_id: str, status: DeliveryStatus | None, limit: int) -> list[Delivery]: ...
    async def requeue(self, endpoint_id: str, now: datetime) -> int:
        """Pending and failed deliveries of a re-enabled endpoint: due now, with a fresh schedule."""
        ...


class Sender(Protocol):
    async def send(self, url: str, headers: dict[str, str], body: bytes) -> AttemptResult: ...
