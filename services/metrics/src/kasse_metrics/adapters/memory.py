"""In-memory fakes of the ports, for unit tests."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from kasse_metrics.application.ingest import RawRecord, TopicPartition
from kasse_metrics.domain.facts import Fact, Position


class InMemoryFactStore:
    def __init__(self) -> None:
        self.facts: dict[str, Fact] = {}
        self.offsets: dict[TopicPartition, int] = {}

    async def add(self, facts: Sequence[Fact]) -> dict[str, Position]:
        stored_before = {}
        for f in facts:
            if f.event_id in self.facts:
                stored_before[f.event_id] = self.facts[f.event_id].position
            else:
                self.facts[f.event_id] = f
        return stored_before

    async def raise_offsets(self, next_offsets: Mapping[TopicPartition, int]) -> None:
        for tp, offset in next_offsets.items():
            self.offsets[tp] = max(self.offsets.get(tp, 0), offset)

    async def committed_offsets(self) -> dict[TopicPartition, int]:
        return dict(self.offsets)

    async def read(self, tp: TopicPartition, start: int, end: int) -> list[Fact]:
        found = [
            f
            for f in self.facts.values()
            if (f.position.topic, f.position.partition) == tp and start <= f.position.offset < end
        ]
        return sorted(found, key=lambda f: f.position.offset)


class RecordingDeadLetters:
    def __init__(self) -> None:
        self.sent: list[tuple[RawRecord, Exception]] = []

    async def send(self, record: RawRecord, error: Exception) -> None:
        self.sent.append((record, error))
