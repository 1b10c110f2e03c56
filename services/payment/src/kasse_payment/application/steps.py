"""Stripe work off the consumer's path: several orders' steps side by side, one at a time per order.

An event handler only records what happened (one write) and asks for the order to be advanced; the
screening and the Stripe calls (several store round trips and an HTTP call each) then run here, up to
`concurrency` orders at once, instead of one order after another inside the partition's consumer — with a
burst of orders that serial chain was the time between an order and its PaymentIntent (issue 12: 20 orders
took 129 s to reach payment, 49 s of it waiting for earlier orders' screening and intents).

Nothing is lost in a crash: the state saying what is owed to Stripe (`needs_work`) is stored before the
work is scheduled, and the sweeper resumes whatever a stopped process left.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)


class StepRunner:
    def __init__(self, advance: Callable[[str], Awaitable[None]], concurrency: int) -> None:
        self._advance = advance
        self._slots = asyncio.Semaphore(concurrency)
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._again: set[str] = set()  # asked again while running: run once more afterwards

    def __contains__(self, order_id: object) -> bool:
        """Scheduled or running here (the sweeper leaves it alone)."""
        return order_id in self._tasks

    def schedule(self, order_id: str) -> None:
        if order_id in self._tasks:
            self._again.add(order_id)
            return
        self._tasks[order_id] = asyncio.create_task(self._run(order_id), name=f"payment-steps-{order_id}")

    async def _run(self, order_id: str) -> None:
        try:
            while True:
                async with self._slots:
                    self._again.discard(order_id)  # asked before this run reads the state: it is covered
                    try:
                        await self._advance(order_id)
                    except Exception:
                        # Stored state says what is still owed; the sweeper picks it up again.
                        log.exception("advancing a payment failed", extra={"order_id": order_id})
                if order_id not in self._again:
                    return
        finally:
            self._tasks.pop(order_id, None)

    async def idle(self) -> None:
        """Wait until nothing is scheduled (tests)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks.values()), return_exceptions=True)

    async def stop(self) -> None:
        """Cancel what is under way (the sweeper resumes it at the next start); bounded like the kit's jobs,
        since PyMongo can swallow a cancellation."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=2)
