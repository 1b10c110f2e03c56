"""A step that reports nothing of its own (one long outbound call) counts as work, up to its own bound."""

from __future__ import annotations

import asyncio
import time

import pytest

from kasse_common.progress import _tick, handling, working
from kasse_testkit import wait_until

pytestmark = pytest.mark.unit


class Marks(dict[int, float]):
    """The consumer's progress marks (per Kafka client), each report kept."""

    def __init__(self) -> None:
        super().__init__()
        self.reports: list[float] = []

    def __setitem__(self, key: int, value: float) -> None:
        self.reports.append(value)
        super().__setitem__(key, value)


def tickers() -> list[asyncio.Task[None]]:
    return [t for t in asyncio.all_tasks() if getattr(t.get_coro(), "__qualname__", "") == _tick.__qualname__]


async def test_a_long_call_reports_progress_while_it_lasts_and_no_longer_than_its_bound() -> None:
    marks, answered = Marks(), asyncio.Event()

    async def long_call() -> str:
        async with working(0.5, every_s=0.02):
            await answered.wait()  # the remote side takes its time
        return "ok"

    with handling(marks, 7):  # as the consumer runs a record's handler (the call in a task it started)
        call = asyncio.create_task(long_call())
        await wait_until(lambda: len(marks.reports) >= 4, timeout=30, message="no progress while the call lasted")
        assert set(marks) == {7}
        # Past its bound the call reports nothing more (a call hung beyond its timeout is a stall again) ...
        await wait_until(lambda: not tickers(), timeout=30, message="still reporting past the bound")
        reported = len(marks.reports)
        assert not call.done()
        # ... and its end is progress again.
        answered.set()
        assert await call == "ok"
        assert len(marks.reports) == reported + 1


async def test_outside_a_records_handling_nothing_is_reported() -> None:
    marks = Marks()
    with handling(marks, 1):
        pass  # the handling is over
    started = time.monotonic()
    async with working(5, every_s=0.01):
        assert not tickers()
    assert marks.reports == [] and time.monotonic() - started < 5
