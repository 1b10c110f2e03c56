"""The service runtime: one object that owns a service's connections and background work.

A service's `main.create_app()` builds a `ServiceRuntime`, hands its pieces (document stores, the
consumer, the encoder) to its adapters and use cases, registers its routes and handlers, and asks
the runtime for the FastAPI app. Nothing connects before the app's lifespan starts.

Lifespan order. Start: indexes and topics, the broker (producer, then subscribers), the outbox relay.
Stop (graceful): stop consuming and let in-flight handlers finish (their offsets are committed),
drain the outbox relay, close the producer, close Mongo, flush telemetry.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any

import uvicorn
from aiokafka import TopicPartition
from fastapi import APIRouter, Depends, FastAPI
from fastapi.responses import JSONResponse, PlainTextResponse
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.sdk.trace.export import SpanExporter
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from kasse_common.dead_letters import DeadLetters
from kasse_common.due import rebuild_soon
from kasse_common.envelope import OutgoingRecord, encode
from kasse_common.errors import NotFound
from kasse_common.http import (
    OWN_ERROR_BODY,
    BodySizeLimit,
    bearer_guard,
    document_problems,
    install_problem_handlers,
    problem_responses,
    readiness_body,
    trust_proxies,
)
from kasse_common.logs import configure_logging
from kasse_common.messaging import EventConsumer, EventPublisher, create_broker
from kasse_common.mongo import StoreCommands, create_mongo_client
from kasse_common.outbox import OutboxRelay
from kasse_common.parking import COLLECTION as PARKED_EVENTS
from kasse_common.parking import ParkedEvents
from kasse_common.persistence import DocumentStore, StandaloneEvents, ensure_outbox_indexes
from kasse_common.retry import backoff_delay, is_transient
from kasse_common.settings import ServiceSettings
from kasse_common.telemetry import Telemetry, setup_telemetry
from kasse_common.topics_admin import ensure_topics
from kasse_contracts.base import Event

log = logging.getLogger(__name__)

Hook = Callable[[], Awaitable[None]]


# At shutdown, a subscriber whose in-flight handler has not returned by then is cancelled (force_stop).
SUBSCRIBER_STOP_TIMEOUT_S = 5.0

# A periodic job's round longer than this hangs (no job of ours takes minutes): cancelled, retried.
ROUND_TIMEOUT_S = 600.0


async def run_every(
    interval_s: float, job: Hook, *, name: str, wait_first: bool = False, round_timeout_s: float = ROUND_TIMEOUT_S
) -> None:
    """The loop of `ServiceRuntime.every` (see there)."""
    me = asyncio.current_task()
    failures = 0
    if wait_first:
        await asyncio.sleep(interval_s)
    while True:
        extra = 0.0
        try:
            await asyncio.wait_for(job(), round_timeout_s)
            failures = 0
        except asyncio.CancelledError:
            raise
        except TimeoutError:
            failures += 1
            log.error("%s: round still running after %.0f s; cancelled, the next round retries", name, round_timeout_s)
        except Exception as exc:
            failures += 1
            if is_transient(exc):
                extra = backoff_delay(failures, initial_s=max(interval_s, 0.5), max_s=60.0)
                log.warning("%s: round failed (transient), retrying", name, extra={"error": repr(exc)[:300]})
            else:
                log.exception("%s: round failed; the next round retries", name)
        if me is not None and me.cancelling():
            raise asyncio.CancelledError
        await asyncio.sleep(interval_s + extra)


def _cancelled_here(loop: str) -> None:
    """A background loop caught CancelledError: re-raise it when the loop itself is being cancelled (stop);
    otherwise a client library leaked its own cancellation (aiokafka's consumer.stop() during a broker outage
    can re-raise that of its cancelled coordination task) and the loop carries on — before, it ended, and
    the ended loop made /healthz fail (test_broker_restart failed so once under load)."""
    me = asyncio.current_task()
    if me is None or me.cancelling():
        raise asyncio.CancelledError
    log.warning("%s: a cancellation not meant for this loop; carrying on", loop, exc_info=True)


class ServiceRuntime:
    def __init__(
        self,
        settings: ServiceSettings,
        *,
        telemetry: Telemetry | None = None,
        span_exporter: SpanExporter | None = None,
        configure_logs: bool = True,
    ) -> None:
        self.settings = settings
        self.service = settings.service_name
        if configure_logs:
            configure_logging(self.service, settings.log_level, settings.log_json)
        if settings.is_development:
            log.warning(
                "development profile: not for production; development secrets in use",
                extra={"service": self.service, "dev_secrets": settings.dev_secrets_in_use()},
            )
        self.telemetry = telemetry or setup_telemetry(self.service, span_exporter=span_exporter)
        self.store_commands = StoreCommands()
        self.mongo = create_mongo_client(settings, self.store_commands)
        self.db = self.mongo[settings.database_name]
        self.broker = create_broker(
            settings, self.telemetry.tracer_provider, self.telemetry.meter(f"kasse.{self.service}")
        )
        self.publisher = EventPublisher(self.broker, settings)
        self.consumer = EventConsumer(self.broker, settings, self.publisher)
        self.consumer.parking = ParkedEvents(self.db[PARKED_EVENTS])
        self.dead_letters = DeadLetters(settings, self.db)
        self.relay = OutboxRelay(
            self.publisher,
            poll_interval_s=settings.outbox_poll_interval_s,
            batch_size=settings.outbox_batch_size,
            lease_s=settings.outbox_lease_s,
        )
        # Another process of this database died for good (its relay stopped beating): it may have died
        # between a commit and its DueWork marker, so this process's DueWorks rebuild at their next round.
        database = self.db.name
        self.relay.on_relay_died = lambda: rebuild_soon(database)
        self.standalone_events = StandaloneEvents(
            self.db[StandaloneEvents.COLLECTION], self._hint(StandaloneEvents.COLLECTION), lease=self.relay.lease_fields
        )
        self.relay.watch(self.standalone_events.collection, delete_when_drained=True)
        self._stores: list[DocumentStore] = []
        self._unparking: set[asyncio.Task[None]] = set()
        self._produced_topics: set[str] = set()
        self._on_startup: list[Hook] = []
        self._readiness_checks: list[tuple[str, Callable[[], str]]] = []
        self._on_shutdown: list[Hook] = []
        self._background: list[Callable[[], Coroutine[Any, Any, None]]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self.started = asyncio.Event()
        self._consumer_paused = False
        # One pause or resume at a time: a resume arriving while a pause still stops the lanes would
        # start a subscriber that is being stopped.
        self._pause_switch = asyncio.Lock()
        self._pausables: list[tuple[Hook, Hook]] = []
        self.consumer_restarts = 0
        self.dead_letters_auto_redriven = 0
        self._consumer_dead_since: float | None = None
        self._stall_restarts: dict[int, StallRestarts] = {}  # by id(subscriber), until it consumes again
        self._group_marks: dict[int, GroupMark] = {}  # by id(Kafka client), see judge_subscribers
        self._stall_window_from: dict[int, float] = {}  # by id(Kafka client), see judge_subscribers

    # -- wiring -------------------------------------------------------------------------------
    def document_store(self, collection: str, *, trace_per_document: bool = False) -> DocumentStore:
        """A store whose documents carry an outbox; the relay watches it.

        trace_per_document: every event of a document continues the trace the document was created in,
        also when written from outside it (a Stripe webhook, a carrier timer): one trace per order.
        """
        store = DocumentStore(
            self.db[collection],
            on_commit=self._hint(collection),
            lease=self.relay.lease_fields,
            on_created=self.apply_parked_soon,
        )
        self.relay.watch(store.collection, trace_per_document=trace_per_document)
        self._stores.append(store)
        return store

    def apply_parked_soon(self, aggregate_id: Any) -> None:
        """An aggregate was just created: apply the events parked for it now, not a retry round later.

        Every `document_store` calls it after an insert; a service that creates aggregates some other
        way calls it itself. It runs beside the caller (a request answers without waiting for it); a
        failure is left to the periodic round.
        """
        if self.consumer.parking is None or not self.consumer.topics:
            return  # this service consumes nothing, so nothing is parked
        task = asyncio.create_task(self._apply_parked(str(aggregate_id)), name=f"unpark-{aggregate_id}")
        self._unparking.add(task)
        task.add_done_callback(self._unparking.discard)

    async def _apply_parked(self, aggregate_id: str) -> None:
        try:
            await self.consumer.unpark(aggregate_id)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.info("parked events not applied yet; the next round tries", extra={"error": repr(exc)[:300]})

    def _hint(self, collection: str) -> Callable[[Sequence[Any]], None]:
        def hint(doc_ids: Sequence[Any]) -> None:
            self.relay.hint(collection, doc_ids)

        return hint

    def produces(self, *events: type[Event]) -> None:
        """Declare produced event types so their topics exist before the first publish."""
        self._produced_topics.update(e.topic for e in events)

    def encode(self, event: Event, *, event_id: str | None = None, time: datetime | None = None) -> OutgoingRecord:
        return encode(event, service=self.service, event_id=event_id, time=time)

    def on_startup(self, hook: Hook) -> None:
        self._on_startup.append(hook)

    def on_shutdown(self, hook: Hook) -> None:
        self._on_shutdown.append(hook)

    def readiness_check(self, name: str, check: Callable[[], str]) -> None:
        """An extra `/readyz` check: `check()` returns "ok" when ready, else why not (e.g. catching up)."""
        self._readiness_checks.append((name, check))

    def background(self, loop: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """A coroutine run for the app's lifetime (cancelled at shutdown); periodic jobs use `every`."""
        self._background.append(loop)

    def every(
        self,
        interval_s: float,
        job: Hook,
        *,
        name: str,
        wait_first: bool = False,
        round_timeout_s: float = ROUND_TIMEOUT_S,
    ) -> None:
        """Run `job` every `interval_s` for the app's lifetime, the one shape of every periodic job.

        A failed round is logged and the loop lives on; while the store or broker is away
        (`is_transient`) the pause grows with jittered backoff (up to a minute more) so a dozen
        jobs do not hammer a recovering store. A round still running after `round_timeout_s` (a
        store call that never answers) is cancelled and the next round retries. Cancelled at
        shutdown, also when PyMongo swallowed the cancellation inside one of its calls (observed: a
        stop that hung). A loop that ends anyway fails liveness (`liveness`).
        """

        async def periodic() -> None:
            await run_every(interval_s, job, name=name, wait_first=wait_first, round_timeout_s=round_timeout_s)

        periodic.__name__ = periodic.__qualname__ = name
        self.background(periodic)

    # -- lifecycle ----------------------------------------------------------------------------
    async def start(self) -> None:
        for store in self._stores:
            await ensure_outbox_indexes(store.collection)
        await ensure_outbox_indexes(self.standalone_events.collection)
        topics = set(self._produced_topics) | set(self.consumer.topics)
        physical = [self.settings.topic(t) for t in sorted(topics)]
        if self.consumer.topics:
            physical.append(self.consumer.dead_letter_topic)
        await ensure_topics(self.settings, physical)
        for hook in self._on_startup:
            await hook()
        self.consumer.attach()
        await self.broker.start()
        self.relay.start()
        if self.broker.subscribers:
            self._tasks.append(asyncio.create_task(self._watch_consumers(), name="consumer-watchdog"))
            self._tasks.append(asyncio.create_task(self._retry_parked(), name="parked-events"))
            self._tasks.append(asyncio.create_task(self._measure_dead_letters(), name="dead-letter-metrics"))
        for loop in self._background:
            self._tasks.append(asyncio.create_task(loop(), name=getattr(loop, "__name__", "background")))
        self.started.set()
        log.info("service started", extra={"service": self.service})

    async def stop(self) -> None:
        log.info("service stopping", extra={"service": self.service})
        for task in self._unparking:
            task.cancel()
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            # Bounded: a job that swallows its cancellation (PyMongo can) must not hang shutdown.
            _, stuck = await asyncio.wait(self._tasks, timeout=2)
            for task in stuck:
                log.error(
                    "background job ignored cancellation; shutting down without it", extra={"job": task.get_name()}
                )
        self._tasks.clear()
        # 1. Stop consuming; in-flight handlers finish and their offsets are committed. Bounded: a handler
        # that never returns is cancelled (its record comes again), so SIGTERM ends within the grace period.
        results = await asyncio.gather(
            *(self._stop_subscriber(subscriber, SUBSCRIBER_STOP_TIMEOUT_S) for subscriber in self.broker.subscribers),
            return_exceptions=True,
        )
        for result in results:
            if isinstance(result, BaseException):
                log.error("subscriber did not stop cleanly", extra={"error": repr(result)[:300]})
        for hook in self._on_shutdown:
            await hook()
        # 2. Publish what the last handlers and requests wrote (bounded: the rest goes out at the next
        # start; Kubernetes' grace period is 30 s and everything here must fit in it).
        await self.relay.stop(drain_timeout_s=3.0)
        # 3. Close the producer, the database and telemetry.
        await self.broker.stop()
        await self.mongo.close()
        self.telemetry.tracer_provider.force_flush()
        self.started.clear()

    async def _stop_subscriber(self, subscriber: Any, timeout_s: float) -> None:
        """Its records in hand finish (each bounded by `timeout_s`, then cancelled) and are committed; then it stops."""
        await self.consumer.settle(getattr(subscriber, "consumer", None), timeout_s)
        await force_stop(subscriber, timeout_s=timeout_s)

    @property
    def consumer_paused(self) -> bool:
        return self._consumer_paused

    def pausable(self, pause: Hook, resume: Hook) -> None:
        """Register a consumer of the service's own (not the kit's) for the pause/resume switch."""
        self._pausables.append((pause, resume))

    async def pause_consumer(self) -> None:
        """Leave the consumer group (in-flight records finish; offsets stay committed)."""
        async with self._pause_switch:
            if self._consumer_paused:
                return
            self._consumer_paused = True

            async def stop(subscriber: Any) -> None:
                await self.consumer.settle(getattr(subscriber, "consumer", None), SUBSCRIBER_STOP_TIMEOUT_S)
                await subscriber.stop()

            # Lanes side by side: one after the other, a service with five lanes kept an operator's
            # request waiting for five settles and group leaves (over 10 s under load).
            await asyncio.gather(*(stop(subscriber) for subscriber in self.broker.subscribers))
            await asyncio.gather(*(pause() for pause, _ in self._pausables))

    async def resume_consumer(self) -> None:
        async with self._pause_switch:
            if not self._consumer_paused:
                return
            await asyncio.gather(*(subscriber.start() for subscriber in self.broker.subscribers))
            await asyncio.gather(*(resume() for _, resume in self._pausables))
            self._consumer_paused = False

    def stopped_consumers(self) -> list[str]:
        """Subscribers that should consume but do not: their consume loop ended or their client closed.

        FastStream restarts a consume loop that raised, but not one that returned: aiokafka's
        ConsumerStoppedError (its client closed itself, e.g. after a fatal coordinator error during a
        broker restart) ends it silently, and the service went on answering /readyz 200 while its
        group stayed Empty (issue 12).
        """
        if not self.started.is_set() or self._consumer_paused:
            return []
        stopped = []
        for subscriber in self.broker.subscribers:
            client = getattr(subscriber, "consumer", None)
            tasks = getattr(subscriber, "tasks", [])
            if client is None or getattr(client, "_closed", False) or not tasks or all(t.done() for t in tasks):
                stopped.append(", ".join(str(t) for t in getattr(subscriber, "topic_names", ())) or repr(subscriber))
        return stopped

    async def _watch_consumers(self) -> None:
        """Restart a subscriber that stopped consuming; liveness fails if that does not help."""
        interval = self.settings.consumer_watchdog_interval_s
        while True:
            await asyncio.sleep(interval)
            try:
                await self._restart_stopped_consumers()
            except asyncio.CancelledError:
                _cancelled_here("consumer watchdog")
            except Exception:
                log.exception("consumer watchdog round failed")

    async def _restart_stopped_consumers(self) -> None:
        stopped = self.stopped_consumers()
        verdicts = await judge_subscribers(
            self.broker.subscribers,
            last_activity(self.consumer.last_record_at, self.consumer.last_progress_at),
            self.settings.consumer_stall_s,
            lambda: self.broker.ping(timeout=2.0),
            self._group_marks,
            self._stall_window_from,
        )
        stalled = [sub for sub in self.broker.subscribers if verdicts.get(id(sub)) is Verdict.STALLED]
        self._note_progress(verdicts)
        if not stopped:
            self._consumer_dead_since = None
        elif self._consumer_dead_since is None:
            self._consumer_dead_since = time.monotonic()
        if not stopped and not stalled:
            return
        if stopped:
            log.error("consumer stopped consuming; restarting it", extra={"topics": stopped})
        for subscriber in list(self.broker.subscribers):
            client = getattr(subscriber, "consumer", None)
            tasks = getattr(subscriber, "tasks", [])
            alive = client is not None and not getattr(client, "_closed", False) and any(not t.done() for t in tasks)
            if alive and subscriber not in stalled:
                continue
            if alive:
                attempt = self._stall_restarts.setdefault(id(subscriber), StallRestarts())
                attempt.count += 1
                attempt.restarted_at = time.monotonic()
                log.error(
                    "consumer stalled: records wait for it but none was handed over; restarting it",
                    extra={
                        "topics": [str(t) for t in getattr(subscriber, "topic_names", ())],
                        "partitions": len(client.assignment()) if client is not None else 0,
                        "restarts_without_progress": attempt.count,
                    },
                )
            self.consumer_restarts += 1
            # A stalled one has made no progress for a whole window already: waiting long for it is pointless.
            await self._stop_subscriber(subscriber, min(10.0, self.settings.consumer_stall_s))
            try:
                await subscriber.start()
            except Exception as exc:  # the broker is still away: the next round tries again
                log.warning("restarting the subscriber failed", extra={"error": repr(exc)[:300]})
            else:
                new_client = getattr(subscriber, "consumer", None)
                if new_client is not None:  # a fresh client gets the full stall window
                    self._stall_window_from[id(new_client)] = time.monotonic()

    def _note_progress(self, verdicts: dict[int, Verdict]) -> None:
        """A stalled subscriber's restarts count until a record's handling returns or it is found caught up."""
        for subscriber in self.broker.subscribers:
            attempt = self._stall_restarts.get(id(subscriber))
            if attempt is None:
                continue
            client = getattr(subscriber, "consumer", None)
            done = self.consumer.last_done_at.get(id(client)) if client is not None else None
            handled = done is not None and done > attempt.restarted_at
            if handled or verdicts.get(id(subscriber)) is Verdict.CAUGHT_UP:
                log.info("a restarted consumer consumes again", extra={"restarts": attempt.count})
                del self._stall_restarts[id(subscriber)]

    def stalled_beyond_restarts(self) -> list[str]:
        """Subscribers restarted `consumer_max_stall_restarts` times for stalling without consuming since."""
        limit = self.settings.consumer_max_stall_restarts
        return [
            ", ".join(str(t) for t in getattr(sub, "topic_names", ())) or repr(sub)
            for sub in self.broker.subscribers
            if (attempt := self._stall_restarts.get(id(sub))) is not None and attempt.count >= limit
        ]

    async def _retry_parked(self) -> None:
        while True:
            await asyncio.sleep(self.settings.parking_retry_interval_s)
            try:
                await self.consumer.unpark()
            except asyncio.CancelledError:
                _cancelled_here("parked events")
            except Exception as exc:
                log.warning("retrying parked events failed", extra={"error": repr(exc)[:300]})

    async def _measure_dead_letters(self) -> None:
        """Count the dead letters (metrics) and redrive those set aside only for an outage that is over."""
        after_s = self.settings.dead_letter_auto_redrive_after_s
        while True:
            try:
                checks = await self.readiness()
                if after_s > 0 and checks.get("mongo") == checks.get("kafka") == "ok":
                    refs = await self.dead_letters.redrive_transient(older_than_s=after_s)
                    if refs:
                        self.dead_letters_auto_redriven += len(refs)
                        log.warning("dead letters of an outage redriven", extra={"refs": refs})
                await self.dead_letters.measure()
            except asyncio.CancelledError:
                _cancelled_here("dead-letter metrics")
            except Exception as exc:
                log.warning("measuring dead letters failed", extra={"error": repr(exc)[:300]})
            await asyncio.sleep(self.settings.dead_letter_check_interval_s)

    def ended_background(self) -> list[str]:
        """Background loops that ended while the service runs (they should run until `stop`)."""
        return [task.get_name() for task in self._tasks if task.done()]

    def liveness(self) -> dict[str, str]:
        """Alive unless restarting cannot make a consumer consume, or a background loop ended.

        Dead: a consumer stayed stopped for `consumer_dead_grace_s` despite restarts; or one was restarted
        `consumer_max_stall_restarts` times for stalling with no record handled since (the watchdog
        keeps restarting it: alive again once it consumes); or a background loop (a periodic job, the
        watchdog) ended: nothing restarts it but a new process, so Kubernetes restarts the pod.
        """
        ended = self.ended_background()
        if ended:
            return {"status": "dead", "background": f"ended: {', '.join(ended)}"}
        since = self._consumer_dead_since
        if since is not None and not self.stopped_consumers():
            self._consumer_dead_since = since = None  # a restart worked since the watchdog looked
        if since is not None and time.monotonic() - since >= self.settings.consumer_dead_grace_s:
            return {"status": "dead", "consumer": f"stopped for {time.monotonic() - since:.0f} s"}
        stuck = self.stalled_beyond_restarts()
        if stuck and self.started.is_set() and not self._consumer_paused:
            return {"status": "dead", "consumer": f"stalled despite restarts: {'; '.join(stuck)}"}
        return {"status": "alive"}

    async def readiness(self) -> dict[str, str]:
        checks: dict[str, str] = {}
        try:
            await asyncio.wait_for(self.mongo.admin.command("ping"), 2.0)
            checks["mongo"] = "ok"
        except Exception as exc:
            checks["mongo"] = f"unreachable: {type(exc).__name__}"
        try:
            ok = await self.broker.ping(timeout=2.0)
            checks["kafka"] = "ok" if ok else "unreachable"
        except Exception as exc:
            checks["kafka"] = f"unreachable: {type(exc).__name__}"
        for name, check in self._readiness_checks:
            checks[name] = check()
        stopped = self.stopped_consumers()
        stuck = self.stalled_beyond_restarts() if self.started.is_set() and not self._consumer_paused else []
        if stopped:
            checks["consumer"] = f"stopped: {'; '.join(stopped)}"
        elif stuck:
            checks["consumer"] = f"stalled despite restarts: {'; '.join(stuck)}"
        return checks

    # -- HTTP ---------------------------------------------------------------------------------
    def create_app(
        self,
        *,
        title: str,
        description: str = "",
        routers: Sequence[APIRouter] = (),
        version: str = "0.1.0",
    ) -> FastAPI:
        runtime = self

        @asynccontextmanager
        async def lifespan(app: FastAPI) -> AsyncIterator[None]:
            await runtime.start()
            try:
                yield
            finally:
                await runtime.stop()

        app = FastAPI(title=title, description=description, version=version, lifespan=lifespan)
        app.state.runtime = self
        install_problem_handlers(app)
        document_problems(app)
        app.add_middleware(BodySizeLimit, max_bytes=self.settings.max_body_bytes)
        trust_proxies(app, self.settings.trusted_proxy_list)

        not_ready: dict[int | str, dict[str, Any]] = {
            503: {
                "description": "Not alive or not ready: the body says which check fails",
                "content": {"application/json": {"schema": {"type": "object"}}},
                OWN_ERROR_BODY: True,
            }
        }

        @app.get(
            "/healthz",
            tags=["operations"],
            summary="Liveness: the process answers and consumes",
            responses=not_ready,
        )
        async def healthz() -> JSONResponse:
            body = runtime.liveness()
            return JSONResponse(body, status_code=200 if body["status"] == "alive" else 503)

        @app.get("/readyz", tags=["operations"], summary="Readiness: Kafka and Mongo reachable", responses=not_ready)
        async def readyz() -> JSONResponse:
            checks = await runtime.readiness()
            body = readiness_body(checks)
            return JSONResponse(body, status_code=200 if body["status"] == "ready" else 503)

        registry = self.prometheus_registry()

        @app.get("/metrics", tags=["operations"], summary="Prometheus metrics", include_in_schema=False)
        async def prometheus_metrics() -> PlainTextResponse:
            return PlainTextResponse(generate_latest(registry).decode(), media_type="text/plain; version=0.0.4")

        admin_token = getattr(self.settings, "admin_token", None)
        guard = bearer_guard(admin_token, setting=f"KASSE_{self.service.upper()}_ADMIN_TOKEN")
        operations = APIRouter(prefix="/v1/admin/consumer", tags=["operations"], dependencies=[Depends(guard)])

        @operations.get("", summary="Is this instance consuming events?")
        async def consumer_state() -> dict[str, Any]:
            return {"paused": runtime.consumer_paused, "topics": runtime.consumer.topics}

        @operations.post("/pause", summary="Stop consuming (an operator's fault switch; lag builds up)")
        async def pause_consumer() -> dict[str, Any]:
            await runtime.pause_consumer()
            return {"paused": True, "topics": runtime.consumer.topics}

        @operations.post("/resume", summary="Consume again from the committed offsets")
        async def resume_consumer() -> dict[str, Any]:
            await runtime.resume_consumer()
            return {"paused": False, "topics": runtime.consumer.topics}

        dead_letters = APIRouter(prefix="/v1/admin/dead-letters", tags=["operations"], dependencies=[Depends(guard)])

        @dead_letters.get("", summary="This service's dead letters (newest last), redriven or not")
        async def list_dead_letters() -> list[dict[str, Any]]:
            return await runtime.dead_letters.list()

        unknown_ref = problem_responses(404, descriptions={404: "No dead letter with this ref"})

        @dead_letters.get(
            "/{ref}", summary="One dead letter with its record and why it was set aside", responses=unknown_ref
        )
        async def show_dead_letter(ref: str) -> dict[str, Any]:
            found = await runtime.dead_letters.show(ref)
            if found is None:
                raise NotFound(f"no dead letter {ref} (refs are partition:offset, see the list)")
            return found

        @dead_letters.post(
            "/{ref}/redrive", summary="Publish it again to its topic, once (idempotent)", responses=unknown_ref
        )
        async def redrive_dead_letter(ref: str) -> dict[str, Any]:
            outcome = await runtime.dead_letters.redrive(ref)
            if outcome["outcome"] == "not_found":
                raise NotFound(f"no dead letter {ref}")
            return outcome

        if self.consumer.topics or self._pausables:
            app.include_router(operations)
        if self.consumer.topics:
            app.include_router(dead_letters)
        for router in routers:
            app.include_router(router)
        FastAPIInstrumentor.instrument_app(
            app, tracer_provider=self.telemetry.tracer_provider, excluded_urls="healthz,readyz,metrics"
        )
        return app

    def prometheus_registry(self) -> CollectorRegistry:
        if getattr(self, "_registry", None) is None:
            self._registry = CollectorRegistry()
            self._registry.register(_RuntimeCollector(self))
        return self._registry


def serve(app: FastAPI, settings: ServiceSettings) -> None:
    """Run a service's app with uvicorn on its host and port (every service's `run()`).

    uvicorn's own proxy-header handling is off: it would believe X-Forwarded-For from 127.0.0.1, i.e.
    from any local client. The app applies KASSE_TRUSTED_PROXIES itself (see create_app).
    """
    uvicorn.run(
        app,
        host=settings.http_host,
        port=settings.http_port,
        log_config=None,
        proxy_headers=False,
        forwarded_allow_ips="",
    )


class _RuntimeCollector:
    def __init__(self, runtime: ServiceRuntime) -> None:
        self.runtime = runtime

    def collect(self) -> Any:
        labels = ["service"]
        svc = [self.runtime.service]
        consumer, relay = self.runtime.consumer, self.runtime.relay
        for name, doc, value in (
            ("kasse_events_consumed", "Events applied by this service's handlers", consumer.processed),
            ("kasse_events_dead_lettered", "Records sent to the dead-letter topic", consumer.dead_lettered),
            (
                "kasse_consumer_transient_failures",
                "Deliveries that failed transiently (store/broker away, write race): partition paused, retried",
                consumer.transient_failures,
            ),
            ("kasse_outbox_published", "Events published by the outbox relay", relay.published),
            ("kasse_events_parked", "Events parked until their aggregate exists", consumer.parked),
            ("kasse_events_unparked", "Parked events applied once their aggregate existed", consumer.unparked),
            (
                "kasse_consumer_restarts",
                "Times the watchdog restarted a consumer that had stopped consuming",
                self.runtime.consumer_restarts,
            ),
            (
                "kasse_dead_letters_auto_redriven",
                "Dead letters of a store/broker outage the service redrove itself once it was over",
                self.runtime.dead_letters_auto_redriven,
            ),
            (
                "kasse_outbox_publish_failures",
                "Outbox documents whose events the broker did not take (retried after a backoff)",
                relay.publish_failures,
            ),
        ):
            family = CounterMetricFamily(name, doc, labels=labels)
            family.add_metric(svc, value)
            yield family
        runtime_dead_letters = self.runtime.dead_letters
        per_collection = ["service", "collection"]
        gauges: list[tuple[str, str, dict[str, int] | dict[str, float]]] = [
            ("kasse_outbox_backlog", "Documents with unpublished events", relay.backlog),
            (
                "kasse_outbox_oldest_event_age_seconds",
                "Age of the oldest unpublished event (0 when none)",
                relay.oldest_age_s,
            ),
            (
                "kasse_dead_letters_waiting",
                "Dead letters not redriven yet (measured every minute)",
                {"dlq": runtime_dead_letters.waiting},
            ),
            (
                "kasse_dead_letters_oldest_age_seconds",
                "Age of the oldest dead letter not redriven yet (0 when none)",
                {"dlq": runtime_dead_letters.oldest_age_s},
            ),
            (
                "kasse_dead_letters_redrives_exhausted",
                "Dead letters of an outage the service already redrove dead_letter_max_auto_redrives times: they "
                "fail for another reason and wait for a person (counted in kasse_dead_letters_waiting too)",
                {"dlq": runtime_dead_letters.redrives_exhausted},
            ),
            (
                "kasse_outbox_refused_documents",
                "Documents whose events failed to publish 5 or more times in a row (see the ERROR log)",
                relay.refused,
            ),
        ]
        for name, doc, values in gauges:
            gauge = GaugeMetricFamily(name, doc, labels=per_collection)
            for collection, measured in values.items():
                gauge.add_metric([self.runtime.service, collection], float(measured))
            yield gauge
        by_query = ["service", "command", "collection", "filter"]
        commands = CounterMetricFamily(
            "kasse_store_commands", "Commands sent to the store, by collection and filter shape", labels=by_query
        )
        seconds = CounterMetricFamily(
            "kasse_store_command_seconds",
            "Time the store took for them (a filter FerretDB v1 cannot narrow reads the whole collection)",
            labels=by_query,
        )
        for (command, collection, shape), totals in sorted(self.runtime.store_commands.snapshot().items()):
            commands.add_metric([self.runtime.service, command, collection, shape], totals.count)
            seconds.add_metric([self.runtime.service, command, collection, shape], totals.seconds)
        yield commands
        yield seconds


@dataclass
class StallRestarts:
    """Restarts of one subscriber for stalling since it last consumed, and when the last one was."""

    count: int = 0
    restarted_at: float = 0.0


class Verdict(Enum):
    """What the watchdog's look at one running subscriber found."""

    STALLED = "stalled"  # records wait for it and it handed over none for the whole window
    CAUGHT_UP = "caught_up"  # it was looked at and nothing waits for it: it is not stuck
    UNDECIDED = "undecided"  # within its window, paused on purpose, or the broker is away


@dataclass
class GroupMark:
    """The group's committed offsets as a partition-less member last saw them, and since when unchanged."""

    committed: dict[TopicPartition, int]
    since: float


def last_activity(last_record_at: Mapping[int, float], last_progress_at: Mapping[int, float]) -> dict[int, float]:
    """Per Kafka client: the later of its last record handed over and its running handler's last progress
    (`kasse_common.progress`). A handler slower than the stall window that keeps working (its store commands
    complete) is not a stall; one waiting for ever on something that never answers still is."""
    return {key: max(at, last_progress_at.get(key, at)) for key, at in last_record_at.items()}


async def judge_subscribers(
    subscribers: Sequence[Any],
    last_record_at: Mapping[int, float],
    stall_s: float,
    broker_reachable: Callable[[], Awaitable[bool]],
    group_marks: dict[int, GroupMark] | None = None,
    window_from: dict[int, float] | None = None,
) -> dict[int, Verdict]:
    """The watchdog's stall check: a verdict per running subscriber (by `id`).

    Stalled, and restarted by the watchdog, is a subscriber that handed over no record for `stall_s` while
    1. its unpaused assigned partitions have records waiting (end offset beyond its position), or records
       it fetched are still not committed (a handler or an offset commit that never returns) — seen in
       `make chaos` after the broker and then the store were killed: groups kept a lag of 10-107 records
       for minutes with nothing consumed, no consume loop ended and /readyz 200; or
    2. it holds no partition at all (lost its group membership) while records wait in its topics beyond
       the group's committed offsets and those offsets did not move for `stall_s` (no other member is
       working them off: a member idle only because the group has more members than partitions is left
       alone while the others progress); or
    3. its client cannot even say where it is while the broker answers the producer (`broker_reachable`).

    Partitions paused on purpose (transient retries) do not count. The window only runs while the broker
    answers: while it is away every quiet subscriber's window starts again, so a consumer gets the whole
    window to rejoin after the broker is back, and an outage is left to readiness.

    `last_record_at`: when each Kafka client (by `id`) last handed over a record (the consumer keeps it), or
    its running handler last made progress (`last_activity`);
    `window_from`: where this check started a client's window instead (first look, outage, caught up).
    """
    now = time.monotonic()
    marks = group_marks if group_marks is not None else {}
    started = window_from if window_from is not None else {}
    verdicts: dict[int, Verdict] = {}
    reachable: bool | None = None

    async def broker_answers() -> bool:
        nonlocal reachable
        if reachable is None:
            try:
                reachable = await broker_reachable()
            except Exception:
                reachable = False
        return reachable

    for subscriber in subscribers:
        client = getattr(subscriber, "consumer", None)
        if client is None or getattr(client, "_closed", False):
            continue  # stopped, not stalled: `ServiceRuntime.stopped_consumers` sees it
        key = id(client)
        since = [t for t in (last_record_at.get(key), started.get(key)) if t is not None]
        if not since:
            started[key] = now  # a client never seen gets the whole window
        if now - max(since, default=now) < stall_s:
            verdicts[id(subscriber)] = Verdict.UNDECIDED
            continue
        if not await broker_answers():
            started[key] = now  # the window starts again once the broker is back
            marks.pop(key, None)
            verdicts[id(subscriber)] = Verdict.UNDECIDED
            continue
        try:
            assigned = client.assignment()
            if assigned:
                marks.pop(key, None)
                verdict = await _judge_assigned(client, assigned)
            else:
                verdict = await _judge_partitionless(client, subscriber, marks, now, stall_s)
        except Exception as exc:
            log.warning("consumer quiet and its client cannot answer", extra={"error": repr(exc)[:200]})
            verdict = Verdict.STALLED  # the broker answers the producer (above)
        if verdict is Verdict.CAUGHT_UP:
            started[key] = now  # fine now: the next look in a window (an idle consumer costs little)
        verdicts[id(subscriber)] = verdict
    return verdicts


async def _judge_assigned(client: Any, assigned: set[TopicPartition]) -> Verdict:
    paused = client.paused()
    fetchable = [tp for tp in assigned if tp not in paused]
    if not fetchable:
        return Verdict.UNDECIDED  # every partition waits for a transient retry on purpose
    ends = await asyncio.wait_for(client.end_offsets(fetchable), 5)
    positions = {tp: await asyncio.wait_for(client.position(tp), 5) for tp in fetchable}
    if any(ends.get(tp, 0) > positions[tp] for tp in fetchable):
        return Verdict.STALLED  # records wait and nothing fetches them
    # Fetched but not committed for the whole window: a handler (or its offset commit) that never returns,
    # also on the last record of a partition, where the position is at the end already.
    committed = await _committed(client, fetchable)
    return Verdict.STALLED if any(positions[tp] > committed[tp] for tp in fetchable) else Verdict.CAUGHT_UP


async def _committed(client: Any, tps: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
    """The group's committed offsets (the log's start where it never committed)."""
    starts = await asyncio.wait_for(client.beginning_offsets(tps), 5)
    found = await asyncio.wait_for(asyncio.gather(*(client.committed(tp) for tp in tps)), 5)
    return {tp: starts.get(tp, 0) if offset is None else offset for tp, offset in zip(tps, found, strict=True)}


async def _judge_partitionless(
    client: Any, subscriber: Any, marks: dict[int, GroupMark], now: float, stall_s: float
) -> Verdict:
    topics = [str(t) for t in getattr(subscriber, "topic_names", ())]
    tps = [TopicPartition(t, p) for t in topics for p in sorted(client.partitions_for_topic(t) or ())]
    if not tps:
        return Verdict.UNDECIDED  # no metadata yet
    ends = await asyncio.wait_for(client.end_offsets(tps), 5)
    committed = await _committed(client, tps)
    waiting = {tp: committed[tp] for tp in tps if ends.get(tp, 0) > committed[tp]}
    key = id(client)
    if not waiting:
        marks.pop(key, None)
        return Verdict.CAUGHT_UP
    mark = marks.get(key)
    if mark is None or any(mark.committed.get(tp) != offset for tp, offset in waiting.items()):
        marks[key] = GroupMark(waiting, now)  # the group moves on (or a first look): not stuck yet
        return Verdict.UNDECIDED
    return Verdict.STALLED if now - mark.since >= stall_s else Verdict.UNDECIDED


async def stalled_subscribers(
    subscribers: Sequence[Any],
    last_record_at: Mapping[int, float],
    stall_s: float,
    broker_reachable: Callable[[], Awaitable[bool]],
    group_marks: dict[int, GroupMark] | None = None,
    window_from: dict[int, float] | None = None,
) -> list[Any]:
    """The subscribers `judge_subscribers` finds stalled."""
    verdicts = await judge_subscribers(subscribers, last_record_at, stall_s, broker_reachable, group_marks, window_from)
    return [sub for sub in subscribers if verdicts.get(id(sub)) is Verdict.STALLED]


async def force_stop(subscriber: Any, timeout_s: float) -> None:
    """Stop a subscriber to restart it, also when its stop waits forever for a handler that hangs.

    FastStream's stop first waits for the message in flight; in `make chaos` (broker restarted) that wait
    never ended, and a restart after a timed-out stop left the old Kafka client in the group holding
    partitions beside the new one. So: its consume tasks are cancelled (the record in flight is not
    committed and comes again) and its Kafka client is stopped, each bounded.
    """
    try:
        await asyncio.wait_for(subscriber.stop(), timeout_s)
        return
    except Exception as exc:
        log.warning("stopping the subscriber timed out; cancelling its tasks", extra={"error": repr(exc)[:200]})
    tasks = [t for t in getattr(subscriber, "tasks", []) if not t.done()]
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.wait(tasks, timeout=timeout_s)
    client = getattr(subscriber, "consumer", None)
    if client is not None:
        try:
            await asyncio.wait_for(client.stop(), timeout_s)
        except Exception as exc:
            log.warning("stopping the subscriber's Kafka client failed", extra={"error": repr(exc)[:200]})
