"""Recording deliveries as events arrive, and delivering them: per-endpoint workers, in order per key.

At least once: the consumer records a delivery per matching endpoint (and the event, for replay) in
Mongo before Kafka's offset is committed; workers deliver from Mongo, so a crash loses nothing (a
delivery under way when a replica died is sent again: at least once). Each endpoint has its own worker
with its own concurrency, so a slow or dead endpoint never holds up another one; one replica at a time
holds an endpoint's worker lease (on the endpoint document), so replicas share endpoints, not messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import socket
import time
import uuid
from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from standardwebhooks import Webhook

from kasse_common.envelope import derived_event_id
from kasse_contracts.events import WebhookEndpointDisabled
from kasse_webhooks.application.endpoints import Sequencer
from kasse_webhooks.application.ports import (
    Clock,
    Delivery,
    DeliveryRepository,
    EndpointRepository,
    EventLog,
    LoggedEvent,
    Sender,
)
from kasse_webhooks.domain.deliveries import AttemptResult, DeliveryStatus, RetrySchedule
from kasse_webhooks.domain.endpoints import Endpoint, EndpointStatus, url_host

log = logging.getLogger(__name__)

CONTENT_TYPE = "application/cloudevents+json"  # CloudEvents HTTP binding, structured content mode
USER_AGENT = "Kasse-Webhooks/0.1 (+https://www.standardwebhooks.com)"


@dataclass
class DeliveryStats:
    """Counters for /metrics."""

    recorded: int = 0
    attempts: Counter[str] = field(default_factory=Counter)  # succeeded | failed
    delivered: int = 0
    gave_up: int = 0
    endpoints_disabled: int = 0


class EndpointCache:
    """Endpoints in memory for matching events; reloaded after a change here and every `max_age`
    (another replica's changes)."""

    def __init__(self, repository: EndpointRepository, max_age: timedelta) -> None:
        self._repository = repository
        self._max_age = max_age.total_seconds()
        self._endpoints: dict[str, Endpoint] = {}
        self._loaded_at = float("-inf")
        self._invalidated_at = float("-inf")
        self._lock = asyncio.Lock()

    def invalidate(self) -> None:
        self._loaded_at = float("-inf")
        self._invalidated_at = time.monotonic()

    def loaded(self) -> list[Endpoint]:
        return list(self._endpoints.values())

    async def current(self) -> dict[str, Endpoint]:
        # One load at a time, and callers during a load wait for it: a caller must never get the
        # map from before a change it was told about (a new endpoint would miss events).
        async with self._lock:
            if time.monotonic() - self._loaded_at > self._max_age:
                started = time.monotonic()
                self._endpoints = {e.endpoint_id: e for e in await self._repository.all()}
                if self._invalidated_at <= started:
                    self._loaded_at = started
        return self._endpoints


class DeliveryRecorder:
    """The consumer's use case: keep the event for replay, record a delivery per matching endpoint."""

    def __init__(
        self,
        events: EventLog,
        deliveries: DeliveryRepository,
        cache: EndpointCache,
        clock: Clock,
        sequencer: Sequencer,
        stats: DeliveryStats,
        wake: WakeUp,
    ) -> None:
        self.events = events
        self.deliveries = deliveries
        self.cache = cache
        self.clock = clock
        self.sequencer = sequencer
        self.stats = stats
        self.wake = wake

    async def record(self, event: LoggedEvent) -> int:
        await self.events.add(event)
        endpoints = await self.cache.current()
        now = self.clock.now()
        queued = [
            Delivery.pending(
                # deterministic: a Kafka redelivery of the same record records nothing new
                delivery_id=derived_event_id("delivery", endpoint.endpoint_id, event.event_id),
                endpoint_id=endpoint.endpoint_id,
                event_id=event.event_id,
                event_type=event.event_type,
                key=event.subject,
                body=event.body,
                seq=self.sequencer.next(),
                now=now,
            )
            for endpoint in endpoints.values()
            if endpoint.wants(event.event_type)
        ]
        if queued:
            await self.deliveries.add_many(queued)
            self.stats.recorded += len(queued)
            for delivery in queued:
                self.wake(delivery.endpoint_id)
        return len(queued)


class WakeUp:
    """Lets the recorder and the admin API wake an endpoint's worker (set by the dispatcher)."""

    def __init__(self) -> None:
        self.target: Dispatcher | None = None

    def __call__(self, endpoint_id: str) -> None:
        if self.target is not None:
            self.target.wake(endpoint_id)


class Signer:
    """Standard Webhooks signatures, with the library (one `Webhook` per secret, kept)."""

    def __init__(self) -> None:
        self._hooks: dict[str, Webhook] = {}

    def headers(self, message_id: str, secrets: list[str], body: bytes) -> dict[str, str]:
        timestamp = datetime.now(UTC)  # the real time: receivers reject a timestamp off by minutes
        signatures = []
        for secret in secrets:
            hook = self._hooks.get(secret)
            if hook is None:
                hook = self._hooks[secret] = Webhook(secret)
            signatures.append(hook.sign(message_id, timestamp, body))
        return {
            "webhook-id": message_id,
            "webhook-timestamp": str(int(timestamp.timestamp())),
            "webhook-signature": " ".join(signatures),
            "content-type": CONTENT_TYPE,
            "user-agent": USER_AGENT,
        }


class EndpointWorker:
    """Delivers one endpoint's deliveries: the earliest pending one of each key, `concurrency` keys at
    a time; a key's next delivery waits until the previous one succeeded (order per key)."""

    def __init__(self, dispatcher: Dispatcher, endpoint_id: str) -> None:
        self.d = dispatcher
        self.endpoint_id = endpoint_id
        self.woken = asyncio.Event()
        self.in_flight: dict[str, asyncio.Task[None]] = {}  # key -> its attempt
        self.ready: deque[Delivery] = deque()  # due heads found by the last scan, not yet started

    async def run(self) -> None:
        d = self.d
        while True:
            self.woken.clear()
            timeout = d.poll_interval
            try:
                timeout = await self._round()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("delivery round failed", extra={"endpoint_id": self.endpoint_id})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.woken.wait(), timeout)

    async def _round(self) -> float:
        d = self.d
        endpoint = (await d.cache.current()).get(self.endpoint_id)
        if endpoint is None or endpoint.status is not EndpointStatus.ENABLED:
            self.ready.clear()
            return d.poll_interval
        wait = d.poll_interval
        if not self.ready:
            # One scan fills a buffer of due heads; completions launch from it without scanning again
            # (a claim refuses a delivery another replica finished meanwhile).
            # A key busy when the scan starts is skipped even if its attempt ends during the scan:
            # the scan may have read that delivery as still pending (the next round rescans).
            busy = set(self.in_flight)
            heads = await d.deliveries.pending_heads(self.endpoint_id, d.scan)
            now = d.clock.now()
            for delivery in heads:
                if delivery.key in busy or delivery.key in self.in_flight:
                    continue
                due = delivery.next_attempt_at
                if due > now:
                    wait = min(wait, (due - now).total_seconds())
                else:
                    self.ready.append(delivery)
        while self.ready and len(self.in_flight) < d.concurrency:
            delivery = self.ready.popleft()
            if delivery.key in self.in_flight:
                continue
            task = asyncio.create_task(self._attempt(endpoint, delivery))
            self.in_flight[delivery.key] = task
            task.add_done_callback(functools.partial(self._done, delivery.key))
        return max(wait, 0.001)

    def _done(self, key: str, _task: asyncio.Task[None]) -> None:
        self.in_flight.pop(key, None)
        self.woken.set()

    async def _attempt(self, endpoint: Endpoint, delivery: Delivery) -> None:
        try:
            await self.d.attempt(endpoint, delivery)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("delivery attempt failed to run", extra={"delivery_id": delivery.delivery_id})

    async def stop(self) -> None:
        for task in list(self.in_flight.values()):
            task.cancel()
        for task in list(self.in_flight.values()):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


class Dispatcher:
    """Runs one worker per enabled endpoint and keeps the set in step with the endpoints."""

    def __init__(
        self,
        endpoints: EndpointRepository,
        deliveries: DeliveryRepository,
        cache: EndpointCache,
        sender: Sender,
        clock: Clock,
        schedule: RetrySchedule,
        stats: DeliveryStats,
        *,
        concurrency: int,
        poll_interval: float,
        lease: timedelta,
        scan: int = 200,
    ) -> None:
        self.endpoints = endpoints
        self.deliveries = deliveries
        self.cache = cache
        self.sender = sender
        self.clock = clock
        self.schedule = schedule
        self.stats = stats
        self.concurrency = concurrency
        self.poll_interval = poll_interval
        self.lease = lease
        self.scan = scan
        self.signer = Signer()
        self.workers: dict[str, tuple[EndpointWorker, asyncio.Task[None]]] = {}
        self.changed = asyncio.Event()
        self.owner = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.leases: dict[str, float] = {}  # endpoint id -> (monotonic) when to renew its worker lease

    def wake(self, endpoint_id: str) -> None:
        worker = self.workers.get(endpoint_id)
        if worker is not None:
            worker[0].woken.set()
        else:
            self.changed.set()

    def endpoints_changed(self, endpoint_id: str) -> None:
        self.cache.invalidate()
        self.changed.set()
        self.wake(endpoint_id)

    def wake_all(self) -> None:
        """After the clock moved (tests): every worker looks again at what is due."""
        for worker, _ in self.workers.values():
            worker.woken.set()

    async def run(self) -> None:
        try:
            while True:
                self.changed.clear()
                try:
                    await self._sync_workers()
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("could not load the endpoints; retrying")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.changed.wait(), self.poll_interval)
        finally:
            await self.stop()

    async def _sync_workers(self) -> None:
        self.cache.invalidate()  # pick up other replicas' changes once per round
        enabled = {i for i, e in (await self.cache.current()).items() if e.status is EndpointStatus.ENABLED}
        wanted = set()
        now = time.monotonic()
        for endpoint_id in enabled:
            # Renew the endpoint's lease when a third of it is used up (one write per endpoint then).
            held = self.leases.get(endpoint_id)
            if held is not None and now < held:
                wanted.add(endpoint_id)
                continue
            clock_now = self.clock.now()
            if await self.endpoints.acquire_worker_lease(endpoint_id, self.owner, clock_now, clock_now + self.lease):
                self.leases[endpoint_id] = now + self.lease.total_seconds() / 3
                wanted.add(endpoint_id)
            else:
                self.leases.pop(endpoint_id, None)
        for endpoint_id in list(self.workers):
            if endpoint_id not in wanted:
                # Stop looking for work, but let attempts under way finish and be recorded: cancelling
                # one after its request went out would send that message again later.
                _, task = self.workers.pop(endpoint_id)
                task.cancel()
        for endpoint_id in wanted - set(self.workers):
            worker = EndpointWorker(self, endpoint_id)
            self.workers[endpoint_id] = (worker, asyncio.create_task(worker.run(), name=f"webhooks-{endpoint_id}"))

    async def stop(self) -> None:
        for worker, task in self.workers.values():
            task.cancel()
            await worker.stop()
        self.workers.clear()

    async def attempt(self, endpoint: Endpoint, delivery: Delivery) -> None:
        now = self.clock.now()
        body = delivery.body.encode()
        headers = self.signer.headers(delivery.event_id, endpoint.signing_secrets(now), body)
        result = await self.sender.send(endpoint.url, headers, body)
        now = self.clock.now()
        if result.succeeded:
            self.stats.attempts["succeeded"] += 1
            self.stats.delivered += 1
            await self.deliveries.record_attempt(delivery, result, DeliveryStatus.SUCCEEDED, None)
            return
        self.stats.attempts["failed"] += 1
        attempt = delivery.attempt_count + 1
        next_at = self.schedule.next_attempt_at(attempt, now, result.retry_after)
        if next_at is not None:
            await self.deliveries.record_attempt(delivery, result, DeliveryStatus.PENDING, next_at)
            log.info(
                "delivery attempt failed; retrying",
                extra={
                    "endpoint_id": endpoint.endpoint_id,
                    "delivery_id": delivery.delivery_id,
                    "attempt": attempt,
                    "status_code": result.status_code,
                    "error": result.error,
                    "next_attempt_at": next_at.isoformat(),
                },
            )
            return
        await self.deliveries.record_attempt(delivery, result, DeliveryStatus.FAILED, None)
        self.stats.gave_up += 1
        await self._disable(endpoint.endpoint_id, delivery, result, attempt)

    async def _disable(self, endpoint_id: str, delivery: Delivery, result: AttemptResult, attempts: int) -> None:
        current = await self.endpoints.get(endpoint_id)
        if current is None or current.status is EndpointStatus.DISABLED:
            return
        reason = (
            f"delivery {delivery.delivery_id} ({delivery.event_type}) failed {attempts} times over "
            f"{self.schedule.total()}; last: {result.status_code or result.error}"
        )
        now = self.clock.now()
        # Told in the same write that disables it; the id is derived from the endpoint and the version
        # it disables, so a second try of this very disable collapses into one event.
        event = WebhookEndpointDisabled(
            occurred_at=now,
            endpoint_id=endpoint_id,
            url_host=url_host(current.url),
            reason=reason[:1000],
            delivery_id=delivery.delivery_id,
            failed_event_type=delivery.event_type,
            attempts=attempts,
            last_status_code=result.status_code,
            last_error=result.error[:500],
            failing_since=delivery.created_at,
        )
        event_id = derived_event_id(WebhookEndpointDisabled.event_type, endpoint_id, str(current.version))
        await self.endpoints.save(current.disabled(now, reason), [(event_id, event)])
        self.stats.endpoints_disabled += 1
        # The operator is told: this log line, kasse_webhooks_endpoints_disabled_total on /metrics and
        # the KasseWebhookEndpointDisabled alert (Helm chart) that fires on it.
        log.error(
            "webhook endpoint disabled: it failed for the whole retry schedule",
            extra={"endpoint_id": endpoint_id, "url": current.url, "reason": reason},
        )
        self.endpoints_changed(endpoint_id)
