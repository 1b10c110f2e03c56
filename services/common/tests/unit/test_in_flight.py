"""A lane's records in hand (`InFlight`): keys side by side, one key in order, batched offset commits.

Drives `InFlight` with a fake Kafka client (assignment, commit, pause, seek) and handlers the test
holds and releases with events: every assertion waits for the condition it checks, no timing.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from pydantic_settings import SettingsConfigDict
from pymongo.errors import AutoReconnect

from kasse_common.envelope import encode
from kasse_common.messaging import EventConsumer, EventContext, InFlight
from kasse_common.settings import ServiceSettings
from kasse_contracts.events import OrderPlaced
from kasse_testkit import wait_until
from kasse_testkit.samples import order_placed

pytestmark = pytest.mark.unit

TP = TopicPartition("kasse.orders.v1", 3)
OTHER = TopicPartition("kasse.orders.v1", 4)


@dataclass
class FakeClient:
    """What InFlight uses of an AIOKafkaConsumer."""

    assigned: set[TopicPartition] = field(default_factory=lambda: {TP, OTHER})
    commits: list[dict[TopicPartition, int]] = field(default_factory=list)
    paused_tps: list[TopicPartition] = field(default_factory=list)
    seeks: list[tuple[TopicPartition, int]] = field(default_factory=list)

    def assignment(self) -> set[TopicPartition]:
        return set(self.assigned)

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.commits.append(dict(offsets))

    def pause(self, *tps: TopicPartition) -> None:
        self.paused_tps.extend(tps)

    def resume(self, *tps: TopicPartition) -> None:
        pass

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.seeks.append((tp, offset))

    def committed(self, tp: TopicPartition) -> int | None:
        last = [c[tp] for c in self.commits if tp in c]
        return last[-1] if last else None


async def eventually(condition: Any) -> None:
    await wait_until(condition, timeout=30, interval=0.01)


class Gates:
    """Handlers that wait until the test opens their gate; records what ran, in order."""

    def __init__(self) -> None:
        self.gates: dict[int, asyncio.Event] = {}
        self.started: list[int] = []
        self.done: list[int] = []
        self.running = 0
        self.most_running = 0

    def work(self, offset: int, hold: bool = False) -> Any:
        gate = self.gates.setdefault(offset, asyncio.Event())
        if not hold:
            gate.set()

        async def run() -> None:
            self.started.append(offset)
            self.running += 1
            self.most_running = max(self.most_running, self.running)
            try:
                await gate.wait()
            finally:
                self.running -= 1
            self.done.append(offset)

        return run

    def release(self, offset: int) -> None:
        self.gates[offset].set()


def flow_for(client: FakeClient, concurrency: int = 16) -> InFlight:
    # The interval only matters for the background flusher, which these tests do not start: they commit.
    return InFlight(client, concurrency=concurrency, interval_s=3600)


async def test_a_batch_commit_never_goes_past_a_record_still_in_hand() -> None:
    client = FakeClient()
    flow = flow_for(client)
    gates = Gates()
    await flow.admit(TP, 10, b"order-a", gates.work(10))
    await flow.admit(TP, 11, b"order-b", gates.work(11, hold=True))
    await flow.admit(TP, 12, b"order-c", gates.work(12))
    await eventually(lambda: sorted(gates.done) == [10, 12])

    await flow.commit()
    assert client.commits == [{TP: 11}]  # 12 is done, but 11 is not: nothing past 11

    await flow.commit()
    assert client.commits == [{TP: 11}]  # nothing new: no broker round trip

    gates.release(11)
    await eventually(lambda: 11 in gates.done)
    await flow.commit()
    assert client.commits[-1] == {TP: 13}


async def test_records_of_one_key_are_handled_in_offset_order_other_keys_side_by_side() -> None:
    client = FakeClient()
    flow = flow_for(client)
    gates = Gates()
    # Key A: 20, 22, 24 (20 held); key B: 21, 23 on the same partition; key C on another partition.
    await flow.admit(TP, 20, b"A", gates.work(20, hold=True))
    await flow.admit(TP, 21, b"B", gates.work(21, hold=True))
    await flow.admit(TP, 22, b"A", gates.work(22))
    await flow.admit(TP, 23, b"B", gates.work(23))
    await flow.admit(TP, 24, b"A", gates.work(24))
    await flow.admit(OTHER, 5, b"C", gates.work(5))
    await eventually(lambda: 5 in gates.done and set(gates.started) >= {20, 21})
    assert 22 not in gates.started and 24 not in gates.started  # behind A's 20, still held
    assert 23 not in gates.started  # behind B's 21
    assert gates.most_running >= 2  # A and B at once

    gates.release(21)
    await eventually(lambda: 23 in gates.done)
    assert 22 not in gates.started
    gates.release(20)
    await eventually(lambda: len(gates.done) == 6)
    a = [o for o in gates.done if o in (20, 22, 24)]
    assert a == [20, 22, 24]
    await flow.commit()
    assert client.commits[-1] == {TP: 25, OTHER: 6}


async def test_the_lane_takes_no_more_than_its_concurrency() -> None:
    client = FakeClient()
    flow = flow_for(client, concurrency=2)
    gates = Gates()
    await flow.admit(TP, 0, b"A", gates.work(0, hold=True))
    await flow.admit(TP, 1, b"B", gates.work(1, hold=True))
    third = asyncio.create_task(flow.admit(TP, 2, b"C", gates.work(2)))
    await eventually(lambda: len(gates.started) == 2)
    assert not third.done()  # the consume loop waits: the client does not run ahead
    gates.release(0)
    await asyncio.wait_for(third, 10)
    await eventually(lambda: 2 in gates.done)
    gates.release(1)
    await eventually(lambda: len(gates.done) == 3)
    assert gates.most_running == 2


async def test_revoked_partitions_commit_the_work_done_and_nothing_past_a_record_not_started() -> None:
    client = FakeClient()
    flow = flow_for(client)
    gates = Gates()
    await flow.admit(TP, 30, b"A", gates.work(30))
    await flow.admit(TP, 31, b"B", gates.work(31, hold=True))  # running when the revoke comes
    await flow.admit(TP, 32, b"B", gates.work(32))  # queued behind 31: not started at the revoke
    await flow.admit(OTHER, 7, b"C", gates.work(7))
    await eventually(lambda: 30 in gates.done and 7 in gates.done and 31 in gates.started)

    revoke = asyncio.create_task(flow.hand_back({TP, OTHER}, timeout_s=30))
    await eventually(lambda: TP in flow.partitions and flow.partitions[TP].closed)
    assert not revoke.done()  # waits for the record in hand
    gates.release(31)
    await asyncio.wait_for(revoke, 10)
    # 30 and 31 done and committed; 32 was not started here: its next owner starts at it.
    assert client.commits == [{TP: 32, OTHER: 8}]
    assert 32 not in gates.started
    assert all(part.closed for part in flow.partitions.values())  # until the group assigns them again


async def test_stop_lets_records_finish_commits_them_and_cancels_a_hung_one() -> None:
    client = FakeClient()
    flow = flow_for(client)
    gates = Gates()
    await flow.admit(TP, 40, b"A", gates.work(40))
    await flow.admit(TP, 41, b"B", gates.work(41, hold=True))  # never released: hangs
    await eventually(lambda: 40 in gates.done and 41 in gates.started)
    await flow.stop(timeout_s=0.2)
    assert client.commits == [{TP: 41}]  # 40 committed, the hung 41 comes again
    assert 41 not in gates.done
    assert not await flow.admit(TP, 42, b"C", gates.work(42))  # a stopping lane takes nothing more


# -- with the consumer's dispatch: a transient failure rewinds the partition ------------------------


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
class Message:
    raw_message: Raw
    consumer: Any


class NoDeadLetters:
    async def publish_raw(self, topic: str, value: bytes | None, key: bytes | None, headers: dict[str, str]) -> None:
        raise AssertionError("nothing may be dead-lettered here")


def record(client: FakeClient, offset: int, order_id: str) -> Message:
    out = encode(order_placed(order_id=order_id), service="cart", event_id=f"e-{offset}")
    headers = [(k, v.encode()) for k, v in out.headers.items()]
    return Message(Raw(TP.topic, TP.partition, offset, out.value, out.key.encode(), headers), client)


async def test_a_transient_failure_rewinds_its_partition_and_nothing_from_it_on_is_committed() -> None:
    store_down = True
    handled: list[int] = []
    release_other = asyncio.Event()

    async def handler(event: OrderPlaced, ctx: EventContext) -> None:
        if event.order_id == "ord-a" and store_down:
            raise AutoReconnect("connection closed")
        if event.order_id == "ord-b":
            await release_other.wait()
        handled.append(ctx.offset)

    settings = UnitSettings(profile="development", consumer_backoff_initial_s=0, consumer_transient_retry_s=900)
    consumer = EventConsumer(broker=None, settings=settings, publisher=NoDeadLetters())  # type: ignore[arg-type]
    consumer.on(OrderPlaced, handler)
    wanted = {OrderPlaced.event_type: OrderPlaced}
    client = FakeClient()
    flow = consumer.in_flight[id(client)] = flow_for(client)

    async def admit(offset: int, order_id: str) -> None:
        message = record(client, offset, order_id)
        await flow.admit(TP, offset, message.raw_message.key, lambda: consumer._dispatch(message, wanted))

    await admit(50, "ord-b")  # another order, still running when 51 fails
    await admit(51, "ord-a")  # fails: the store is away
    await admit(52, "ord-a")  # the same order's next record: must wait for 51's retry
    await eventually(lambda: client.seeks == [(TP, 51)])
    assert client.paused_tps == [TP]
    release_other.set()
    await eventually(lambda: not flow.tasks)
    assert handled == [50]  # 52 was not handled before 51
    await flow.commit()
    assert client.commits == [{TP: 51}]

    # Kafka delivers again from 51 once the partition is resumed; the store is back.
    store_down = False
    await admit(51, "ord-a")
    await admit(52, "ord-a")
    await eventually(lambda: not flow.tasks)
    assert handled == [50, 51, 52]
    await flow.commit()
    assert client.commits[-1] == {TP: 53}
    assert consumer.processed == 3 and consumer.transient_failures == 1


async def test_after_settle_the_consume_loop_hands_over_records_that_are_not_taken() -> None:
    """Between `settle` (stop: records in hand finish and are committed) and the subscriber's own stop, the
    consume loop may still hand over records: they are not taken (never committed, they come again)."""
    handled: list[int] = []

    async def handler(event: OrderPlaced, ctx: EventContext) -> None:
        handled.append(ctx.offset)

    settings = UnitSettings(profile="development")
    consumer = EventConsumer(broker=None, settings=settings, publisher=NoDeadLetters())  # type: ignore[arg-type]
    consumer.on(OrderPlaced, handler)
    wanted = {OrderPlaced.event_type: OrderPlaced}
    client = AIOKafkaConsumer(bootstrap_servers="127.0.0.1:9")  # never started: nothing sent
    client.assign([TP])
    try:
        await consumer._take(record(client, 60, "ord-1"), wanted)  # type: ignore[arg-type]
        await eventually(lambda: handled == [60])
        await consumer.settle(client, timeout_s=5)
        await consumer._take(record(client, 61, "ord-2"), wanted)  # type: ignore[arg-type]
        flow = consumer.in_flight[id(client)]
        assert flow.closing and not flow.tasks and handled == [60]
    finally:
        await client.stop()


async def test_a_record_fetched_before_its_partition_was_rewound_is_not_taken() -> None:
    """The consume loop waited for a slot with the next record while the one before it failed transiently and
    rewound the partition: that record comes again after the rewound one; taken now, it would run before it and
    let the commit pass the rewound record."""
    handled: list[int] = []
    failing = asyncio.Event()
    store_down = True

    async def handler(event: OrderPlaced, ctx: EventContext) -> None:
        if event.order_id == "ord-a" and store_down:
            await failing.wait()
            raise AutoReconnect("connection closed")
        handled.append(ctx.offset)

    settings = UnitSettings(profile="development", consumer_backoff_initial_s=0, consumer_transient_retry_s=900)
    consumer = EventConsumer(broker=None, settings=settings, publisher=NoDeadLetters())  # type: ignore[arg-type]
    consumer.on(OrderPlaced, handler)
    wanted = {OrderPlaced.event_type: OrderPlaced}
    client = FakeClient()
    flow = consumer.in_flight[id(client)] = flow_for(client, concurrency=1)

    def admit(offset: int, order_id: str) -> Any:
        message = record(client, offset, order_id)
        return flow.admit(TP, offset, message.raw_message.key, lambda: consumer._dispatch(message, wanted))

    assert await admit(70, "ord-a")
    waiting = asyncio.create_task(admit(71, "ord-a"))  # the loop waits for the one slot with 71 in hand
    await eventually(lambda: flow.slots.locked())
    failing.set()  # 70 fails: rewound to 70, paused
    assert await asyncio.wait_for(waiting, 10) is False  # 71 is not taken
    await eventually(lambda: not flow.tasks)
    assert client.seeks == [(TP, 70)] and handled == []
    await flow.commit()
    assert client.commits == [{TP: 70}]

    store_down = False  # Kafka delivers 70 and 71 again, in order
    assert await admit(70, "ord-a")
    assert await admit(71, "ord-a")
    await eventually(lambda: handled == [70, 71])
    await flow.commit()
    assert client.commits[-1] == {TP: 72}


async def test_a_record_held_while_its_partition_was_revoked_is_not_taken() -> None:
    client = FakeClient()
    flow = flow_for(client, concurrency=1)
    gates = Gates()
    await flow.admit(TP, 80, b"A", gates.work(80, hold=True))
    waiting = asyncio.create_task(flow.admit(TP, 81, b"B", gates.work(81)))  # held by the loop, no slot
    await eventually(lambda: flow.slots.locked() and 80 in gates.started)
    revoke = asyncio.create_task(flow.hand_back({TP}, timeout_s=30))
    await eventually(lambda: flow.partitions[TP].closed)
    client.assigned.discard(TP)  # the new assignment no longer has it
    gates.release(80)
    await asyncio.wait_for(revoke, 10)
    assert await asyncio.wait_for(waiting, 10) is False
    assert 81 not in gates.started and flow.partitions[TP].closed


async def test_records_handed_over_while_the_revoke_runs_are_not_taken_nor_let_its_commit_pass_what_it_gave_back() -> (
    None
):
    """The chaos run's six lost ShipmentDelivered: while the revoke waited for a record in hand, the consume loop
    went on handing over records it had fetched (the assignment changes only after the revoke). They were
    taken into a new record of the partition, handled, and the revoke committed past the records it had
    given back unhandled (queued behind the one in hand): nothing delivered them again."""
    client = FakeClient()
    flow = flow_for(client)
    gates = Gates()
    await flow.admit(TP, 20, b"order-1", gates.work(20, hold=True))  # ShipmentDispatched, in hand
    await flow.admit(TP, 21, b"order-1", gates.work(21))  # ShipmentDelivered, queued behind it
    await eventually(lambda: 20 in gates.started)
    revoke = asyncio.create_task(flow.hand_back({TP, OTHER}, timeout_s=30))
    await eventually(lambda: flow.partitions[TP].closed)

    assert await flow.admit(TP, 22, b"order-2", gates.work(22)) is False  # fetched before the revoke
    gates.release(20)
    await asyncio.wait_for(revoke, 10)

    assert 21 not in gates.started and 22 not in gates.started
    assert client.committed(TP) == 21  # its next owner starts at the record given back
    await flow.commit()  # the lane's next batch commit: nothing of the handed-back partition
    assert client.committed(TP) == 21


async def test_a_record_held_across_a_rebalance_is_not_taken_and_the_partition_starts_again_where_committed() -> None:
    """The consume loop waited for a slot with a record while the group rebalanced and gave this lane the same
    partition again: the client fetches it again from the committed offset, so the held record is not taken
    (taken, it would start the partition's records in hand past the ones between)."""
    client = FakeClient()
    flow = flow_for(client, concurrency=1)
    gates = Gates()
    await flow.admit(TP, 40, b"A", gates.work(40, hold=True))
    held = asyncio.create_task(flow.admit(TP, 45, b"B", gates.work(45)))  # no slot: the loop waits with it
    await eventually(lambda: flow.slots.locked() and 40 in gates.started)
    revoke = asyncio.create_task(flow.hand_back({TP, OTHER}, timeout_s=30))
    await eventually(lambda: flow.partitions[TP].closed)
    gates.release(40)
    await asyncio.wait_for(revoke, 10)
    flow.reassigned({TP, OTHER})  # the same partitions again

    assert await asyncio.wait_for(held, 10) is False
    assert 45 not in gates.started
    # The client's fetch starts again at the committed offset: those records are taken, in order.
    assert client.committed(TP) == 41
    for offset in (41, 42):
        assert await flow.admit(TP, offset, b"C", gates.work(offset))
    await eventually(lambda: 42 in gates.done)
    await flow.commit()
    assert client.committed(TP) == 43
