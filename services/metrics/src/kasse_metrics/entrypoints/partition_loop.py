"""What the metrics service's two consumer loops (router and state stage) share: the operator's pause
switch, the ingest rate, "caught up" as of assignment, the lag per partition and the restart loop.

Each loop runs its own consumer (confluent-kafka with offsets in Kafka for the router, aiokafka with
offsets in Mongo for the state stage), so only `_consume` (and where the partitions' ends are read) differs.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import Any

from aiokafka import TopicPartition

log = logging.getLogger(__name__)


class PartitionLoop:
    #: How /readyz and the logs name this loop ("router catching up: …"); empty for the state stage.
    label = ""

    def __init__(self) -> None:
        # The loop's Kafka client: aiokafka's for the state stage, confluent-kafka's for the router.
        self.consumer: Any = None
        self.next_offsets: dict[tuple[str, int], int] = {}
        self.ends_at_assignment: dict[tuple[str, int], int] = {}
        self.records_total = 0
        self.facts_total = 0
        self._recent: deque[tuple[float, int]] = deque()
        self._unpaused = asyncio.Event()
        self._unpaused.set()
        self._parked = asyncio.Event()
        self._caught_up = False

    def _named(self, text: str) -> str:
        return f"{self.label} {text}" if self.label else text

    async def pause(self) -> None:
        """The operator's paused-consumer switch: stop reading (lag builds up).

        Returns once the loop has finished the batch in hand and stopped polling, so nothing published
        after the switch is counted until `resume`.
        """
        self._unpaused.clear()
        if self.consumer is not None:
            await asyncio.wait_for(self._parked.wait(), 30)

    async def resume(self) -> None:
        self._unpaused.set()

    async def _wait_while_paused(self) -> None:
        if not self._unpaused.is_set():
            self._parked.set()
            await self._unpaused.wait()
            self._parked.clear()

    def _count(self, records: int) -> None:
        self._recent.append((time.monotonic(), records))

    def events_per_second(self, horizon_s: float = 10.0) -> float:
        now = time.monotonic()
        while self._recent and self._recent[0][0] < now - horizon_s:
            self._recent.popleft()
        return sum(n for _, n in self._recent) / horizon_s

    def caught_up(self) -> str:
        """ "ok" once every assigned partition was read up to its end (as of its assignment); sticky."""
        if self._caught_up:
            return "ok"
        if self.consumer is None or not self.next_offsets:
            return self._named("catching up: no partitions assigned yet")
        behind = 0
        for tp, position in self.next_offsets.items():
            end = self.ends_at_assignment.get(tp)
            if end is None:
                return self._named("catching up: partition ends not known yet")
            behind += max(0, end - position)
        if behind:
            return self._named(f"catching up: {behind} records behind")
        self._caught_up = True
        log.info(self._named("caught up with its partitions"))
        return "ok"

    def lag(self) -> dict[tuple[str, int], int]:
        if self.consumer is None:
            return {}
        out = {}
        for tp, position in list(self.next_offsets.items()):
            high = self._highwater(tp)
            if high is not None:
                out[tp] = max(0, high - position)
        return out

    def _highwater(self, tp: tuple[str, int]) -> int | None:
        """The partition's end as this loop's client last saw it (aiokafka's; the router overrides it)."""
        assert self.consumer is not None
        high: int | None = self.consumer.highwater(TopicPartition(*tp))
        return high

    async def run(self) -> None:
        """Consume until cancelled; a broken connection restarts the consumer after a pause."""
        while True:
            try:
                await self._consume()
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception(self._named("consumer failed; restarting it").strip())
                await asyncio.sleep(2.0)

    async def _consume(self) -> None:
        raise NotImplementedError
