"""Progress of the handler that runs now: how the consumer watchdog tells a slow handler from a stuck one.

A record's handling runs inside `handling(marks, key)`; anything the handler does that shows it is still
working calls `report_progress()`, which notes the time in `marks[key]` (per Kafka client). The kit's store
listener (`kasse_common.mongo.StoreCommands`) reports every store command that completes, so a handler that
writes and reads — slowly, under load, or through many steps — is seen working; one that waits for ever on
something that never answers reports nothing and is restarted after the stall window, as before.

Only while the handling lasts: tasks a handler started (they copy its context) stop counting once it returns.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
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
