"""Use cases: ingest a batch of records exactly once, and keep the in-memory KPI projection current.

Exactly-once, without transactions (FerretDB v1 has none):
1. every record becomes a fact whose `_id` is the CloudEvents id; facts are inserted, duplicates are
   refused by the unique `_id` (a redelivered or duplicated event adds nothing);
2. malformed records go to the dead-letter topic;
3. only then the partitions' next offsets are raised (`$max`) in the same database.
A crash between 1 and 3 replays the batch: the inserts are refused, the offsets are raised, nothing
is lost or counted twice. Partition assignment seeks to the offsets stored here, not Kafka's.

The projection (every instance's read model) is rebuilt from the facts of ALL partitions, read
per partition in committed offset ranges, so each instance serves the merged numbers of the group.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from kasse_common.envelope import MalformedEvent, decode
from kasse_metrics.domain.facts import Fact, Position, fact_from_event
from kasse_metrics.domain.kpis import Projection

log = logging.getLogger(__name__)

TopicPartition = tuple[str, int]


@dataclass(frozen=True)
class RawRecord:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: dict[str, str]


class FactStore(Protocol):
    async def add(self, facts: Sequence[Fact]) -> dict[str, Position]:
        """Store facts not stored before (by event id). Returns, for the facts that were stored
        already, the position they were first stored at (a replay: the same position; a duplicate
        event: another one)."""

    async def raise_offsets(self, next_offsets: Mapping[TopicPartition, int]) -> None:
        """Set each partition's next offset to at least the given one."""

    async def committed_offsets(self) -> dict[TopicPartition, int]:
        """The next offset of every partition any instance has committed."""

    async def read(self, tp: TopicPartition, start: int, end: int) -> list[Fact]:
        """Facts first read in partition `tp` at offsets [start, end)."""


class DeadLetters(Protocol):
    async def send(self, record: RawRecord, error: Exception) -> None: ...


@dataclass
class IngestResult:
    records: int = 0
    new_facts: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    skipped: int = 0  # types this service does not know (newer producers)
    # The facts located in the batch's offset ranges (new ones, and replayed ones stored at the very
    # same position), and the ranges [first, next) per partition: what the local projection may fold
    # in without reading them back from the store.
    located_here: list[Fact] = field(default_factory=list)
    ranges: dict[TopicPartition, tuple[int, int]] = field(default_factory=dict)


class IngestBatch:
    def __init__(self, store: FactStore, dead_letters: DeadLetters) -> None:
        self.store = store
        self.dead_letters = dead_letters

    async def __call__(self, records: Sequence[RawRecord]) -> IngestResult:
        result = IngestResult(records=len(records))
        facts: list[Fact] = []
        next_offsets: dict[TopicPartition, int] = {}
        seen_in_batch: set[str] = set()
        for r in records:
            tp = (r.topic, r.partition)
            next_offsets[tp] = max(next_offsets.get(tp, 0), r.offset + 1)
            first, _ = result.ranges.get(tp, (r.offset, r.offset))
            result.ranges[tp] = (min(first, r.offset), next_offsets[tp])
            try:
                incoming = decode(r.value, r.headers)
            except MalformedEvent as exc:
                await self.dead_letters.send(r, exc)
                result.dead_lettered += 1
                continue
            if incoming.event is None:
                result.skipped += 1
                continue
            if incoming.id in seen_in_batch:
                result.duplicates += 1
                continue
            seen_in_batch.add(incoming.id)
            facts.append(fact_from_event(incoming.id, incoming.event, Position(r.topic, r.partition, r.offset)))
        if facts:
            stored_before = await self.store.add(facts)
            result.new_facts = len(facts) - len(stored_before)
            result.duplicates += len(stored_before)
            result.located_here = [
                f for f in facts if f.event_id not in stored_before or stored_before[f.event_id] == f.position
            ]
        await self.store.raise_offsets(next_offsets)
        return result


@dataclass
class ProjectionSync:
    """Folds committed facts of every partition into the projection, each fact once."""

    store: FactStore
    projection: Projection
    seen: dict[TopicPartition, int] = field(default_factory=dict)
    listeners: list[Callable[[], Awaitable[None] | None]] = field(default_factory=list)
    read_chunk: int = 5000  # offsets per read: the lock is released between chunks
    last_committed: dict[TopicPartition, int] = field(default_factory=dict)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def catch_up(self) -> int:
        """Read what any instance committed since the last look, chunk by chunk.

        The lock is held per chunk only, so a long rebuild (a restart over millions of facts) never
        stalls this instance's consumer: its batches commit meanwhile and are read here later.
        """
        applied = 0
        committed = self.last_committed = await self.store.committed_offsets()
        for tp, end in sorted(committed.items()):
            while True:
                async with self._lock:
                    start = self.seen.get(tp, 0)
                    if end <= start:
                        break
                    applied += await self._fill(tp, min(end, start + self.read_chunk))
        await self._notify(applied)
        return applied

    @property
    def lag_records(self) -> int:
        """Records committed (as of the last poll) that this projection has not folded in yet."""
        return sum(max(0, end - self.seen.get(tp, 0)) for tp, end in self.last_committed.items())

    async def apply_local(self, result: IngestResult) -> int:
        """Fold in the batch this instance just committed without reading it back (freshness)."""
        async with self._lock:
            applied = await self._apply_local(result)
        await self._notify(applied)
        return applied

    async def ingest_and_apply(self, ingest: Callable[[], Awaitable[IngestResult]]) -> IngestResult:
        """Commit a batch and fold it in under one lock, so the poller never reads it back meanwhile."""
        async with self._lock:
            result = await ingest()
            applied = await self._apply_local(result)
        await self._notify(applied)
        return result

    async def _apply_local(self, result: IngestResult) -> int:
        # Per partition the projection holds every fact located below `seen`. A batch right at `seen`
        # (or overlapping it: the poller read part of it) is folded in from memory; a batch after a
        # gap (the projection is still catching up on that partition) is left to the poller, which
        # reads it from the store in order. The consumer never waits for a read.
        applied = 0
        by_tp: dict[TopicPartition, list[Fact]] = {}
        for f in result.located_here:
            by_tp.setdefault((f.position.topic, f.position.partition), []).append(f)
        for tp, (first, end) in sorted(result.ranges.items()):
            seen = self.seen.get(tp, 0)
            if first > seen or end <= seen:
                continue
            applied += self.projection.apply_all(f for f in by_tp.get(tp, ()) if f.position.offset >= seen)
            self.seen[tp] = end
        return applied

    async def _fill(self, tp: TopicPartition, end: int) -> int:
        start = self.seen.get(tp, 0)
        if end <= start:
            return 0
        applied = self.projection.apply_all(await self.store.read(tp, start, end))
        self.seen[tp] = end
        return applied

    async def _notify(self, applied: int) -> None:
        if applied:
            for listener in self.listeners:
                maybe = listener()
                if maybe is not None:
                    await maybe
