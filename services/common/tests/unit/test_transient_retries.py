"""Transient failures pause the partition and come back; only lasting or permanent ones are dead-lettered.

Drives the consumer's dispatch with records as Kafka would deliver them again after a seek back, a
fake Kafka consumer (pause/resume) and a store that is down for a while (pymongo's errors), on a
clock the test moves on.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pytest
from pydantic_settings import SettingsConfigDict
from pymongo.errors import AutoReconnect, ServerSelectionTimeoutError

from kasse_common.envelope import encode
from kasse_common.errors import ConcurrencyError
from kasse_common.messaging import EventConsumer, EventContext, PermanentError
from kasse_common.retry import backoff_delay, is_transient, retry_transient
from kasse_common.settings import ServiceSettings
from kasse_contracts.events import OrderPlaced
from kasse_testkit.samples import order_placed

pytestmark = pytest.mark.unit


class UnitSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="KASSE_UNIT_", extra="ignore", frozen=True)
    service_name: ClassVar[str] = "unit"


@dataclass
class Raw:
    topic: str
    partition: int
    offset: int
    value: bytes
    key: bytes | None
    headers: list[tuple[str, bytes]]


@dataclass
class FakeKafkaConsumer:
    paused: list[Any] = field(default_factory=list)
    resumed: list[Any] = field(default_factory=list)

    def pause(self, *tps: Any) -> None:
        self.paused.extend(tps)

    def resume(self, *tps: Any) -> None:
        self.resumed.extend(tps)


@dataclass
class Message:
    raw_message: Raw
    consumer: FakeKafkaConsumer
    nacked: int = 0

    async def nack(self) -> None:
        self.nacked += 1


@dataclass
class FakePublisher:
    dead: list[tuple[str, dict[str, str]]] = field(default_factory=list)

    async def publish_raw(self, topic: str, value: bytes | None, key: bytes | None, headers: dict[str, str]) -> None:
        self.dead.append((topic, headers))


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FlakyStore:
    """A store that answers like pymongo while it is unreachable."""

    def __init__(self) -> None:
        self.down = True
        self.writes: list[str] = []

    async def write(self, order_id: str) -> None:
        if self.down:
            raise ServerSelectionTimeoutError("127.0.0.1:27017: [Errno 111] Connection refused")
        self.writes.append(order_id)


def consumer_with(handler: Any, **settings: Any) -> tuple[EventConsumer, FakePublisher, Clock]:
    values: dict[str, Any] = {"consumer_backoff_initial_s": 0, "consumer_transient_retry_s": 900, **settings}
    publisher = FakePublisher()
    consumer = EventConsumer(broker=None, settings=UnitSettings(profile="development", **values), publisher=publisher)  # type: ignore[arg-type]
    consumer.on(OrderPlaced, handler)
    clock = Clock()
    consumer.clock = clock
    return consumer, publisher, clock


def delivery(consumer: EventConsumer, kafka: FakeKafkaConsumer, event_id: str = "e-1") -> Message:
    record = encode(order_placed(), service="cart", event_id=event_id)
    headers = [(k, v.encode()) for k, v in record.headers.items()]
    return Message(Raw("kasse.orders.v1", 3, 42, record.value, record.key.encode(), headers), kafka)


async def deliver(consumer: EventConsumer, message: Message) -> None:
    wanted = {OrderPlaced.event_type: OrderPlaced}
    await consumer._dispatch(message, wanted)


async def test_a_store_outage_longer_than_a_minute_pauses_the_partition_and_loses_nothing() -> None:
    store = FlakyStore()

    async def handler(event: OrderPlaced, ctx: EventContext) -> None:
        await store.write(event.order_id)

    consumer, publisher, clock = consumer_with(handler)
    kafka = FakeKafkaConsumer()
    deliveries = 0
    # Kafka delivers the record again after each seek back; the store stays down for 90 s.
    while True:
        message = delivery(consumer, kafka)
        await deliver(consumer, message)
        deliveries += 1
        if message.nacked == 0:
            break
        assert kafka.paused[-1] == (message.raw_message.topic, message.raw_message.partition)
        clock.now += 15
        if clock.now >= 1090:
            store.down = False
    assert publisher.dead == []
    assert len(store.writes) == 1
    assert clock.now - 1000 == 90  # the store was away for 90 s
    assert deliveries == 7  # six failed deliveries, 15 s apart, then the one that applied
    assert consumer.processed == 1 and consumer.transient_failures == 6
    assert len(kafka.paused) == 6
    assert consumer._retrying == {}  # nothing remembered once it applied


async def test_a_transient_failure_that_outlasts_the_retry_window_is_dead_lettered() -> None:
    async def handler(event: OrderPlaced, ctx: EventContext) -> None:
        raise AutoReconnect("connection closed")

    consumer, publisher, clock = consumer_with(handler, consumer_transient_retry_s=120)
    kafka = FakeKafkaConsumer()
    for _ in range(100):
        message = delivery(consumer, kafka)
        await deliver(consumer, message)
        if publisher.dead:
            break
        clock.now += 30
    ((topic, headers),) = publisher.dead
    assert topic == "kasse.dlq.unit"
    assert headers["kasse_dlq_error_type"] == "AutoReconnect"
    assert headers["kasse_dlq_attempts"] == "5"  # at 0, 30, 60, 90 s paused; at 120 s given up
    assert consumer.processed == 0


async def test_write_contention_is_transient_too() -> None:
    calls = 0

    async def handler(event: OrderPlaced, ctx: EventContext) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConcurrencyError("order changed since version 3")

    consumer, publisher, _ = consumer_with(handler)
    kafka = FakeKafkaConsumer()
    first = delivery(consumer, kafka)
    await deliver(consumer, first)
    assert first.nacked == 1 and len(kafka.paused) == 1
    second = delivery(consumer, kafka)
    await deliver(consumer, second)
    assert second.nacked == 0 and consumer.processed == 1 and publisher.dead == []


async def test_permanent_and_programming_errors_keep_the_attempts_then_dead_letter_path() -> None:
    calls = 0

    async def refuses(event: OrderPlaced, ctx: EventContext) -> None:
        nonlocal calls
        calls += 1
        raise PermanentError("unknown product")

    consumer, publisher, _ = consumer_with(refuses, consumer_max_attempts=4)
    message = delivery(consumer, FakeKafkaConsumer())
    await deliver(consumer, message)
    assert calls == 1 and message.nacked == 0
    assert publisher.dead[0][1]["kasse_dlq_error_type"] == "PermanentError"

    bugs = 0

    async def buggy(event: OrderPlaced, ctx: EventContext) -> None:
        nonlocal bugs
        bugs += 1
        raise KeyError("total")

    consumer, publisher, _ = consumer_with(buggy, consumer_max_attempts=4)
    await deliver(consumer, delivery(consumer, FakeKafkaConsumer()))
    assert bugs == 4
    assert publisher.dead[0][1]["kasse_dlq_attempts"] == "4"


async def test_a_cancelled_handler_is_not_retried_in_place() -> None:
    """The watchdog cancels a consumer that stalls: its handler must stop, not run again beside the new one."""
    calls = 0
    started = asyncio.Event()

    async def hangs(event: OrderPlaced, ctx: EventContext) -> None:
        nonlocal calls
        calls += 1
        started.set()
        await asyncio.Event().wait()  # a store call that never answers

    consumer, publisher, _ = consumer_with(hangs, consumer_max_attempts=2)
    message = delivery(consumer, FakeKafkaConsumer())
    handling = asyncio.create_task(deliver(consumer, message))
    await asyncio.wait_for(started.wait(), 5)
    handling.cancel()
    done, _ = await asyncio.wait([handling], timeout=5)
    assert done and handling.cancelled()
    assert calls == 1  # not called again after the cancellation
    assert message.nacked == 0 and publisher.dead == [] and consumer.processed == 0


async def test_retry_transient_lets_a_cancellation_through_whatever_it_retries() -> None:
    calls = 0

    async def cancelled() -> None:
        nonlocal calls
        calls += 1
        raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        await retry_transient(cancelled, what="x", attempts=5, initial_s=0, retry_on=lambda exc: True)
    assert calls == 1


def test_what_counts_as_transient() -> None:
    from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError, NotLeaderForPartitionError

    for exc in (
        AutoReconnect("x"),
        ServerSelectionTimeoutError("x"),
        ConcurrencyError("x"),
        KafkaConnectionError(),
        KafkaTimeoutError(),
        NotLeaderForPartitionError(),
        TimeoutError(),
        ConnectionRefusedError(),
    ):
        assert is_transient(exc), exc
    for exc in (ValueError("x"), KeyError("x"), PermanentError("x")):
        assert not is_transient(exc), exc
    try:
        try:
            raise AutoReconnect("down")
        except AutoReconnect as inner:
            raise RuntimeError("adapter failed") from inner
    except RuntimeError as wrapped:
        assert is_transient(wrapped)


def test_backoff_grows_exponentially_with_full_jitter_and_a_cap() -> None:
    for attempt, ceiling in ((1, 0.5), (2, 1.0), (3, 2.0), (7, 30.0), (30, 30.0)):
        delays = [backoff_delay(attempt, initial_s=0.5, max_s=30) for _ in range(200)]
        assert all(0 <= d <= ceiling for d in delays)
        assert max(delays) > ceiling / 2  # jittered over the whole range, not a constant
