"""In-memory fakes of the metrics ports, for the unit tests (test fakes live in tests, never in src/)."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from kasse_metrics.application.ingest import RawRecord, Segment, TopicPartition
from kasse_metrics.application.partitions import PartialUpdate, RemoteRead
from kasse_metrics.domain.facts import Fact
from kasse_metrics.domain.kpis import Bucket


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

    async def prune(self, below: Mapping[TopicPartition, int]) -> int:
        kept = [s for s in self.segments if s.end > below.get(s.tp, 0)]
        deleted = len(self.segments) - len(kept)
        self.segments = kept
        return deleted


class InMemoryReaderRegistry:
    def __init__(self) -> None:
        self.readers: dict[str, tuple[float, dict[TopicPartition, int]]] = {}
        self.clock = time.monotonic  # a test moves it to make a reader fall silent

    async def register(self, reader_id: str, seen: Mapping[TopicPartition, int]) -> None:
        self.readers[reader_id] = (self.clock(), dict(seen))

    async def heartbeat(self, reader_id: str, seen: Mapping[TopicPartition, int]) -> bool:
        if reader_id not in self.readers:
            return False
        self.readers[reader_id] = (self.clock(), dict(seen))
        return True

    async def unregister(self, reader_id: str) -> None:
        self.readers.pop(reader_id, None)

    async def live_seen(self, ttl_s: float) -> list[dict[TopicPartition, int]]:
        horizon = self.clock() - ttl_s
        self.readers = {r: (at, seen) for r, (at, seen) in self.readers.items() if at >= horizon}
        return [seen for _, seen in self.readers.values()]


class InMemorySnapshotStore:
    def __init__(self) -> None:
        self.latest: tuple[dict[TopicPartition, int], bytes] | None = None

    async def save(self, seen: dict[TopicPartition, int], blob: bytes) -> bool:
        # As MongoSnapshotStore: never replaces a snapshot that covers more of some partition.
        if self.latest is not None and any(self.latest[0].get(tp, -1) > o for tp, o in seen.items()):
            return False
        self.latest = (dict(seen), blob)
        return True

    async def load(self) -> tuple[dict[TopicPartition, int], bytes] | None:
        return self.latest

    async def latest_seen(self) -> dict[TopicPartition, int] | None:
        return None if self.latest is None else dict(self.latest[0])


class RecordingDeadLetters:
    def __init__(self) -> None:
        self.sent: list[tuple[RawRecord, Exception]] = []

    @property
    def count(self) -> int:
        return len(self.sent)

    async def send(self, record: RawRecord, error: Exception) -> None:
        self.sent.append((record, error))


class InMemoryPartialStore:
    """The partial aggregates store (`MongoPartialStore`'s documents, in dicts)."""

    def __init__(self) -> None:
        self.seq: dict[str, int] = {}
        self.heads: dict[str, dict[str, Any]] = {}
        self.minutes: dict[tuple[str, int], Bucket] = {}
        self.names: dict[str, dict[str, tuple[int, int, str]]] = {}
        self.experiments: dict[str, Any] = {}

    async def publish(self, updates: list[PartialUpdate]) -> None:
        for u in updates:
            for m, bucket in u.minutes.items():
                if bucket:
                    self.minutes[(u.key, m)] = Counter(bucket)
                else:
                    self.minutes.pop((u.key, m), None)
            head = self.heads.setdefault(u.key, {"names_seq": 0, "exp_seq": 0})
            if u.names is not None:
                self.names[u.key] = dict(u.names)
                head["names_seq"] = u.seq
            if u.experiments is not None:
                self.experiments[u.key] = u.experiments
                head["exp_seq"] = u.seq
            head.update(seq=u.seq, m=dict(u.minute_seq))
            self.seq[u.key] = max(self.seq.get(u.key, 0), u.seq)

    async def sequences(self) -> dict[str, int]:
        return dict(self.seq)

    async def read(
        self, key: str, known_minutes: Mapping[int, int], names_seq: int, experiments_seq: int
    ) -> RemoteRead | None:
        head = self.heads.get(key)
        if head is None:
            return None
        wanted = [m for m, s in head["m"].items() if s > known_minutes.get(m, 0)]
        names = self.names.get(key) if head["names_seq"] > names_seq else None
        experiments = self.experiments.get(key) if head["exp_seq"] > experiments_seq else None
        return RemoteRead(
            seq=head["seq"],
            minutes={m: Counter(self.minutes[(key, m)]) for m in wanted if (key, m) in self.minutes},
            minute_seq=dict(head["m"]),
            names=names,
            names_seq=head["names_seq"] if names is not None else names_seq,
            experiments=experiments,
            experiments_seq=head["exp_seq"] if experiments is not None else experiments_seq,
        )


class ClientMessage:
    """A consumed record as confluent-kafka hands it to the router (`Message`'s accessors, header values
    as bytes), made from a RawRecord."""

    def __init__(self, record: RawRecord, headers: list[tuple[str, bytes]] | None = None) -> None:
        self.record = record
        self._headers = headers if headers is not None else [(k, v.encode()) for k, v in record.headers.items()]

    def topic(self) -> str:
        return self.record.topic

    def partition(self) -> int:
        return self.record.partition

    def offset(self) -> int:
        return self.record.offset

    def key(self) -> bytes | None:
        return self.record.key

    def value(self) -> bytes | None:
        return self.record.value

    def headers(self) -> list[tuple[str, bytes]] | None:
        return self._headers or None
