"""Work off the consumer's path: several aggregates' steps side by side, one at a time per aggregate.

An event handler only records what it was asked (one write) and schedules the aggregate here; the slow
part (several store round trips, an HTTP call) then runs up to `concurrency` aggregates at once, instead
of one after another inside the partition's consumer. With a burst of orders that serial chain was the
time to payment (issue 12): payment's screening and intents (20 orders took 129 s, 49 s of it waiting
for earlier orders), then catalog's stock reservations.

Nothing is lost in a crash, by the service's own design: the state saying what is still owed is stored
before the work is scheduled, and a resume job (a `DueWork` round) schedules whatever a stopped process
left. The job skips keys held here (`key in runner`): they are waiting for their turn, not interrupted.

Used by payment (Stripe steps per order) and catalog (stock reservations per order).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)


class StepRunner:
    def __init__(self, advance: Callable[[str], Awaitable[None]], concurrency: int, *, name: str = "steps") -> None:
        """`advance(key)` does whatever the stored state of `key` still owes; `name` names the tasks
        and the log lines."""
        self._advance = advance
        self._slots = asyncio.Semaphore(concurrency)
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._again: set[str] = set()  # asked again while running: run once more afterwards
        self.name = name

    def __contains__(self, key: object) -> bool:
        """Scheduled or running here (the resume job leaves it alone)."""
        return key in self._tasks

    def __len__(self) -> int:
        return len(self._tasks)

    def schedule(self, key: str) -> None:
        if key in self._tasks:
            self._again.add(key)
            return
        self._tasks[key] = asyncio.create_task(self._run(key), name=f"{self.name}-{key}")

    async def _run(self, key: str) -> None:
        try:
            while True:
                async with self._slots:
                    self._again.discard(key)  # asked before this run reads the state: it is covered
                    try:
                        await self._advance(key)
                    except Exception:
                        # Stored state says what is still owed; the resume job picks it up again.
                        log.exception("step failed; the resume job retries it", extra={"key": key, "runner": self.name})
                if key not in self._again:
                    return
        finally:
            self._tasks.pop(key, None)

    async def idle(self) -> None:
        """Wait until nothing is scheduled (tests)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks.values()), return_exceptions=True)

    async def stop(self) -> None:
        """Cancel what is under way (the resume job finishes it at the next start); bounded like the kit's
        jobs, since PyMongo can swallow a cancellation."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=2)
