"""Partitioned state: this instance holds only the internal partitions it owns, and reads the others'
aggregates, which their owners publish.

Each owned internal partition has its own projection, experiment analysis, segments, offsets and
snapshot (a `ProjectionSync` restricted to it): built on assignment (its snapshot, then its segments
above it), dropped on revocation. Since the router puts every fact of a session into one partition,
partitions hold disjoint sets of sessions, and their aggregates — per-minute counters, product names,
per-variant experiment sums — merge by addition (names: the best per product), exactly.

Every `partial_publish_interval_s` the owner publishes what changed in its partitions (the changed
minutes only, the names and the experiment sums when they changed) to a small store; every instance
polls it and keeps the other partitions' aggregates (`RemotePartials`). Reads merge the local
projections with the remote partials (`MergedKpis`).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from kasse_metrics.application.ingest import Decoded, ProjectionSync, Segment, TopicPartition
from kasse_metrics.domain.experiment_analysis import ExperimentAnalysis, _Aggregate
from kasse_metrics.domain.kpis import (
    Bucket,
    FunnelRules,
    Projection,
    Window,
    breakdown_from,
    funnel_from,
    merged_counters,
    report_from,
    timeseries_from,
)

log = logging.getLogger(__name__)

Aggregates = dict[str, dict[str, _Aggregate]]  # experiment -> variant -> sums


@dataclass
class PartialUpdate:
    """What one partition's owner publishes: changed minutes (None: merged away), and the names and the
    experiment sums when they changed (None: unchanged)."""

    key: str
    seq: int
    minutes: dict[int, Bucket | None]
    minute_seq: dict[int, int]
    names: dict[str, tuple[int, int, str]] | None
    experiments: Aggregates | None


@dataclass
class RemoteRead:
    """One partition's partial as read: the minutes whose seq is newer than the reader's, the names and
    the experiment sums when newer, the minutes that exist."""

    seq: int
    minutes: dict[int, Bucket]
    minute_seq: dict[int, int]
    names: dict[str, tuple[int, int, str]] | None
    names_seq: int
    experiments: Aggregates | None
    experiments_seq: int


class PartialStore(Protocol):
    async def publish(self, updates: list[PartialUpdate]) -> None: ...

    async def sequences(self) -> dict[str, int]:
        """The latest seq published per partition key."""

    async def read(
        self, key: str, known_minutes: Mapping[int, int], names_seq: int, experiments_seq: int
    ) -> RemoteRead | None: ...


@dataclass
class PartitionState:
    tp: TopicPartition
    key: str
    sync: ProjectionSync
    analysis: ExperimentAnalysis
    seq: int = 0
    minute_seq: dict[int, int] = field(default_factory=dict)
    names_published: bool = False
    experiments_published: int = -1  # the analysis version last published
    experiments_sent: Aggregates | None = None  # the sums last published
    _aggregates: tuple[int, Aggregates] | None = None

    @property
    def projection(self) -> Projection:
        return self.sync.projection

    def aggregates(self) -> Aggregates:
        version = self.analysis.version
        if self._aggregates is None or self._aggregates[0] != version:
            self._aggregates = (version, self.analysis.all_aggregates())
        return self._aggregates[1]


class StatePartitions:
    """The internal partitions this instance owns (see the module doc)."""

    def __init__(
        self,
        make: Callable[[TopicPartition], PartitionState],
        partials: PartialStore | None = None,
        revoke_publish_max_minutes: int = 100,
    ) -> None:
        self.make = make
        self.partials = partials
        # The revocation runs inside the group's rebalance, which waits for it (see `revoke`).
        self.revoke_publish_max_minutes = revoke_publish_max_minutes
        self.parts: dict[TopicPartition, PartitionState] = {}
        self._parked: dict[TopicPartition, PartitionState] = {}  # revoked in the rebalance under way
        # Revoked and not assigned back: still read here until their new owner's publication is newer
        # than this instance's last one (see `revoke`, `superseded`). By partition key.
        self.retiring: dict[str, PartitionState] = {}
        self.version = 0  # grows with every change of what this instance holds
        self.listeners: list[Callable[[], Awaitable[None] | None]] = []
        self.loading: set[str] = set()  # assigned, state being built (by key)
        self.assigned_once = False  # the state stage's first assignment is known (possibly empty)

    @property
    def keys(self) -> set[str]:
        return {p.key for p in self.parts.values()}

    @property
    def local_keys(self) -> set[str]:
        """The partitions held here or being loaded here: never read from their owners' publications."""
        return self.keys | self.loading

    async def assign(self, tps: Iterable[TopicPartition]) -> None:
        """Build the state of newly owned partitions: each from its snapshot, then its segments above it.

        Kafka's rebalances revoke every partition and assign them again, mostly to the same owner: a
        partition revoked in this rebalance and assigned back keeps its state (checkpointed at the
        revocation) and only reads the segments another owner may have stored meanwhile. Rebuilding it
        would take seconds per partition under load, long enough to miss heartbeats and rebalance again."""
        parked, self._parked = self._parked, {}
        todo = []
        for tp in dict.fromkeys(tps):
            if tp not in self.parts:
                part = parked.pop(tp, None)
                todo.append((part or self.make(tp), part is None))
        # Known before the first await: the other partitions' publications are not read for these (a start's
        # first poll read all six partitions' published minutes, seconds beside the snapshot loads).
        self.loading.update(part.key for part, _ in todo)
        self.assigned_once = True
        sequences = await self.partials.sequences() if self.partials is not None else {}
        # Side by side: one partition's snapshot and segments are read from the store while another's are
        # decoded (a restart loaded its six 11 MB snapshots one after the other: 15 s at 2M events).
        results = await asyncio.gather(
            *(self._build(part, fresh, sequences) for part, fresh in todo), return_exceptions=True
        )
        for part in parked.values():  # revoked and not assigned back: dropped once superseded
            await self._retire(part)
        self.version += 1
        await self._notify()
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def _build(self, part: PartitionState, fresh: bool, sequences: Mapping[str, int]) -> None:
        try:
            if fresh:
                await part.sync.restore()
            self.retiring.pop(part.key, None)  # owned again: its own state (rebuilt) is read
            await part.sync.catch_up()
            part.seq = max(part.seq, sequences.get(part.key, 0))  # the previous owner's publications continue
            self.parts[part.tp] = part
        finally:
            self.loading.discard(part.key)
        log.info(
            "partition state loaded",
            extra={"partition": part.key, "sessions": len(part.projection.sessions)},
        )

    async def revoke(self, tps: Iterable[TopicPartition]) -> None:
        """Stop owning partitions (after the consumer checkpointed them). Their state is kept: reused if the
        same rebalance assigns them back (see `assign`), else still read by this instance until the new
        owner publishes (`superseded`), so this instance's numbers never go back meanwhile.

        This runs inside the group's rebalance, and every member waits for it: their last changes are
        published here only when few (a live shop: the minute or two since the last publication). While
        catching up on history a partition has hundreds of changed minutes, one write each (FerretDB v1
        hangs under bulk writes): publishing them here took a minute, beyond the rebalance timeout, and
        the group rebalanced again and again (the two-instance bench ran at 0.16x one). The new owner
        publishes every minute it loads, newer than this instance's last publication."""
        gone = [self.parts.pop(tp) for tp in tps if tp in self.parts]
        if gone:
            few = [p for p in gone if len(p.projection.dirty_minutes) <= self.revoke_publish_max_minutes]
            try:
                await self._publish(few)
            except Exception:
                log.warning("publishing the revoked partitions' aggregates failed", exc_info=True)
            for part in self._parked.values():
                await self._retire(part)
            self._parked = {part.tp: part for part in gone}
        self.version += 1
        await self._notify()

    async def _retire(self, part: PartitionState) -> None:
        await self._close(part)
        self.retiring[part.key] = part

    def superseded(self, published: Mapping[str, int]) -> None:
        """Drop the retiring partitions whose new owner's publication (`published`: seq per key, as read) is
        newer than this instance's last one of them."""
        gone = [key for key, part in self.retiring.items() if published.get(key, 0) > part.seq]
        for key in gone:
            del self.retiring[key]
        if gone:
            self.version += 1

    def held_elsewhere(self) -> dict[str, PartitionState]:
        """The partitions this instance no longer owns but still reads locally: revoked in the rebalance under
        way, or retiring (by key)."""
        return {**self.retiring, **{p.key: p for p in self._parked.values()}}

    async def _close(self, part: PartitionState) -> None:
        try:
            await part.sync.close()
        except Exception:
            log.warning("could not unregister as a segment reader", exc_info=True)

    async def apply_local(self, decoded: Decoded) -> int:
        applied = 0
        for tp, facts in decoded.by_tp.items():
            part = self.parts.get(tp)
            if part is None:  # not (or no longer) owned: its owner reads these records
                continue
            applied += await part.sync.apply_local(
                Decoded(records=0, facts=facts, by_tp={tp: facts}, ranges={tp: decoded.ranges[tp]})
            )
        if applied:
            self.version += 1
            await self._notify()
        return applied

    def stored(self, segments: Iterable[Segment]) -> None:
        for s in segments:
            part = self.parts.get(s.tp) or self._parked.get(s.tp)
            if part is not None:
                part.sync.stored((s,))

    async def snapshot(self, min_new_facts: int = 1) -> None:
        for part in list(self.parts.values()):
            await part.sync.snapshot(min_new_facts)

    async def heartbeat(self) -> None:
        for part in list(self.parts.values()):
            await part.sync.heartbeat()

    async def close(self) -> None:
        for part in list(self.parts.values()):
            await part.sync.close()

    async def publish(self, max_minutes: int | None = None) -> bool:
        """Publish what changed, at most `max_minutes` minutes per partition; True when changes are left."""
        await self._publish(list(self.parts.values()), max_minutes)
        return any(part.projection.dirty_minutes for part in self.parts.values())

    async def _publish(self, parts: list[PartitionState], max_minutes: int | None = None) -> None:
        if self.partials is None:
            return
        updates = []
        taken = []
        for part in parts:
            minutes, names_changed = part.projection.take_changes(max_minutes)
            names_changed = names_changed or not part.names_published
            experiments_changed = part.analysis.version != part.experiments_published
            if experiments_changed and part.experiments_sent is not None and part.aggregates() == part.experiments_sent:
                # The analysis moves with every batch (its version), its per-variant sums only with exposed
                # sessions: the same sums are not written again (with no experiment, every 50 ms per partition).
                part.experiments_published = part.analysis.version
                experiments_changed = False
            if not minutes and not names_changed and not experiments_changed:
                continue
            taken.append((part, minutes, names_changed))
            part.seq += 1
            for m, bucket in minutes.items():
                if bucket:
                    part.minute_seq[m] = part.seq
                else:
                    part.minute_seq.pop(m, None)
            updates.append(
                PartialUpdate(
                    part.key,
                    part.seq,
                    {m: (Counter(b) if b else None) for m, b in minutes.items()},
                    dict(part.minute_seq),
                    dict(part.projection.product_names) if names_changed else None,
                    part.aggregates() if experiments_changed else None,
                )
            )
        if not updates:
            return
        versions = {part.key: part.analysis.version for part, _, _ in taken}
        sent = {u.key: u.experiments for u in updates if u.experiments is not None}
        try:
            await self.partials.publish(updates)
        except BaseException:
            for part, minutes, names_changed in taken:  # published again next time
                part.projection.dirty_minutes.update(minutes)
                part.projection.names_dirty = part.projection.names_dirty or names_changed
            raise
        for part, _, names_changed in taken:
            part.names_published = part.names_published or names_changed
            part.experiments_published = versions[part.key]
            if part.key in sent:
                part.experiments_sent = sent[part.key]

    def sessions_held(self) -> int:
        return sum(len(p.projection.sessions) for p in self.parts.values())

    def caught_up(self) -> bool:
        return all(p.sync.caught_up for p in self.parts.values())

    @property
    def lag_records(self) -> int:
        return sum(p.sync.lag_records for p in self.parts.values())

    async def _notify(self) -> None:
        for listener in self.listeners:
            maybe = listener()
            if maybe is not None:
                await maybe


@dataclass
class RemotePartial:
    projection: Projection
    seq: int = 0
    minute_seq: dict[int, int] = field(default_factory=dict)
    names_seq: int = 0
    experiments_seq: int = 0
    experiments: Aggregates = field(default_factory=dict)


class RemotePartials:
    """The other partitions' aggregates, as their owners published them."""

    def __init__(self, store: PartialStore, rules: FunnelRules, skip: Callable[[], set[str]]) -> None:
        self.store = store
        self.rules = rules
        self.skip = skip  # the partitions held locally (fresher than their publications)
        self.parts: dict[str, RemotePartial] = {}
        self.version = 0
        self.polled = False  # read once: the merged numbers are the group's
        self.listeners: list[Callable[[], Awaitable[None] | None]] = []

    async def poll(self) -> bool:
        """Read what changed since the last poll (one small document when nothing did)."""
        sequences = await self.store.sequences()
        changed = False
        for key, seq in sorted(sequences.items()):
            # Asked per partition: one assigned while this poll runs (a start) is not read remotely.
            if key in self.skip():
                continue
            part = self.parts.get(key)
            if part is None:
                part = self.parts[key] = RemotePartial(Projection(self.rules))
            if seq == part.seq:
                continue
            read = await self.store.read(key, part.minute_seq, part.names_seq, part.experiments_seq)
            if read is None:
                continue
            gone: dict[int, Bucket | None] = {m: None for m in part.minute_seq if m not in read.minute_seq}
            part.projection.load_partial({**gone, **read.minutes}, read.names)
            part.minute_seq = dict(read.minute_seq)
            part.names_seq = read.names_seq
            if read.experiments is not None:
                part.experiments = read.experiments
                part.experiments_seq = read.experiments_seq
            part.seq = read.seq
            changed = True
        if changed:
            self.version += 1
            for listener in self.listeners:
                maybe = listener()
                if maybe is not None:
                    await maybe
        self.polled = True
        return changed


class MergedKpis:
    """The whole group's KPIs: this instance's partitions plus the others' published aggregates.

    The read side of `Projection` (report, funnel, breakdown, timeseries, event counts), over the sum
    of the partitions' aggregates, cached per version."""

    CACHE_LIMIT = 256

    def __init__(self, rules: FunnelRules, local: StatePartitions, remote: RemotePartials | None) -> None:
        self.rules = rules
        self.local = local
        self.remote = remote
        self._cache: dict[Any, Any] = {}
        self._cache_version = -1

    @property
    def version(self) -> int:
        return self.local.version + (self.remote.version if self.remote is not None else 0)

    def _others(self) -> tuple[list[PartitionState], list[RemotePartial]]:
        """The partitions not owned here: those revoked but not yet superseded by their new owner's
        publication (read locally), and the others' publications."""
        keys = self.local.keys
        kept = {k: p for k, p in self.local.held_elsewhere().items() if k not in keys}
        remote = self.remote.parts if self.remote is not None else {}
        local = [p for k, p in kept.items() if k not in remote or remote[k].seq <= p.seq]
        taken = keys | {p.key for p in local}
        return local, [r for k, r in remote.items() if k not in taken]

    def parts(self) -> list[Projection]:
        local, remote = self._others()
        own = [p.projection for p in self.local.parts.values()]
        return own + [p.projection for p in local] + [r.projection for r in remote]

    def experiment_parts(self) -> list[Aggregates]:
        local, remote = self._others()
        own = [p.aggregates() for p in self.local.parts.values()]
        return own + [p.aggregates() for p in local] + [r.experiments for r in remote]

    def _cached(self, key: Any, compute: Callable[[], Any]) -> Any:
        if self._cache_version != self.version:
            self._cache.clear()
            self._cache_version = self.version
        if key not in self._cache:
            if len(self._cache) >= self.CACHE_LIMIT:
                self._cache.clear()
            self._cache[key] = compute()
        return self._cache[key]

    def counters(self, window: Window) -> Bucket:
        return self._cached(  # type: ignore[no-any-return]
            ("counters", window), lambda: merged_counters(p.counters(window) for p in self.parts())
        )

    def product_names(self) -> dict[str, tuple[int, int, str]]:
        def merge() -> dict[str, tuple[int, int, str]]:
            names: dict[str, tuple[int, int, str]] = {}
            for p in self.parts():
                for product, named in p.product_names.items():
                    current = names.get(product)
                    if current is None or named > current:
                        names[product] = named
            return names

        return self._cached("names", merge)  # type: ignore[no-any-return]

    def report(self, window: Window) -> dict[str, Any]:
        return self._cached(  # type: ignore[no-any-return]
            ("report", window), lambda: report_from(self.counters(window), self.rules, window.name)
        )

    def funnel(self, window: Window, channel: str | None = None) -> dict[str, Any]:
        return funnel_from(self.counters(window), self.rules, channel)

    def event_counts(self, window: Window) -> dict[str, int]:
        # The partitions' own (small, cached per partition version) counts summed: not the whole merged
        # counters (every breakdown key), which a batch applied to any partition invalidates.
        def merge() -> dict[str, int]:
            total: Counter[str] = Counter()
            for p in self.parts():
                total.update(p.event_counts(window))
            return dict(sorted(total.items()))

        return self._cached(("events", window), merge)  # type: ignore[no-any-return]

    def breakdown(self, dimension: str, window: Window, limit: int = 50) -> list[dict[str, Any]]:
        return breakdown_from(self.counters(window), self.rules, dimension, limit, self.product_names())

    def timeseries(self, last_minute: int, minutes: int) -> list[dict[str, Any]]:
        parts = self.parts()
        first = last_minute - minutes + 1
        buckets = {
            m: merged_counters(b for p in parts if (b := p.buckets.get(m)) is not None)
            for m in range(first, last_minute + 1)
        }
        return timeseries_from(buckets, self.rules, last_minute, minutes)

    # -- what this instance holds (operations) ---------------------------------------------------
    def held(self) -> dict[str, int]:
        own = [p.projection for p in self.local.parts.values()]
        return {
            "partitions": len(own),
            "sessions": sum(len(p.sessions) for p in own),
            "dedupe_ids": sum(len(p.ids) for p in own),
            "minute_buckets": sum(len(p.buckets) for p in own),
            "sessions_folded": sum(p.sessions_folded for p in own),
            "facts_applied": sum(p.facts_applied for p in own),
        }
