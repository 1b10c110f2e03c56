"""In-memory fakes of the metrics ports, for the unit tests (test fakes live in tests, never in src/)."""

from __future__ import annotations

from collections.abc import Sequence

from kasse_metrics.application.ingest import RawRecord, Segment, TopicPartition
from kasse_metrics.domain.facts import Fact


class InMemoryCheckpointStore:
    def __init__(self) -> None:
        self.segments: list[Segment] = []
        self.offsets: dict[TopicPartition, int] = {}
        self.fail_next_write = False  # the store is down: nothing written
        self.crash_before_offsets = False  # the segments written, the offsets not

    async def write(self, segments: Sequence[Segment]) -> None:
        if self.fail_next_write:
            self.fail_next_write = False
            raise ConnectionError("store unavailable")
        self.segments.extend(segments)
        if self.crash_before_offsets:
            self.crash_before_offsets = False
            raise ConnectionError("lost between the segments and the offsets")
        for s in segments:
            self.offsets[s.tp] = max(self.offsets.get(s.tp, 0), s.end)

    async def committed_offsets(self) -> dict[TopicPartition, int]:
        return dict(self.offsets)

    async def read(self, tp: TopicPartition, start: int, end: int) -> list[Fact]:
        found = [s for s in self.segments if s.tp == tp and s.end > start and s.start < end]
        found.sort(key=lambda s: s.start)
        return [f for s in found for f in s.facts]


class RecordingDeadLetters:
    def __init__(self) -> None:
        self.sent: list[tuple[RawRecord, Exception]] = []

    async def send(self, record: RawRecord, error: Exception) -> None:
        self.sent.append((record, error))
