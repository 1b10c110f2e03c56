"""The kit's StepRunner: keys side by side up to the bound, never one key twice at once (payment, catalog)."""

from __future__ import annotations

import asyncio

import pytest

from kasse_common.steps import StepRunner
from kasse_testkit import wait_until

pytestmark = pytest.mark.unit


async def test_orders_advance_side_by_side_up_to_the_bound_and_one_order_never_twice_at_once() -> None:
    running: set[str] = set()
    peak = 0
    calls: list[str] = []
    release = asyncio.Event()

    async def advance(order_id: str) -> None:
        nonlocal peak
        assert order_id not in running, "one order advanced twice at the same time"
        running.add(order_id)
        peak = max(peak, len(running))
        calls.append(order_id)
        await release.wait()
        running.discard(order_id)

    runner = StepRunner(advance, concurrency=3)
    for n in range(5):
        runner.schedule(f"o{n}")
    await wait_until(lambda: len(running) == 3, timeout=5)
    runner.schedule("o0")  # asked again while running: once more afterwards, never beside itself
    runner.schedule("o4")  # asked again before its turn came: the coming run covers it
    assert "o0" in runner
    release.set()
    await runner.idle()
    assert peak == 3
    assert sorted(calls) == ["o0", "o0", "o1", "o2", "o3", "o4"]
    assert "o0" not in runner


async def test_a_failed_step_is_logged_and_the_others_go_on() -> None:
    done: list[str] = []

    async def advance(order_id: str) -> None:
        if order_id == "bad":
            raise RuntimeError("store away")
        done.append(order_id)

    runner = StepRunner(advance, concurrency=2)
    runner.schedule("bad")
    runner.schedule("good")
    await runner.idle()
    assert done == ["good"] and "bad" not in runner


async def test_stop_cancels_what_is_under_way() -> None:
    started = asyncio.Event()

    async def advance(order_id: str) -> None:
        started.set()
        await asyncio.Event().wait()

    runner = StepRunner(advance, concurrency=1)
    runner.schedule("o1")
    await started.wait()
    await runner.stop()
    assert "o1" not in runner
