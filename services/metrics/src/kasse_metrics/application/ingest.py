"""Use cases: count every consumed event exactly once, visible at once, durable in per-partition checkpoints.

Exactly-once, without transactions (FerretDB v1 has none), and without one write per event:
1. a polled batch is decoded into facts (malformed records go to the dead-letter topic) and folded
   into the in-memory projection at once: the KPIs show an event as soon as it is consumed;
2. the projection skips any event id it already holds, so a redelivered, duplicated or replayed
   event adds nothing, whatever order facts arrive in (this is the dedupe);
3. every ~200 ms (or N records) a checkpoint stores, per partition, ONE segment: the compact facts of
   the offsets [start, end) consumed since the last checkpoint; then the partitions' next offsets are
   raised (`$max`) in one offsets document. A few writes per checkpoint, not per event.
A crash loses only what was not checkpointed: the restarted consumer seeks to the stored offsets and
reads those records again, the projection is rebuilt from the segments, and because the projection
is a function of the *set* of event ids, the numbers come out the same. A segment written but not
covered by the offsets (a crash between the two writes) overlaps the one written after the replay:
its facts are read twice and skipped the second time by event id.

With partitioned state (`application.partitions`), a `ProjectionSync` holds one internal partition and
reads only that partition's segments: at assignment, those above its snapshot.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

import msgspec

from kasse_common.envelope import MalformedEvent
from kasse_metrics.application.decoding import FastDecoder
from kasse_metrics.domain.facts import Fact
from kasse_metrics.domain.kpis import Projection, RestoredState, SnapshotAbandoned, decode_snapshot_slices

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


@dataclass(frozen=True)
class Segment:
    """A partition's checkpoint: the facts of offsets [start, end). Records that made no fact (dead
    letters, event types this service does not know) only move `end`."""

    topic: str
    partition: int
    start: int
    end: int
    facts: tuple[Fact, ...]
    # The facts as the router packed them (each a MessagePack list; together exactly `facts`, in order), when
    # every record of the segment came packed: stored as they are instead of encoded again.
    packed: tuple[bytes, ...] | None = None

    @property
    def tp(self) -> TopicPartition:
        return (self.topic, self.partition)


class CheckpointStore(Protocol):
    async def write(self, segments: Sequence[Segment]) -> None:
        """Store the segments (every fact of them), THEN raise each partition's next offset to at
        least its segment's end."""

    async def committed_offsets(self) -> dict[TopicPartition, int]:
        """The next offset of every partition any instance has checkpointed."""

    async def read(self, tp: TopicPartition, start: int, end: int) -> list[Fact]:
        """The facts of the segments of `tp` that overlap offsets [start, end). May hold facts
        outside the range and the same event twice (overlapping segments): the projection skips
        event ids it has."""

    async def prune(self, below: Mapping[TopicPartition, int]) -> int:
        """Delete the segments of each partition that end at or below `below[tp]`; returns how many."""


class ReaderRegistry(Protocol):
    """The instances reading the segments and how far each has read, so nobody's unread segments are deleted."""

    async def register(self, reader_id: str, seen: Mapping[TopicPartition, int]) -> None: ...

    async def heartbeat(self, reader_id: str, seen: Mapping[TopicPartition, int]) -> bool:
        """Record progress; False when the reader was dropped as dead in the meantime."""

    async def unregister(self, reader_id: str) -> None: ...

    async def live_seen(self, ttl_s: float) -> list[dict[TopicPartition, int]]:
        """The progress of every reader heard from within `ttl_s` (the others are dropped)."""


class SnapshotStore(Protocol):
    async def save(self, seen: dict[TopicPartition, int], blob: bytes) -> bool:
        """Replace the latest snapshot: the projection holding every fact below `seen` per partition.
        Not when the stored one covers more of a partition (a newer owner's): False, nothing replaced."""

    async def load(self) -> tuple[dict[TopicPartition, int], bytes] | None: ...

    async def latest_seen(self) -> dict[TopicPartition, int] | None:
        """The offsets the latest snapshot covers (its header only), None when there is none."""


class DeadLetters(Protocol):
    count: int  # records sent so far

    async def send(self, record: RawRecord, error: Exception) -> None: ...


RecordFacts = tuple[int, int, bytes | None]  # (offset, facts, packed facts or None)


@dataclass
class Decoded:
    records: int = 0
    facts: list[Fact] = field(default_factory=list)
    by_tp: dict[TopicPartition, list[Fact]] = field(default_factory=dict)
    dead_lettered: int = 0
    skipped: int = 0  # types this service does not know (newer producers)
    ranges: dict[TopicPartition, tuple[int, int]] = field(default_factory=dict)  # [first, next) per partition
    # Per partition, per record in order: (offset, how many facts it gave, its packed facts or None).
    records_of: dict[TopicPartition, list[RecordFacts]] = field(default_factory=dict)

    def record(self, r: RawRecord, facts: int, packed: bytes | None = None) -> None:
        """`r` gave the last `facts` facts of its partition's list (`packed`: them, as the router packed them)."""
        self.records_of.setdefault((r.topic, r.partition), []).append((r.offset, facts, packed))

    def facts_of(self, r: RawRecord) -> list[Fact]:
        """The fact list of the record's partition, its offset counted into the partition's range."""
        tp = (r.topic, r.partition)
        have = self.ranges.get(tp)
        if have is None:
            self.ranges[tp] = (r.offset, r.offset + 1)
            tp_facts: list[Fact] = []
            self.by_tp[tp] = tp_facts
            return tp_facts
        self.ranges[tp] = (min(have[0], r.offset), max(have[1], r.offset + 1))
        return self.by_tp[tp]


_default_decoder: FastDecoder | None = None


def default_decoder() -> FastDecoder:
    global _default_decoder
    if _default_decoder is None:
        _default_decoder = FastDecoder()
    return _default_decoder


async def decode_batch(
    records: Sequence[RawRecord], dead_letters: DeadLetters, decoder: FastDecoder | None = None
) -> Decoded:
    """Records → facts; malformed ones to the dead-letter topic (at least once: a crash before the
    next checkpoint publishes them again)."""
    decoder = decoder or default_decoder()
    out = Decoded(records=len(records))
    facts = out.facts
    for r in records:
        tp_facts = out.facts_of(r)
        try:
            fact = decoder(r.value, r.headers, r.offset)
        except MalformedEvent as exc:
            await dead_letters.send(r, exc)
            out.dead_lettered += 1
            out.record(r, 0)
            continue
        if fact is None:
            out.skipped += 1
            out.record(r, 0)
            continue
        facts.append(fact)
        tp_facts.append(fact)
        out.record(r, 1)
    return out


@dataclass
class _Pending:
    start: int
    end: int
    facts: list[Fact] = field(default_factory=list)
    records: list[RecordFacts] = field(default_factory=list)  # the records of `facts`, in order


class Checkpoints:
    """What this instance consumed but has not stored yet, per partition, and the write that stores it."""

    def __init__(self, store: CheckpointStore, max_facts_per_segment: int = 5000) -> None:
        self.store = store
        self.max_facts_per_segment = max_facts_per_segment  # far below the 16 MB document limit
        self.pending: dict[TopicPartition, _Pending] = {}
        self._writing = asyncio.Lock()

    @property
    def pending_records(self) -> int:
        return sum(p.end - p.start for p in self.pending.values())

    @property
    def pending_facts(self) -> int:
        return sum(len(p.facts) for p in self.pending.values())

    def add(self, decoded: Decoded) -> None:
        for tp, (first, end) in decoded.ranges.items():
            p = self.pending.setdefault(tp, _Pending(first, first))
            p.start, p.end = min(p.start, first), max(p.end, end)
            p.facts.extend(decoded.by_tp.get(tp, ()))
            p.records.extend(decoded.records_of.get(tp, ()))

    def drop(self, tps: Iterable[TopicPartition]) -> None:
        """Forget what is pending for partitions this instance no longer owns (their new owner reads
        those records again from the stored offset)."""
        for tp in tps:
            self.pending.pop(tp, None)

    async def flush(self) -> list[Segment]:
        """Store everything pending: one segment per partition (split when large), then the offsets.

        Records consumed while the write is in flight wait for the next checkpoint. A failed write
        puts its records back in front of them (and raises), so nothing is skipped.
        """
        async with self._writing:
            taken, self.pending = self.pending, {}
            if not taken:
                return []
            try:
                segments = [s for tp, p in sorted(taken.items()) for s in self._segments(tp, p)]
                await self.store.write(segments)
            except BaseException:
                for tp, p in taken.items():
                    newer = self.pending.get(tp)
                    if newer is not None:
                        p.end = max(p.end, newer.end)
                        p.facts.extend(newer.facts)
                        p.records.extend(newer.records)
                    self.pending[tp] = p
                raise
            return segments

    def _segments(self, tp: TopicPartition, p: _Pending) -> list[Segment]:
        """Split after every `max_facts_per_segment` facts, but only between records: the facts of one
        record (a router record packs many) share its offset, and a segment covers whole offsets."""
        n = self.max_facts_per_segment
        out: list[Segment] = []
        start = p.start
        first = 0  # the segment's first fact
        records: list[RecordFacts] = []
        count = 0
        for record in p.records:
            if count >= n:
                out.append(self._segment(tp, start, record[0], p.facts[first : first + count], records))
                start, first, records, count = record[0], first + count, [], 0
            records.append(record)
            count += record[1]
        if first + count != len(p.facts):  # a decoder that did not `Decoded.record` its records: never drop facts
            raise RuntimeError(f"{tp}: {len(p.facts)} facts pending, {first + count} counted by their records")
        out.append(self._segment(tp, start, p.end, p.facts[first : first + count], records))
        return out

    @staticmethod
    def _segment(tp: TopicPartition, start: int, end: int, facts: list[Fact], records: list[RecordFacts]) -> Segment:
        packed: list[bytes] = []
        for _, n, blob in records:
            if not n:
                continue
            if blob is None:  # a record decoded from its contract event: the facts are encoded
                return Segment(tp[0], tp[1], start, end, tuple(facts))
            packed.append(blob)
        return Segment(tp[0], tp[1], start, end, tuple(facts), tuple(packed))


@dataclass
class IngestResult:
    records: int = 0
    new_facts: int = 0  # facts the projection had not counted yet
    duplicates: int = 0  # facts whose event id was counted already
    dead_lettered: int = 0
    skipped: int = 0


_gc_pauses = 0
_gc_was_enabled = False


@contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic GC while a snapshot is decoded (nested and side by side: the last one out resumes it).

    A restored partition is millions of new containers; with the collector on, each full pass rescans all
    of them (a decode cost 1.7-2.3 s of CPU with it, 0.8 s without, at 800k events per partition). At the
    end they go straight to the oldest generation (freeze + unfreeze: moved, not scanned), which the next
    full pass scans once, as it would anyway."""
    global _gc_pauses, _gc_was_enabled
    if _gc_pauses == 0:
        _gc_was_enabled = gc.isenabled()
        gc.disable()
    _gc_pauses += 1
    try:
        yield
    finally:
        _gc_pauses -= 1
        if _gc_pauses == 0:
            gc.freeze()
            gc.unfreeze()
            if _gc_was_enabled:
                gc.enable()


_BUNDLE = b"KSB1"  # a snapshot with parts beside the projection; without it, the projection's blob alone


def _bundle(projection: bytes, parts: dict[str, bytes]) -> bytes:
    return _BUNDLE + msgspec.msgpack.encode({"projection": projection, "parts": parts})


def projection_blob(snapshot: bytes) -> bytes:
    """The projection's part of a stored snapshot (for `Projection.restore`)."""
    return _unbundle(snapshot)[0]


def _unbundle(blob: bytes) -> tuple[bytes, dict[str, bytes]]:
    if not blob.startswith(_BUNDLE):
        return blob, {}
    bundle: dict[str, Any] = msgspec.msgpack.decode(blob[len(_BUNDLE) :])
    return bundle["projection"], bundle["parts"]


@dataclass
class ProjectionSync:
    """Keeps the projection current: own batches from memory, the other instances' from the store."""

    store: CheckpointStore
    projection: Projection
    # Per partition: the projection holds every fact below this offset (read from the store or consumed).
    seen: dict[TopicPartition, int] = field(default_factory=dict)
    listeners: list[Callable[[], Awaitable[None] | None]] = field(default_factory=list)
    # Handed every fact the projection is handed (new or repeated), e.g. the experiment analysis.
    fact_observers: list[Callable[[Sequence[Fact]], object]] = field(default_factory=list)
    read_chunk: int = 50_000  # offsets per read: a long rebuild yields between chunks
    last_committed: dict[TopicPartition, int] = field(default_factory=dict)
    snapshots: SnapshotStore | None = None
    # State kept beside the projection (e.g. the experiment analysis): saved in the same snapshot, so
    # both cover exactly the same facts. name -> (take, restore).
    snapshot_parts: dict[str, tuple[Callable[[], bytes], Callable[[bytes], None]]] = field(default_factory=dict)
    caught_up: bool = False  # set once the projection held everything checkpointed when it started
    # Segments below the latest snapshot and below every live reader's progress are deleted, so the
    # store does not grow with all history. A reader silent for `reader_ttl_s` no longer holds them back.
    readers: ReaderRegistry | None = None
    reader_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    reader_ttl_s: float = 120.0
    segments_pruned: int = 0
    # Partitioned state: this sync holds one internal partition only (None: every partition it reads).
    only: TopicPartition | None = None
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _snapshot_facts: int = 0
    # The offsets the latest snapshot (taken or loaded) covers, and whether segments below them may still
    # be stored: a reader held them back, a checkpoint stored them after the snapshot was taken (it holds
    # every fact consumed, stored or not), or a restart loaded a snapshot its writer had no time to prune
    # below. The heartbeat prunes then, without waiting for new facts (and so a new snapshot).
    _snapshot_seen: dict[TopicPartition, int] = field(default_factory=dict)
    _prune_due: bool = False
    _closed: bool = False

    async def restore(self) -> bool:
        """Start from the latest snapshot (if any): the history below it is not read again.

        Registered as a reader first, holding nothing: while it loads, no segment it may need is deleted.
        """
        if self.readers is not None:
            await self.readers.register(self.reader_id, {})
        return await self._load_snapshot(replace=False)

    async def _load_snapshot(self, replace: bool) -> bool:
        if self.snapshots is None:
            return False
        started = time.perf_counter()
        loaded = await self.snapshots.load()
        if loaded is None:
            return False
        read_s = time.perf_counter() - started
        seen, blob = loaded
        # Decoded and built a slice at a time, the event loop running between (seconds for a large
        # partition under load, in the rebalance listener), then installed at once.
        with gc_paused():
            projection_blob, parts = _unbundle(blob)
            slices = decode_snapshot_slices(projection_blob, self.projection.ids.max_ids)
            while True:
                try:
                    next(slices)
                except StopIteration as done:
                    restored: RestoredState = done.value
                    break
                await asyncio.sleep(0)
            async with self._lock:
                self.projection.install(restored)
                for name, part in parts.items():
                    if name in self.snapshot_parts:
                        self.snapshot_parts[name][1](part)
                if replace:
                    self.seen = dict(seen)
                else:
                    for tp, offset in seen.items():
                        self.seen[tp] = max(self.seen.get(tp, 0), offset)
                # The loaded snapshot holds what the projection holds: no new snapshot until new facts come.
                self._snapshot_facts = self.projection.facts_applied
                self._snapshot_seen = dict(seen)
                self._prune_due = True
        log.info(
            "projection restored from a snapshot",
            extra={"bytes": len(blob), "read_s": round(read_s, 3), "total_s": round(time.perf_counter() - started, 3)},
        )
        return True

    async def heartbeat(self) -> None:
        """Tell the registry how far this projection has read. Dropped as dead meanwhile (silent for
        longer than the time-to-live), segments it had not read may be gone: it starts again from the
        latest snapshot, which covers them."""
        if self.readers is None:
            return
        if not await self.readers.heartbeat(self.reader_id, dict(self.seen)):
            await self._dropped()
            return
        if self._prune_due:
            try:
                await self.prune(self._snapshot_seen)
            except Exception:  # the next heartbeat tries again
                log.warning("deleting the segments below the snapshot failed", exc_info=True)

    async def _dropped(self) -> None:
        """Dropped as silent (a loop stalled longer than the time-to-live): segments above what this
        projection held may have been deleted meanwhile, but only below the latest snapshot. Holding at
        least what that snapshot covers (the usual case: this instance wrote it), nothing it needs is
        gone: it registers again. Otherwise it starts again from that snapshot and reads the segments
        above it. (Reloading an owner that holds more than the snapshot threw away the facts above it:
        an owner reads its partition from Kafka and never reads those segments again.)"""
        assert self.readers is not None
        latest = await self.snapshots.latest_seen() if self.snapshots is not None else None
        if latest is None or all(self.seen.get(tp, 0) >= offset for tp, offset in latest.items()):
            log.warning("this reader was dropped as silent; it holds the latest snapshot: registered again")
            await self.readers.register(self.reader_id, dict(self.seen))
            return
        log.warning("this reader was dropped as silent; reloading the projection from the latest snapshot")
        await self.readers.register(self.reader_id, {})
        await self._load_snapshot(replace=True)
        await self.readers.register(self.reader_id, dict(self.seen))
        await self.catch_up()

    def stored(self, segments: Iterable[Segment]) -> None:
        """A checkpoint stored these segments: those at or below the latest snapshot (taken while their
        records were consumed but not stored yet) are deleted at the next heartbeat."""
        for s in segments:
            if (self.only is None or s.tp == self.only) and s.end <= self._snapshot_seen.get(s.tp, 0):
                self._prune_due = True

    async def prune(self, snapshot_seen: Mapping[TopicPartition, int]) -> int:
        """Delete the segments below the snapshot that every live reader has read too, and only those
        below the committed offsets: a checkpoint under way (a snapshot holds facts not stored yet, so it
        may be storing segments below it) writes above them until it is done, and a segment deleted while
        it is written would leave its facts behind (a store may write a segment in more than one step)."""
        if self.readers is None:
            return 0
        # Cleared before the deletion: a segment stored while it runs (its `stored` comes after) is
        # caught by the next heartbeat.
        self._prune_due = False
        live = await self.readers.live_seen(self.reader_ttl_s)
        committed = await self.store.committed_offsets()
        below = {
            tp: min([offset, committed.get(tp, 0)] + [r.get(tp, 0) for r in live])
            for tp, offset in snapshot_seen.items()
        }
        try:
            deleted = await self.store.prune(below)
        except BaseException:
            self._prune_due = True
            raise
        if below != dict(snapshot_seen):  # held back: again once the reader or the checkpoint has moved on
            self._prune_due = True
        self.segments_pruned += deleted
        return deleted

    async def close(self) -> None:
        self._closed = True
        if self.readers is not None:
            await self.readers.unregister(self.reader_id)

    async def snapshot(self, min_new_facts: int = 1) -> bool:
        """Store a snapshot when at least `min_new_facts` were applied since the last one."""
        if self.snapshots is None or self.projection.facts_applied - self._snapshot_facts < min_new_facts:
            return False
        # Encoded a slice at a time, the event loop running between (facts are applied meanwhile).
        slices = self.projection.snapshot_slices()
        try:
            while True:
                try:
                    next(slices)
                except StopIteration as done:
                    blob: bytes = done.value
                    break
                except SnapshotAbandoned:  # reloaded meanwhile (dropped as a reader): the next one
                    return False
                await asyncio.sleep(0)
                if self._closed:  # revoked meanwhile: the next owner snapshots it
                    return False
        finally:
            slices.close()
        # No await since the last slice: the event loop applied nothing in between, so the blob holds
        # exactly the facts below `seen` (and possibly more: own batches not stored yet, which a restart
        # reads again from Kafka and skips by id), and the parts beside it the same facts.
        applied = self.projection.facts_applied
        seen = dict(self.seen)
        if self.snapshot_parts:
            blob = _bundle(blob, {name: take() for name, (take, _) in self.snapshot_parts.items()})
        if not await self.snapshots.save(seen, blob):
            # Another owner stored a newer one meanwhile (this partition was revoked during the save).
            log.info("a newer snapshot of this partition was stored meanwhile; this one was dropped")
            return False
        self._snapshot_facts = applied
        self._snapshot_seen = seen
        self._prune_due = True
        try:
            # This instance's own progress, current (it holds nothing back), then the segments below.
            await self.heartbeat()
        except Exception:  # the next heartbeat tries again; nothing depends on it having worked
            log.warning("deleting the segments below the snapshot failed", exc_info=True)
        return True

    async def catch_up(self) -> int:
        """Read the segments any instance checkpointed since the last look, chunk by chunk."""
        applied = 0
        committed = await self.store.committed_offsets()
        if self.only is not None:
            committed = {tp: end for tp, end in committed.items() if tp == self.only}
        self.last_committed = committed
        for tp, end in sorted(committed.items()):
            while True:
                async with self._lock:
                    start = self.seen.get(tp, 0)
                    if end <= start:
                        break
                    chunk_end = min(end, start + self.read_chunk)
                    facts = await self.store.read(tp, start, chunk_end)
                    applied += self.projection.apply_all(facts)
                    for observe in self.fact_observers:
                        observe(facts)
                    self.seen[tp] = max(self.seen.get(tp, 0), chunk_end)
        if not self.caught_up and all(self.seen.get(tp, 0) >= end for tp, end in committed.items()):
            self.caught_up = True
        await self._notify(applied)
        return applied

    @property
    def lag_records(self) -> int:
        """Records checkpointed (as of the last poll) that this projection does not hold yet."""
        return sum(max(0, end - self.seen.get(tp, 0)) for tp, end in self.last_committed.items())

    async def apply_local(self, decoded: Decoded) -> int:
        """Fold in a batch this instance just consumed, before it is stored (freshness).

        Where the batch continues what the projection holds of a partition, `seen` moves past it, so
        the poller never reads this instance's own checkpoints back. After a gap (a restarted
        projection still reading the partition's history), the poller reads them, and the projection
        skips the event ids it holds.
        """
        applied = self.projection.apply_all(decoded.facts)
        for observe in self.fact_observers:
            observe(decoded.facts)
        for tp, (first, end) in decoded.ranges.items():
            seen = self.seen.get(tp, 0)
            if first <= seen:
                self.seen[tp] = max(seen, end)
        await self._notify(applied)
        return applied

    async def _notify(self, applied: int) -> None:
        if applied:
            for listener in self.listeners:
                maybe = listener()
                if maybe is not None:
                    await maybe


BatchDecode = Callable[[Sequence[RawRecord]], Awaitable[Decoded]]


class AppliesBatches(Protocol):
    """Folds a decoded batch into the state (`ProjectionSync`, or the owned partitions)."""

    async def apply_local(self, decoded: Decoded) -> int: ...

    def stored(self, segments: Iterable[Segment]) -> None:
        """The checkpoint stored these segments (those below the latest snapshot can be deleted)."""


def contract_decode(dead_letters: DeadLetters, decoder: FastDecoder | None = None) -> BatchDecode:
    """Contract records → facts (what the router does before re-keying them)."""

    async def decode(records: Sequence[RawRecord]) -> Decoded:
        return await decode_batch(records, dead_letters, decoder)

    return decode


class Ingest:
    """The state stage's use case: a polled batch becomes visible now and durable at the next checkpoint.

    `decode` turns the polled records into facts: in the service, the router's packed records of the
    internal topic (`routing.decode_routed`); the unit tests feed contract records directly."""

    def __init__(self, sync: AppliesBatches, checkpoints: Checkpoints, decode: BatchDecode) -> None:
        self.sync = sync
        self.checkpoints = checkpoints
        self.decode = decode

    async def __call__(self, records: Sequence[RawRecord]) -> IngestResult:
        decoded = await self.decode(records)
        new = await self.sync.apply_local(decoded)
        self.checkpoints.add(decoded)
        return IngestResult(
            records=decoded.records,
            new_facts=new,
            duplicates=len(decoded.facts) - new,
            dead_lettered=decoded.dead_lettered,
            skipped=decoded.skipped,
        )

    async def checkpoint(self) -> int:
        """Store what is pending; returns the number of records it covered."""
        segments = await self.checkpoints.flush()
        self.sync.stored(segments)
        return sum(s.end - s.start for s in segments)
