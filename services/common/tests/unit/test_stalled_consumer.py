"""The watchdog's stall check: a running consumer that hands over nothing while records wait is stalled."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiokafka import TopicPartition

from kasse_common.runtime import GroupMark, Verdict, force_stop, judge_subscribers, stalled_subscribers

pytestmark = pytest.mark.unit

TP0, TP1 = TopicPartition("orders", 0), TopicPartition("orders", 1)


@dataclass
class FakeClient:
    ends: dict[TopicPartition, int]
    positions: dict[TopicPartition, int]
    paused_tps: set[TopicPartition] = field(default_factory=set)
    broker_away: bool = False
    committed_offsets: dict[TopicPartition, int | None] = field(default_factory=dict)  # else = position
    assigned: set[TopicPartition] | None = None  # else every partition of `ends`
    _closed: bool = False

    def assignment(self) -> set[TopicPartition]:
        return set(self.ends) if self.assigned is None else self.assigned

    def paused(self) -> set[TopicPartition]:
        return self.paused_tps

    def partitions_for_topic(self, topic: str) -> set[int]:
        return {tp.partition for tp in self.ends if tp.topic == topic}

    async def end_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        if self.broker_away:
            raise ConnectionError("broker away")
        return {tp: self.ends[tp] for tp in tps}

    async def beginning_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: 0 for tp in tps}

    async def position(self, tp: TopicPartition) -> int:
        return self.positions[tp]

    async def committed(self, tp: TopicPartition) -> int | None:
        return self.committed_offsets.get(tp, self.positions.get(tp))


@dataclass
class FakeSubscriber:
    consumer: Any
    topic_names: tuple[str, ...] = ("orders",)


async def stalled_after(client: FakeClient, quiet_s: float, *, broker_answers: bool = True) -> bool:
    """Is the subscriber of `client`, quiet for `quiet_s`, stalled (window 60 s)?"""

    async def reachable() -> bool:
        return broker_answers

    last = {id(client): time.monotonic() - quiet_s}
    sub = FakeSubscriber(client)
    found = await stalled_subscribers([sub], last, stall_s=60, broker_reachable=reachable)
    return found == [sub]


async def test_records_waiting_and_nothing_handed_over_for_the_window_is_a_stall() -> None:
    assert await stalled_after(FakeClient(ends={TP0: 10, TP1: 4}, positions={TP0: 3, TP1: 4}), 61)


async def test_not_a_stall_when_recently_active_caught_up_paused_on_purpose_or_the_broker_is_away() -> None:
    assert not await stalled_after(FakeClient(ends={TP0: 10}, positions={TP0: 3}), 5)
    assert not await stalled_after(FakeClient(ends={TP0: 10, TP1: 4}, positions={TP0: 10, TP1: 4}), 600)
    # a transient retry waits on a paused partition
    assert not await stalled_after(FakeClient(ends={TP0: 10}, positions={TP0: 3}, paused_tps={TP0}), 600)
    # the broker is away for everybody: readiness says so, restarting cannot help
    away = FakeClient(ends={TP0: 10}, positions={TP0: 3}, broker_away=True)
    assert not await stalled_after(away, 600, broker_answers=False)


async def test_a_quiet_client_that_cannot_answer_while_the_broker_answers_others_is_stalled() -> None:
    assert await stalled_after(FakeClient(ends={TP0: 10}, positions={TP0: 3}, broker_away=True), 61)


async def test_a_client_never_seen_gets_the_whole_window_from_the_first_look() -> None:
    client = FakeClient(ends={TP0: 10}, positions={TP0: 3})
    window: dict[int, float] = {}

    async def reachable() -> bool:
        return True

    sub = FakeSubscriber(client)
    assert await stalled_subscribers([sub], {}, stall_s=60, broker_reachable=reachable, window_from=window) == []
    assert id(client) in window
    window[id(client)] -= 61
    assert await stalled_subscribers([sub], {}, stall_s=60, broker_reachable=reachable, window_from=window) == [sub]


async def test_a_subscriber_whose_stop_hangs_on_a_handler_is_stopped_anyway() -> None:
    class Client:
        stopped = False

        async def stop(self) -> None:
            self.stopped = True

    class HangingSubscriber:
        def __init__(self) -> None:
            self.consumer = Client()
            self.tasks = [asyncio.create_task(asyncio.Event().wait())]  # a handler that never returns

        async def stop(self) -> None:
            await asyncio.Event().wait()  # FastStream waits for the message in flight

    sub = HangingSubscriber()
    await force_stop(sub, timeout_s=0.2)
    assert sub.tasks[0].cancelled() and sub.consumer.stopped


async def test_a_handler_that_never_returns_on_the_last_record_is_a_stall() -> None:
    # The record at offset 9 was fetched (position 10 = the end) but never committed.
    hung = FakeClient(ends={TP0: 10}, positions={TP0: 10}, committed_offsets={TP0: 9})
    assert await stalled_after(hung, 61)
    assert not await stalled_after(hung, 5)


async def verdict_of(client: FakeClient, quiet_s: float, marks: dict[int, GroupMark]) -> Verdict:
    async def reachable() -> bool:
        return True

    sub = FakeSubscriber(client)
    last = {id(client): time.monotonic() - quiet_s}
    return (await judge_subscribers([sub], last, stall_s=60, broker_reachable=reachable, group_marks=marks))[id(sub)]


async def test_a_consumer_without_partitions_while_the_group_does_not_move_on_waiting_records_is_a_stall() -> None:
    # Lost its membership: no partition, records wait beyond the group's committed offsets.
    lost = FakeClient(ends={TP0: 10, TP1: 4}, positions={}, committed_offsets={TP0: 3, TP1: None}, assigned=set())
    marks: dict[int, GroupMark] = {}
    assert await verdict_of(lost, 61, marks) is Verdict.UNDECIDED  # first look: remember the offsets
    assert marks[id(lost)].committed == {TP0: 3, TP1: 0}
    marks[id(lost)].since -= 61  # a window later, unchanged
    assert await verdict_of(lost, 122, marks) is Verdict.STALLED


async def test_a_consumer_without_partitions_is_left_alone_while_others_work_the_records_off() -> None:
    # More members than partitions: this one idles while another consumes (the committed offset moves).
    idle = FakeClient(ends={TP0: 10}, positions={}, committed_offsets={TP0: 3}, assigned=set())
    marks = {id(idle): GroupMark({TP0: 2}, time.monotonic() - 600)}
    assert await verdict_of(idle, 600, marks) is Verdict.UNDECIDED
    assert marks[id(idle)].committed == {TP0: 3}  # the window starts again
    caught_up = FakeClient(ends={TP0: 10}, positions={}, committed_offsets={TP0: 10}, assigned=set())
    assert await verdict_of(caught_up, 600, {}) is Verdict.CAUGHT_UP


async def test_the_window_runs_only_while_the_broker_answers() -> None:
    """After a broker outage longer than the window, a consumer gets the whole window to rejoin."""
    client = FakeClient(ends={TP0: 10}, positions={TP0: 3})
    sub = FakeSubscriber(client)
    answers = False

    async def reachable() -> bool:
        return answers

    last = {id(client): time.monotonic() - 600}
    window: dict[int, float] = {}
    assert await stalled_subscribers([sub], last, 60, reachable, window_from=window) == []
    answers = True  # the broker is back: the window started again while it was away
    assert await stalled_subscribers([sub], last, 60, reachable, window_from=window) == []
    window[id(client)] -= 61
    assert await stalled_subscribers([sub], last, 60, reachable, window_from=window) == [sub]


async def test_a_caught_up_consumer_is_looked_at_again_only_a_window_later() -> None:
    client = FakeClient(ends={TP0: 10}, positions={TP0: 10})
    sub = FakeSubscriber(client)

    async def reachable() -> bool:
        return True

    last = {id(client): time.monotonic() - 61}
    window: dict[int, float] = {}
    assert (await judge_subscribers([sub], last, 60, reachable, window_from=window))[id(sub)] is Verdict.CAUGHT_UP
    client.ends[TP0] = 11  # a record arrives; a healthy consumer has a whole window to hand it over
    assert (await judge_subscribers([sub], last, 60, reachable, window_from=window))[id(sub)] is Verdict.UNDECIDED
