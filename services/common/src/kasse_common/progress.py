"""Progress of the handler that runs now: how the consumer watchdog tells a slow handler from a stuck one.

A record's handling runs inside `handling(marks, key)`; anything the handler does that shows it is still
working calls `report_progress()`, which notes the time in `marks[key]` (per Kafka client). The kit's store
listener (`kasse_common.mongo.StoreCommands`) reports every store command that completes, so a handler that
writes and reads — slowly, under load, or through many steps — is seen working; one that waits for ever on
something that never answers reports nothing and is restarted after the stall window, as before.

A step that reports nothing while it lasts — one outbound HTTP call (Stripe, with the SDK's retries), a
carrier's API — runs inside `working(up_to_s)`: it counts as work for at most its own bound (its timeout),
so a handler slow on one long call is not restarted as stalled, while a call hung beyond its bound is.

Only while the handling lasts: tasks a handler started (they copy its context) stop counting once it returns.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator, MutableMapping
from contextlib import asynccontextmanager, contextmanager
from contextvars import ContextVar


class _Handling:
    __slots__ = ("active", "key", "marks")

    def __init__(self, marks: MutableMapping[int, float], key: int) -> None:
        self.marks = marks
        self.key = key
        self.active = True


_current: ContextVar[_Handling | None] = ContextVar("kasse_handling", default=None)


@contextmanager
def handling(marks: MutableMapping[int, float], key: int) -> Iterator[None]:
    """Progress reported inside this block (the handler's task and tasks it starts) goes to `marks[key]`."""
    current = _Handling(marks, key)
    token = _current.set(current)
    try:
        yield
    finally:
        current.active = False
        _current.reset(token)


def report_progress() -> None:
    """The handler running in this task is still working (a store command completed, a step done, ...)."""
    current = _current.get()
    if current is not None and current.active:
        current.marks[current.key] = time.monotonic()


@asynccontextmanager
async def working(up_to_s: float, *, every_s: float = 1.0) -> AsyncIterator[None]:
    """The block is work in progress for at most `up_to_s` (its own bound, e.g. the call's timeout).

    Progress is reported when it starts, every `every_s` while it lasts (until `up_to_s` has passed) and
    when it ends. Outside a record's handling it does nothing.
    """
    current = _current.get()
    if current is None or not current.active:
        yield
        return
    report_progress()
    ticker = asyncio.create_task(_tick(current, time.monotonic() + up_to_s, every_s))
    try:
        yield
    finally:
        ticker.cancel()
        report_progress()


async def _tick(current: _Handling, until: float, every_s: float) -> None:
    while (left := until - time.monotonic()) > 0:
        await asyncio.sleep(min(every_s, left))
        if current.active:
            current.marks[current.key] = time.monotonic()
