"""Use cases of the admin API: endpoints, secrets, the delivery log, resend and replay."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta

from kasse_common.envelope import derived_event_id
from kasse_common.errors import ConcurrencyError, Conflict, NotFound, Unprocessable
from kasse_contracts.base import Event
from kasse_contracts.events import WebhookEndpointEnabled
from kasse_webhooks.application.ports import (
    Clock,
    Delivery,
    DeliveryRepository,
    EndpointRepository,
    EventLog,
)
from kasse_webhooks.domain.deliveries import DeliveryStatus
from kasse_webhooks.domain.endpoints import (
    Endpoint,
    EndpointStatus,
    SigningSecret,
    event_type_matches,
    new_secret,
    url_host,
    validate_patterns,
    validate_url,
)

Resolver = Callable[[str], Awaitable[None]]  # raises Unprocessable when the URL points where it must not
MAX_REPLAY = 100_000


class Sequencer:
    """Increasing numbers in recording order: per endpoint and key, deliveries go out by it."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._last = 0

    def next(self) -> int:
        self._last = max(self._last + 1, int(self._clock.now().timestamp() * 1_000_000))
        return self._last


class EndpointService:
    def __init__(
        self,
        endpoints: EndpointRepository,
        deliveries: DeliveryRepository,
        events: EventLog,
        clock: Clock,
        sequencer: Sequencer,
        *,
        https_required: bool,
        check_target: Resolver,
        grace_period: timedelta,
        on_change: Callable[[str], None],
    ) -> None:
        self.endpoints = endpoints
        self.deliveries = deliveries
        self.events = events
        self.clock = clock
        self.sequencer = sequencer
        self.https_required = https_required
        self.check_target = check_target
        self.grace_period = grace_period
        self.on_change = on_change

    async def register(self, url: str, event_types: list[str], description: str) -> tuple[Endpoint, str]:
        url = validate_url(url, https_required=self.https_required)
        patterns = validate_patterns(event_types)
        await self.check_target(url)
        now = self.clock.now()
        secret = new_secret()
        endpoint = Endpoint(
            endpoint_id=f"ep_{uuid.uuid4().hex[:20]}",
            url=url,
            event_types=patterns,
            description=description,
            secrets=[SigningSecret(secret, now)],
            status=EndpointStatus.ENABLED,
            created_at=now,
        )
        await self.endpoints.add(endpoint)
        self.on_change(endpoint.endpoint_id)
        return endpoint, secret

    async def get(self, endpoint_id: str) -> Endpoint:
        endpoint = await self.endpoints.get(endpoint_id)
        if endpoint is None:
            raise NotFound(f"no endpoint {endpoint_id}")
        return endpoint

    async def _save(self, endpoint: Endpoint, events: Sequence[tuple[str, Event]] = ()) -> Endpoint:
        try:
            return await self.endpoints.save(endpoint, events)
        except ConcurrencyError as exc:
            raise Conflict(f"endpoint {endpoint.endpoint_id} changed meanwhile; try again") from exc

    async def all(self) -> list[Endpoint]:
        return await self.endpoints.all()

    async def delete(self, endpoint_id: str) -> None:
        if not await self.endpoints.delete(endpoint_id):
            raise NotFound(f"no endpoint {endpoint_id}")
        self.on_change(endpoint_id)

    async def rotate_secret(self, endpoint_id: str, grace_period: timedelta | None) -> tuple[Endpoint, str]:
        endpoint = await self.get(endpoint_id)
        rotated, secret = endpoint.rotated(
            self.clock.now(), self.grace_period if grace_period is None else grace_period
        )
        saved = await self.endpoints.save(rotated)
        self.on_change(endpoint_id)
        return saved, secret

    async def enable(self, endpoint_id: str) -> tuple[Endpoint, int]:
        endpoint = await self.get(endpoint_id)
        if endpoint.status is EndpointStatus.ENABLED:
            return endpoint, 0
        event = WebhookEndpointEnabled(
            occurred_at=self.clock.now(),
            endpoint_id=endpoint_id,
            url_host=url_host(endpoint.url),
            disabled_at=endpoint.disabled_at,
        )
        event_id = derived_event_id(WebhookEndpointEnabled.event_type, endpoint_id, str(endpoint.version))
        saved = await self._save(endpoint.enabled(), [(event_id, event)])
        requeued = await self.deliveries.requeue(endpoint_id, self.clock.now())
        self.on_change(endpoint_id)
        return saved, requeued

    async def deliveries_of(self, endpoint_id: str, status: DeliveryStatus | None, limit: int) -> list[Delivery]:
        await self.get(endpoint_id)
        return await self.deliveries.list(endpoint_id, status, limit)

    async def delivery(self, delivery_id: str) -> Delivery:
        delivery = await self.deliveries.get(delivery_id)
        if delivery is None:
            raise NotFound(f"no delivery {delivery_id}")
        return delivery

    async def resend(self, delivery_id: str) -> Delivery:
        """The same message again (same webhook-id, so a receiver can still deduplicate), as a new
        delivery with a fresh schedule, after anything already queued for its key."""
        original = await self.delivery(delivery_id)
        if original.status is DeliveryStatus.PENDING:
            raise Conflict(f"delivery {delivery_id} is still pending: it will be attempted anyway")
        await self.get(original.endpoint_id)
        now = self.clock.now()
        copy = Delivery.pending(
            delivery_id=f"dlv_{uuid.uuid4().hex[:24]}",
            endpoint_id=original.endpoint_id,
            event_id=original.event_id,
            event_type=original.event_type,
            key=original.key,
            body=original.body,
            seq=self.sequencer.next(),
            now=now,
            origin="resend",
        )
        await self.deliveries.add_many([copy])
        self.on_change(original.endpoint_id)
        return copy

    async def replay(
        self, endpoint_id: str, since: datetime | None, offsets: dict[tuple[str, int], int] | None
    ) -> tuple[str, int]:
        """Every logged event since a time (or from Kafka offsets) that the endpoint subscribes to,
        queued again in their original order: a subscriber that lost its database recovers."""
        if (since is None) == (offsets is None):
            raise Unprocessable("give exactly one of `since` and `from_offsets`", field="since")
        endpoint = await self.get(endpoint_id)
        events = await self.events.since(time=since, offsets=offsets, limit=MAX_REPLAY + 1)
        if len(events) > MAX_REPLAY:
            raise Unprocessable(f"more than {MAX_REPLAY} events: replay a shorter span", field="since")
        replay_id = f"rpl_{uuid.uuid4().hex[:16]}"
        now = self.clock.now()
        queued = [
            Delivery.pending(
                delivery_id=derived_event_id(endpoint_id, event.event_id, replay_id),
                endpoint_id=endpoint_id,
                event_id=event.event_id,
                event_type=event.event_type,
                key=event.subject,
                body=event.body,
                seq=self.sequencer.next(),
                now=now,
                origin="replay",
            )
            for event in events
            if event_type_matches(endpoint.event_types, event.event_type)
        ]
        if queued:
            await self.deliveries.add_many(queued)
            self.on_change(endpoint_id)
        return replay_id, len(queued)
