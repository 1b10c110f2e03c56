"""Kafka through FastStream (aiokafka): the broker, the publisher, and at-least-once consumers.

Consumption contract of every Kasse consumer:
- one consumer group per service (`ServiceSettings.consumer_group`); offsets start at `earliest` for a
  new group, so a service that starts late still sees what was published before it;
- an offset is committed only after the handler returned for that record and every record before it
  in its partition. The handler returns after it applied the event, or after the event went to the
  dead-letter topic. If even the dead-letter publish fails, the partition is rewound to the record
  and it is delivered again: nothing is ever skipped silently;
- a lane (one Kafka consumer) handles up to `consumer_concurrency` records at once: records of one
  key (one aggregate, hence one partition) one after another in offset order, different keys side
  by side. Offsets are committed in batches (`InFlight`): every `consumer_commit_interval_s`, when
  partitions are revoked and at stop, each partition up to its lowest record still in hand — never
  past a record whose handling has not returned. A crash redelivers at most the records handled
  since the last commit (idempotent handlers absorb them);
- a *transient* failure (`kasse_common.retry.is_transient`: the store or the broker unavailable, a
  lost optimistic-concurrency race) pauses the record's partition and seeks back to the record; it
  is delivered again after an exponential, jittered backoff (`consumer_transient_backoff_*`), for
  up to `consumer_transient_retry_s` (minutes) before it is dead-lettered. Other partitions keep
  flowing and the consumer keeps polling, so it never overruns `max.poll.interval.ms`;
- any other failure is retried in place with backoff (`consumer_max_attempts`), then the record
  goes to the service's dead-letter topic with its original key, value and headers plus
  `kasse_dlq_*` headers saying why. A malformed record (bad envelope, invalid payload) or a
  `PermanentError` skips the retries: it will not get better. The consumer carries on with the next
  record;
- handlers must be idempotent (see kasse_common.persistence): redelivery after a crash between
  the effect and the offset commit is normal.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
import traceback
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from faststream import AckPolicy
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from faststream.kafka.opentelemetry import KafkaTelemetryMiddleware
from faststream.security import BaseSecurity, SASLPlaintext, SASLScram256, SASLScram512
from opentelemetry import context as otel_context
from opentelemetry import propagate
from opentelemetry.metrics import Meter
from opentelemetry.trace import TracerProvider

from kasse_common.envelope import IncomingEvent, MalformedEvent, OutgoingRecord, decode, headers_to_dict
from kasse_common.errors import AggregateNotYetKnown
from kasse_common.parking import ParkedEvents
from kasse_common.progress import handling
from kasse_common.retry import backoff_delay, is_transient, retry_transient
from kasse_common.settings import ServiceSettings
from kasse_contracts.base import Event
from kasse_contracts.topics import dead_letter_topic

log = logging.getLogger(__name__)

E = TypeVar("E", bound=Event)


@dataclass(frozen=True)
class EventContext:
    """What a handler may want to know about the record besides the payload."""

    event_id: str
    event_type: str
    source: str
    time: datetime
    subject: str
    topic: str
    partition: int
    offset: int


Handler = Callable[[Any, EventContext], Awaitable[None]]


def _context(incoming: IncomingEvent, raw: Any) -> EventContext:
    """The handler's view of a record, live from Kafka or a parked copy of one (same fields)."""
    return EventContext(
        event_id=incoming.id,
        event_type=incoming.type,
        source=incoming.attributes.source,
        time=incoming.attributes.time,
        subject=incoming.attributes.subject,
        topic=raw.topic,
        partition=raw.partition,
        offset=raw.offset,
    )


def dead_letter_headers(
    headers: Mapping[str, str],
    error: BaseException,
    topic: str,
    partition: int,
    offset: int,
    consumer_group: str,
    attempts: int,
) -> dict[str, str]:
    """The original headers plus `kasse_dlq_*`: where the record came from and why it was set aside."""
    return {
        **headers,
        "kasse_dlq_error": str(error)[:2000],
        "kasse_dlq_error_type": type(error).__name__,
        # The store or broker stayed away longer than the retry window: the runtime redrives it by itself
        # once the service is healthy again (`dead_letter_auto_redrive_after_s`); anything else waits for a
        # person who fixed the cause.
        "kasse_dlq_transient": "true" if is_transient(error) else "false",
        "kasse_dlq_stacktrace": "".join(traceback.format_exception(error))[-4000:],
        "kasse_dlq_topic": topic,
        "kasse_dlq_partition": str(partition),
        "kasse_dlq_offset": str(offset),
        "kasse_dlq_consumer_group": consumer_group,
        "kasse_dlq_attempts": str(attempts),
        "kasse_dlq_time": datetime.now(UTC).isoformat(),
    }


class PermanentError(Exception):
    """Raised by a handler when retrying cannot help (the event contradicts the rules): dead-letter it."""


def _ssl_context(settings: ServiceSettings) -> ssl.SSLContext | None:
    if settings.kafka_security_protocol.upper() not in ("SSL", "SASL_SSL"):
        return None
    # The system trust store, plus the cluster's CA when one is mounted (KASSE_KAFKA_SSL_CAFILE).
    return ssl.create_default_context(cafile=settings.kafka_ssl_cafile or None)


def faststream_security(settings: ServiceSettings) -> BaseSecurity | None:
    context = _ssl_context(settings)
    if not settings.kafka_sasl_mechanism:
        return BaseSecurity(ssl_context=context, use_ssl=True) if context else None
    password = settings.kafka_sasl_password.get_secret_value() if settings.kafka_sasl_password else ""
    mechanism = settings.kafka_sasl_mechanism.upper()
    cls = {"PLAIN": SASLPlaintext, "SCRAM-SHA-256": SASLScram256, "SCRAM-SHA-512": SASLScram512}.get(mechanism)
    if cls is None:
        raise ValueError(f"unsupported KAFKA_SASL_MECHANISM {settings.kafka_sasl_mechanism!r}")
    return cls(
        username=settings.kafka_sasl_username or "", password=password, ssl_context=context, use_ssl=context is not None
    )


def aiokafka_security(settings: ServiceSettings) -> dict[str, Any]:
    """The same connection security as keyword arguments of a plain aiokafka client (admin, consumer)."""
    options: dict[str, Any] = {"security_protocol": settings.kafka_security_protocol.upper()}
    context = _ssl_context(settings)
    if context is not None:
        options["ssl_context"] = context
    if settings.kafka_sasl_mechanism:
        options["sasl_mechanism"] = settings.kafka_sasl_mechanism.upper()
        options["sasl_plain_username"] = settings.kafka_sasl_username or ""
        options["sasl_plain_password"] = (
            settings.kafka_sasl_password.get_secret_value() if settings.kafka_sasl_password else ""
        )
    return options


def confluent_security(settings: ServiceSettings) -> dict[str, str]:
    """The same connection security as librdkafka configuration (a confluent-kafka client)."""
    options = {"security.protocol": settings.kafka_security_protocol.upper()}
    if settings.kafka_ssl_cafile and options["security.protocol"] in ("SSL", "SASL_SSL"):
        options["ssl.ca.location"] = settings.kafka_ssl_cafile
    if settings.kafka_sasl_mechanism:
        options["sasl.mechanism"] = settings.kafka_sasl_mechanism.upper()
        options["sasl.username"] = settings.kafka_sasl_username or ""
        password = settings.kafka_sasl_password
        options["sasl.password"] = password.get_secret_value() if password else ""
    return options


def create_broker(
    settings: ServiceSettings,
    tracer_provider: TracerProvider | None = None,
    meter: Meter | None = None,
) -> KafkaBroker:
    """The service's one broker: idempotent producer (acks=all), telemetry middleware."""
    security = faststream_security(settings)
    middlewares = []
    if tracer_provider is not None:
        middlewares.append(KafkaTelemetryMiddleware(tracer_provider=tracer_provider, meter=meter))
    return KafkaBroker(
        settings.kafka_bootstrap,
        client_id=f"kasse-{settings.service_name}",
        enable_idempotence=True,
        acks="all",
        linger_ms=2,
        security=security,
        middlewares=middlewares,
        graceful_timeout=15.0,
        logger=logging.getLogger(f"kasse.{settings.service_name}.faststream"),
        log_level=logging.DEBUG,
    )


class EventPublisher:
    """Publishes encoded records; topic names get the settings' prefix."""

    def __init__(self, broker: KafkaBroker, settings: ServiceSettings) -> None:
        self._broker = broker
        self._settings = settings

    async def publish(self, record: OutgoingRecord) -> None:
        # The record may have been written long before (outbox): publish inside the trace that
        # caused it, so the producer span and the `traceparent` the consumers see continue it.
        token = otel_context.attach(propagate.extract(record.headers))
        try:
            await self._broker.publish(
                record.value,
                topic=self._settings.topic(record.topic),
                key=record.key.encode(),
                headers=record.headers,
            )
        finally:
            otel_context.detach(token)

    async def publish_raw(self, topic: str, value: bytes | None, key: bytes | None, headers: dict[str, str]) -> None:
        await self._broker.publish(value or b"", topic=topic, key=key, headers=headers)


def _named(handler: Callable[[Any], Awaitable[None]], name: str) -> Callable[[Any], Awaitable[None]]:
    """A distinct function per subscriber: FastStream names (and documents) a subscriber by its handler."""

    async def named(message: KafkaMessage) -> None:
        await handler(message)

    named.__name__ = named.__qualname__ = name
    return named


async def _raw_body(message: Any) -> Any:
    return message.body


class _Partition:
    """One assigned partition's records in hand: what may be committed."""

    __slots__ = ("closed", "floor", "pending", "rewound", "tasks")

    def __init__(self) -> None:
        self.pending: dict[int, object] = {}  # offset -> token of the record in hand (admitted, not returned)
        self.floor: int | None = None  # one past the last record admitted (lowered by a rewind)
        self.tasks: set[asyncio.Task[None]] = set()
        self.closed = False  # revoked: records not started yet are not handled here
        # Sought back to `floor`: until the record at `floor` comes again, a record handed over is one fetched
        # before the seek (the consume loop waited for a slot with it) and must not be taken.
        self.rewound = False

    def stale(self, offset: int) -> bool:
        if not self.rewound:
            return False
        if offset == self.floor:
            self.rewound = False  # the redelivery starts
            return False
        return True

    def admit(self, offset: int) -> object:
        token = object()
        self.pending[offset] = token
        self.floor = offset + 1
        return token

    def holds(self, offset: int, token: object) -> bool:
        return self.pending.get(offset) is token

    def finish(self, offset: int, token: object) -> None:
        if self.pending.get(offset) is token:
            del self.pending[offset]

    def rewind(self, offset: int) -> None:
        """Kafka delivers the partition again from `offset`: nothing from there on counts as handled."""
        for o in [o for o in self.pending if o >= offset]:
            del self.pending[o]
        self.floor = offset if self.floor is None else min(self.floor, offset)

    def committable(self) -> int | None:
        """The offset to commit: the lowest record still in hand, else one past the last one admitted."""
        if self.floor is None:
            return None
        return min(self.pending, default=self.floor) if self.pending else self.floor


class InFlight:
    """The records one Kafka client (one lane of one replica) has in hand, and their batched offset commits.

    A record is admitted in fetch order (waiting for one of `concurrency` slots: the consume loop
    waits with it, so the client never runs far ahead), then handled after the record before it
    with the same key and partition has returned: one aggregate's records in offset order, other
    keys side by side. `commit()` commits each partition up to its lowest record in hand (or one past
    the last admitted), so an offset is never committed past a record whose handling has not
    returned; it runs every `interval_s`, when partitions are revoked and at stop.
    """

    def __init__(self, client: Any, concurrency: int, interval_s: float) -> None:
        self.client = client
        self.slots = asyncio.Semaphore(concurrency)
        self.interval_s = interval_s
        self.partitions: dict[TopicPartition, _Partition] = {}
        self.tails: dict[tuple[TopicPartition, bytes | None], asyncio.Task[None]] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        self.committed: dict[TopicPartition, int] = {}
        self.closing = False
        self.commits = 0
        self._flusher: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush_every_interval(), name="consumer-offset-commits")

    async def _flush_every_interval(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            if getattr(self.client, "_closed", False):
                return  # the client closed itself; the watchdog restarts the subscriber with a new one
            try:
                await self.commit()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the broker away or a rebalance: the next round commits (records come again)
                log.warning("offset commit failed; the next round tries again", extra={"error": repr(exc)[:300]})

    async def admit(
        self, tp: TopicPartition, offset: int, key: bytes | None, work: Callable[[], Awaitable[None]]
    ) -> bool:
        """Take a record in hand and schedule `work` for it; False when this lane is stopping (not taken)."""
        if self.closing:
            return False
        handed_over_to = self.partitions.get(tp)
        await self.slots.acquire()
        if self.closing:
            self.slots.release()
            return False
        part = self.partitions.get(tp)
        if (
            tp not in self.client.assignment()
            or (part is not None and part.closed)
            or (handed_over_to is not None and part is not handed_over_to)
        ):
            # Fetched before its partition was revoked (handed over while the revoke ran, or the loop waited
            # for a slot across the rebalance): its next owner — maybe this lane again — fetches it again
            # from the committed offset. Taken into a new record of the partition, it let a commit pass the
            # records the revoke gave back unhandled (a chaos run lost six ShipmentDelivered so: the cart's
            # orders stayed `shipped` for good).
            self.slots.release()
            return False
        if part is None:
            part = self.partitions[tp] = _Partition()
        if part.stale(offset):
            self.slots.release()
            return False  # not taken: the partition was sought back before it, so it comes again in order
        token = part.admit(offset)
        previous = self.tails.get((tp, key))
        task = asyncio.create_task(self._run(part, tp, offset, key, token, previous, work))
        self.tails[(tp, key)] = task
        self.tasks.add(task)
        part.tasks.add(task)
        return True

    async def _run(
        self,
        part: _Partition,
        tp: TopicPartition,
        offset: int,
        key: bytes | None,
        token: object,
        previous: asyncio.Task[None] | None,
        work: Callable[[], Awaitable[None]],
    ) -> None:
        try:
            if previous is not None and not previous.done():
                await asyncio.wait([previous])  # the same aggregate's earlier record first
            if part.closed:
                part.rewind(offset)  # revoked before it started: its next owner handles it
                return
            if not part.holds(offset, token):
                return  # the partition was rewound to an earlier record: this one comes again
            try:
                await work()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Not even dead-lettered (the dead-letter publish failed): deliver it again, never skip it.
                log.error(
                    "record not handled; its partition is rewound to it",
                    extra={"partition": str(tp), "offset": offset, "error": repr(exc)[:300]},
                )
                self.redeliver(tp, offset, delay_s=1.0)
                return
            part.finish(offset, token)
        finally:
            self.slots.release()
            self.tasks.discard(asyncio.current_task())
            part.tasks.discard(asyncio.current_task())
            if self.tails.get((tp, key)) is asyncio.current_task():
                del self.tails[(tp, key)]

    def redeliver(self, tp: TopicPartition, offset: int, delay_s: float) -> None:
        """Pause the partition for `delay_s` and rewind it to `offset`: that record and all after it come again."""
        part = self.partitions.get(tp)
        if part is not None:
            part.rewind(offset)
            # An earlier rewind of this partition whose records have not come again yet goes further back.
            offset = part.floor if part.floor is not None else offset
            part.rewound = True
        try:
            self.client.pause(tp)
            self.client.seek(tp, offset)
        except Exception as exc:  # no longer assigned: its next owner starts from the committed offset
            log.info(
                "partition to rewind is no longer assigned", extra={"partition": str(tp), "error": repr(exc)[:200]}
            )
            return
        asyncio.get_running_loop().call_later(delay_s, _resume, self.client, tp)

    async def commit(self, only: set[TopicPartition] | None = None) -> None:
        """Commit every partition up to its lowest record in hand (`only` those given)."""
        assigned = self.client.assignment()
        offsets = {}
        for tp, part in list(self.partitions.items()):
            if (only is not None and tp not in only) or tp not in assigned:
                continue
            if part.closed and only is None:
                continue  # handed back: its revoke committed it
            target = part.committable()
            if target is not None and target > self.committed.get(tp, -1):
                offsets[tp] = target
        if not offsets:
            return
        await self.client.commit(offsets)
        self.commits += 1
        for tp, offset in offsets.items():
            self.committed[tp] = max(offset, self.committed.get(tp, -1))

    async def hand_back(self, revoked: set[TopicPartition], timeout_s: float) -> None:
        """Partitions revoked: let their records in hand finish (bounded), commit them; closed until reassigned."""
        parts = {tp: self.partitions[tp] for tp in revoked if tp in self.partitions}
        if not parts:
            return
        for part in parts.values():
            part.closed = True
        running = set().union(*(part.tasks for part in parts.values()))
        if running:
            _, late = await asyncio.wait(running, timeout=timeout_s)
            if late:
                log.warning(
                    "records still in hand when their partitions were revoked; they come again",
                    extra={"records": len(late)},
                )
        try:
            # Bounded: the group's rebalance waits for this (a commit waits as long as no coordinator answers).
            await asyncio.wait_for(self.commit(only=set(parts)), timeout_s)
        except Exception as exc:
            log.warning("offset commit at revoke failed; records come again", extra={"error": repr(exc)[:300]})
        for tp in parts:
            # Kept, closed, until the partition is assigned again (`reassigned`): the records the consume loop
            # still hands over for it are not taken.
            self.committed.pop(tp, None)

    def reassigned(self, tps: set[TopicPartition]) -> None:
        """The group's new assignment: the client fetches these partitions again from their committed
        offsets (its records fetched before were dropped), so they start new records in hand."""
        for tp in tps:
            part = self.partitions.get(tp)
            if part is not None and part.closed:
                del self.partitions[tp]

    async def stop(self, timeout_s: float) -> None:
        """Take no more records; let those in hand finish (then cancel them), commit, stop committing."""
        self.closing = True
        if self.tasks:
            _, late = await asyncio.wait(set(self.tasks), timeout=timeout_s)
            for task in late:
                task.cancel()  # its record is not committed and comes again
            if late:
                log.warning("handlers still running at stop were cancelled", extra={"records": len(late)})
                await asyncio.wait(late, timeout=timeout_s)
        if self._flusher is not None:
            self._flusher.cancel()
        try:
            await asyncio.wait_for(self.commit(), timeout_s)
        except Exception as exc:
            log.warning("offset commit at stop failed; records come again", extra={"error": repr(exc)[:300]})


class _HandBackOnRevoke(ConsumerRebalanceListener):  # type: ignore[misc]
    """Commits a lane's finished records before its partitions go to another member."""

    def __init__(self, owner: EventConsumer) -> None:
        self.owner = owner
        self.subscriber: Any = None  # set once FastStream created it

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        client = getattr(self.subscriber, "consumer", None)
        flow = self.owner.in_flight.get(id(client)) if client is not None else None
        if flow is not None and revoked:
            await flow.hand_back(set(revoked), timeout_s=REVOKE_WAIT_S)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        client = getattr(self.subscriber, "consumer", None)
        flow = self.owner.in_flight.get(id(client)) if client is not None else None
        if flow is not None:
            flow.reassigned(set(assigned))


# A rebalance waits this long for a revoked partition's records in hand (the group waits meanwhile).
REVOKE_WAIT_S = 10.0


class EventConsumer:
    """FastStream subscribers for a service's topics; dispatches records by CloudEvents type.

    One subscriber (one Kafka consumer per replica) per *lane*, not per topic: every consumer in a
    group that joins triggers a rebalance of the whole group, and a service with four topics took
    10-15 s to start while its consumers joined one after another. Records of one key are handled
    in offset order; within a lane, up to `consumer_concurrency` records of different keys at once
    (`InFlight`), offsets committed in batches. A high-volume topic goes in a lane of its own
    (`lane="storefront"`) so it cannot queue urgent work (stock for an order) behind it.
    """

    def __init__(self, broker: KafkaBroker, settings: ServiceSettings, publisher: EventPublisher) -> None:
        self._broker = broker
        self._settings = settings
        self._publisher = publisher
        self._handlers: dict[str, tuple[type[Event], Handler]] = {}
        self._topics: list[str] = []
        self._lanes: dict[str, list[str]] = {}  # lane -> its topics
        self._attached = False
        self.dead_letter_topic = settings.topic(dead_letter_topic(settings.service_name))
        self.dead_lettered = 0
        self.processed = 0
        self.transient_failures = 0
        # Per Kafka client (id): when it last handed over a record (the watchdog's stall check).
        self.last_record_at: dict[int, float] = {}
        # ... and when a record's handling last returned (applied, skipped, parked, dead-lettered, retried
        # later): a restarted consumer that is handed the same record again and hangs again made no progress.
        self.last_done_at: dict[int, float] = {}
        # ... and when the handler running now last showed it works (`kasse_common.progress`: a store command
        # completed): a slow handler is not a stalled consumer.
        self.last_progress_at: dict[int, float] = {}
        self.parking: ParkedEvents | None = None  # the runtime sets it: records that must wait
        # Parked records being applied in this process now: the periodic round and a call after an
        # aggregate was stored may read the same record; only one of them applies it.
        self._unparking: set[str] = set()
        self.parked = 0  # records parked by this instance
        self.parked_waiting = 0  # records waiting, as of the last retry round
        self.unparked = 0
        self.clock: Callable[[], float] = time.monotonic  # tests move time on
        # (topic, partition, offset) -> (first failure, failures) of records retried after a backoff.
        self._retrying: dict[tuple[str, int, int], tuple[float, int]] = {}
        # Per Kafka client (id): the records it has in hand and their offset commits.
        self.in_flight: dict[int, InFlight] = {}

    @property
    def topics(self) -> list[str]:
        """Contract names of the topics this consumer subscribes to."""
        return list(self._topics)

    def on(
        self, event_type: type[E], handler: Callable[[E, EventContext], Awaitable[None]], *, lane: str = "main"
    ) -> None:
        """Call `handler` for every `event_type` (on its contract topic). Register before the app starts."""
        if self._attached:
            raise RuntimeError("register event handlers before the service starts")
        if event_type.event_type in self._handlers:
            raise ValueError(f"a handler for {event_type.__name__} is registered already")
        topic_lane = next((name for name, topics in self._lanes.items() if event_type.topic in topics), None)
        if topic_lane is not None and topic_lane != lane:
            raise ValueError(f"topic {event_type.topic} is in lane {topic_lane!r} already, not {lane!r}")
        self._handlers[event_type.event_type] = (event_type, handler)
        if event_type.topic not in self._topics:
            self._topics.append(event_type.topic)
            self._lanes.setdefault(lane, []).append(event_type.topic)

    def attach(self) -> None:
        """Create the subscribers (the runtime does it at start; tests on TestKafkaBroker call it)."""
        if self._attached or not self._topics:
            return
        self._attached = True
        wanted = {t: model for t, (model, _) in self._handlers.items()}

        async def on_record(message: KafkaMessage) -> None:
            await self._take(message, wanted)

        for lane, topics in self._lanes.items():
            handler = _named(on_record, f"on_{self._settings.service_name.replace('-', '_')}_{lane}_events")
            listener = _HandBackOnRevoke(self)
            subscriber = self._broker.subscriber(
                *(self._settings.topic(t) for t in topics),
                group_id=self._settings.consumer_group,
                auto_offset_reset="earliest",
                # The kit commits (InFlight): in batches, never past a record whose handling has not returned.
                ack_policy=AckPolicy.MANUAL,
                max_poll_interval_ms=300_000,
                listener=listener,
                # FastStream would JSON-decode the body before our handler runs and turn a malformed
                # record into an endless nack loop; we decode (and dead-letter) ourselves.
                decoder=_raw_body,
            )
            subscriber(handler)
            listener.subscriber = subscriber

    async def _take(self, message: Any, wanted: Mapping[str, type[Event]]) -> None:
        """A record from a lane's consume loop: into the lane's records in hand (a real Kafka client), or
        handled at once (FastStream's test broker, which expects the handler to have run on return)."""
        client = getattr(message, "consumer", None)
        if not isinstance(client, AIOKafkaConsumer):
            await self._dispatch(message, wanted)
            return
        flow = self.in_flight.get(id(client))
        if flow is None or flow.client is not client:
            for key, old in list(self.in_flight.items()):  # lanes stopped for good: their clients closed
                if old.closing and getattr(old.client, "_closed", False):
                    del self.in_flight[key]
            flow = self.in_flight[id(client)] = InFlight(
                client, self._settings.consumer_concurrency, self._settings.consumer_commit_interval_s
            )
            flow.start()
        raw = message.raw_message
        tp = TopicPartition(raw.topic, raw.partition)
        # Not taken while the lane stops: never committed, so it comes again.
        await flow.admit(tp, raw.offset, raw.key, lambda: self._dispatch(message, wanted))

    async def settle(self, client: Any, timeout_s: float) -> None:
        """Before a Kafka client stops: its records in hand finish (bounded) and their offsets are committed."""
        # Kept (stopping) until its client is replaced: records the consume loop still hands over before the
        # subscriber stops are not taken (never committed, they come again), rather than starting a new lane.
        flow = self.in_flight.get(id(client)) if client is not None else None
        if flow is not None and flow.client is client:
            await flow.stop(timeout_s)

    async def _dispatch(self, message: Any, wanted: Mapping[str, type[Event]]) -> None:
        """Handle one record: applied, parked, dead-lettered, or rewound for a retry after a backoff."""
        client = getattr(message, "consumer", None)
        if client is None:
            await self._dispatch_record(message, wanted)
            return
        self.last_record_at[id(client)] = time.monotonic()
        with handling(self.last_progress_at, id(client)):
            await self._dispatch_record(message, wanted)
        self.last_done_at[id(client)] = time.monotonic()

    async def _dispatch_record(self, message: Any, wanted: Mapping[str, type[Event]]) -> None:
        raw = message.raw_message
        headers = headers_to_dict(raw.headers or ())
        try:
            incoming = decode(raw.value, headers, wanted)
        except MalformedEvent as exc:
            await self._dead_letter(raw, headers, exc, attempts=0)
            return
        if incoming.event is None:
            return  # a type this service does not consume (or does not know yet): not an error
        _, handler = self._handlers[incoming.type]
        ctx = _context(incoming, raw)
        await self._handle(handler, incoming.event, ctx, message, headers)

    async def _handle(
        self, handler: Handler, event: Event, ctx: EventContext, message: Any, headers: dict[str, str]
    ) -> None:
        s = self._settings
        raw = message.raw_message
        attempts = 0

        async def call() -> None:
            nonlocal attempts
            attempts += 1
            await handler(event, ctx)

        def retry_in_place(exc: BaseException) -> bool:
            # A transient failure is not retried here but later, with the partition paused (below);
            # an event about an aggregate that does not exist yet is parked.
            return not isinstance(exc, PermanentError | AggregateNotYetKnown) and not is_transient(exc)

        while True:
            try:
                await retry_transient(
                    call,
                    what=f"{ctx.event_type} {ctx.event_id}",
                    attempts=s.consumer_max_attempts,
                    initial_s=s.consumer_backoff_initial_s,
                    max_s=s.consumer_backoff_max_s,
                    retry_on=retry_in_place,
                )
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if isinstance(exc, AggregateNotYetKnown) and self.parking is not None:
                    try:
                        await self.parking.park(ctx.event_id, ctx.subject, raw, headers, str(exc))
                    except Exception as park_failed:
                        if not is_transient(park_failed):
                            raise
                        if await self._retry_later(message, headers, park_failed, ctx):
                            continue
                        return
                    self._retrying.pop(_position(raw), None)
                    self.parked += 1
                    log.info(
                        "event parked until its aggregate exists",
                        extra={"event_id": ctx.event_id, "event_type": ctx.event_type, "aggregate": ctx.subject},
                    )
                    # The aggregate may have been created between the handler's read and the parking
                    # (its creator looked for parked events before this one was stored): look once more.
                    try:
                        await self.unpark(ctx.subject)
                    except Exception as again:
                        log.info("parked event not retried yet", extra={"error": repr(again)[:300]})
                    return
                if isinstance(exc, PermanentError) or not is_transient(exc):
                    self._retrying.pop(_position(raw), None)
                    await self._dead_letter(raw, headers, exc, attempts=attempts)
                    return
                if await self._retry_later(message, headers, exc, ctx):
                    continue
                return
            self._retrying.pop(_position(raw), None)
            self.processed += 1
            return

    async def _retry_later(self, message: Any, headers: dict[str, str], exc: BaseException, ctx: EventContext) -> bool:
        """A transient failure: deliver the record again after a backoff, its partition paused meanwhile.

        True when the caller should call the handler again now (no real consumer to pause).
        """
        s = self._settings
        raw = message.raw_message
        position = _position(raw)
        now = self.clock()
        first, failures = self._retrying.get(position, (now, 0))
        failures += 1
        if now - first >= s.consumer_transient_retry_s:
            self._retrying.pop(position, None)
            await self._dead_letter(raw, headers, exc, attempts=failures)
            return False
        self._retrying[position] = (first, failures)
        self.transient_failures += 1
        delay = backoff_delay(
            failures, initial_s=s.consumer_transient_backoff_initial_s, max_s=s.consumer_transient_backoff_max_s
        )
        log.warning(
            "transient failure; the partition waits and the record comes again",
            extra={
                "event_id": ctx.event_id,
                "event_type": ctx.event_type,
                "topic": raw.topic,
                "partition": raw.partition,
                "offset": raw.offset,
                "failures": failures,
                "retrying_for_s": round(now - first, 1),
                "delay_s": round(delay, 2),
                "error": repr(exc)[:300],
            },
        )
        consumer: Any = getattr(message, "consumer", None)
        if not callable(getattr(consumer, "pause", None)):
            # No real Kafka consumer (FastStream's test broker): wait here, then try again.
            await asyncio.sleep(delay)
            return True
        tp = TopicPartition(raw.topic, raw.partition)
        flow = self.in_flight.get(id(consumer))
        if flow is not None and flow.client is consumer:
            # Rewind the partition to this record (nothing after it is handled before it, nothing from it on
            # is committed) and pause it for the backoff.
            flow.redeliver(tp, raw.offset, delay)
            return False
        consumer.pause(tp)
        asyncio.get_running_loop().call_later(delay, _resume, consumer, tp)
        # Rewind the partition to this record (nothing after it is handled before it) and commit nothing.
        await message.nack()
        return False

    async def unpark(self, aggregate: str | None = None) -> int:
        """Apply the parked events (of one aggregate, or all) whose aggregate exists now; how many.

        Called every `parking_retry_interval_s` by the runtime, and by a service right after it
        stored a new aggregate (`await runtime.consumer.unpark(order_id)`) so nothing waits a round.
        """
        if self.parking is None:
            return 0
        waiting = await self.parking.waiting(aggregate)
        if aggregate is None:
            self.parked_waiting = len(waiting)
        applied = 0
        now = datetime.now(UTC)
        for doc in waiting:
            if doc["_id"] in self._unparking:
                continue  # another caller in this process is applying it
            self._unparking.add(doc["_id"])
            try:
                # Read by _id again: a caller that read the same list earlier may have applied it since.
                if await self.parking.still_parked(doc["_id"]) and await self._apply_parked(self.parking, doc, now):
                    applied += 1
            finally:
                self._unparking.discard(doc["_id"])
        return applied

    async def _apply_parked(self, parking: ParkedEvents, doc: dict[str, Any], now: datetime) -> bool:
        """Apply one parked record; True when it was applied (and removed)."""
        raw = _ParkedRecord(doc["topic"], doc["partition"], doc["offset"], doc["key"], doc["value"])
        headers = dict(doc["headers"])
        incoming = decode(raw.value, headers, {t: m for t, (m, _) in self._handlers.items()})
        if incoming.event is None:
            await parking.remove(doc["_id"])
            return False
        _, handler = self._handlers[incoming.type]
        ctx = _context(incoming, raw)
        try:
            await handler(incoming.event, ctx)
        except AggregateNotYetKnown as exc:
            parked_at = doc["parked_at"]
            if parked_at.tzinfo is None:
                parked_at = parked_at.replace(tzinfo=UTC)
            if (now - parked_at).total_seconds() >= self._settings.parking_max_age_s:
                await self._dead_letter(raw, headers, exc, attempts=doc.get("attempts", 0) + 1)
                await parking.remove(doc["_id"])
            else:
                await parking.tried(doc["_id"])
            return False
        except Exception as exc:
            if is_transient(exc):
                return False  # the next round tries again
            await self._dead_letter(raw, headers, exc, attempts=doc.get("attempts", 0) + 1)
            await parking.remove(doc["_id"])
            return False
        await parking.remove(doc["_id"])
        self.unparked += 1
        self.processed += 1
        return True

    async def _dead_letter(self, raw: Any, headers: dict[str, str], exc: BaseException, attempts: int) -> None:
        dlq_headers = dead_letter_headers(
            headers, exc, raw.topic, raw.partition, raw.offset, self._settings.consumer_group, attempts
        )
        # If this raises, the record is not acknowledged and comes back: never lost.
        await self._publisher.publish_raw(self.dead_letter_topic, raw.value, raw.key, dlq_headers)
        self.dead_lettered += 1
        log.error(
            "record dead-lettered",
            extra={
                "dlq_topic": self.dead_letter_topic,
                "source_topic": raw.topic,
                "partition": raw.partition,
                "offset": raw.offset,
                "error": str(exc)[:500],
            },
        )


def _position(raw: Any) -> tuple[str, int, int]:
    return (raw.topic, raw.partition, raw.offset)


def _resume(consumer: Any, tp: TopicPartition) -> None:
    try:
        consumer.resume(tp)
    except Exception:  # the partition moved to another member meanwhile: it starts unpaused there
        log.debug("partition to resume is no longer assigned", extra={"partition": str(tp)})


@dataclass(frozen=True)
class _ParkedRecord:
    """A parked record, shaped like the Kafka record it was (for decode and the dead-letter topic)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
