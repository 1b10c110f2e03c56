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
    async def add(self, facts: Sequence[Fact]) -> int:
        """Store facts not stored before (by event id); return how many were new."""

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
            result.new_facts = await self.store.add(facts)
            result.duplicates += len(facts) - result.new_facts
        await self.store.raise_offsets(next_offsets)
        return result


@dataclass
class ProjectionSync:
    """Folds committed facts of every partition into the projection, each fact once."""

    store: FactStore
    projection: Projection
    seen: dict[TopicPartition, int] = field(default_factory=dict)
    listeners: list[Callable[[], Awaitable[None] | None]] = field(default_factory=list)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def catch_up(self) -> int:
        async with self._lock:
            applied = 0
            for tp, end in sorted((await self.store.committed_offsets()).items()):
                start = self.seen.get(tp, 0)
                if end <= start:
                    continue
                facts = await self.store.read(tp, start, end)
                applied += self.projection.apply_all(facts)
                self.seen[tp] = end
        if applied:
            for listener in self.listeners:
                maybe = listener()
                if maybe is not None:
                    await maybe
        return applied
