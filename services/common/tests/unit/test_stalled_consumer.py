"""The watchdog's stall check: a running consumer that hands over nothing while records wait is stalled."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiokafka import TopicPartition

from kasse_common.runtime import force_stop, stalled_subscribers

pytestmark = pytest.mark.unit

TP0, TP1 = TopicPartition("orders", 0), TopicPartition("orders", 1)


@dataclass
class FakeClient:
    ends: dict[TopicPartition, int]
    positions: dict[TopicPartition, int]
    paused_tps: set[TopicPartition] = field(default_factory=set)
    broker_away: bool = False
    _closed: bool = False

    def assignment(self) -> set[TopicPartition]:
        return set(self.ends)

    def paused(self) -> set[TopicPartition]:
        return self.paused_tps

    async def end_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        if self.broker_away:
            raise ConnectionError("broker away")
        return {tp: self.ends[tp] for tp in tps}

    async def position(self, tp: TopicPartition) -> int:
        return self.positions[tp]


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
    seen: dict[int, float] = {}

    async def reachable() -> bool:
        return True

    assert await stalled_subscribers([FakeSubscriber(client)], seen, stall_s=60, broker_reachable=reachable) == []
    assert id(client) in seen


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
