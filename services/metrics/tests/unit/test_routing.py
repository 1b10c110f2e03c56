"""The router stage: facts re-keyed by session onto the internal topic, packed per batch and partition,
then read by the state stage with exactly the numbers of reading the contract topics directly."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

import pytest

from kasse_metrics.adapters.mongo_checkpoints import segment_documents
from kasse_metrics.application.experiments import observe, snapshot_part
from kasse_metrics.application.ingest import Checkpoints, Ingest, ProjectionSync, RawRecord
from kasse_metrics.application.partitions import MergedKpis, PartitionState, RemotePartials, StatePartitions
from kasse_metrics.application.routing import Router, decode_routed, partition_of, route_key
from kasse_metrics.domain.experiment_analysis import ExperimentAnalysis
from kasse_metrics.domain.facts import Viewed, decode_facts, encode_facts, join_packed
from kasse_metrics.domain.kpis import Projection, Window

from .fakes import (
    ClientMessage,
    InMemoryCheckpointStore,
    InMemoryPartialStore,
    InMemorySnapshotStore,
    RecordingDeadLetters,
)
from .test_kpis import Log

pytestmark = pytest.mark.unit
INTERNAL = "kasse.metrics.facts-by-session.v1"


class InternalTopic:
    """A fake internal topic: records appended per explicit partition, acknowledged at once."""

    def __init__(self, partitions: int = 6) -> None:
        self.partitions = partitions
        self.log: dict[int, list[bytes]] = {p: [] for p in range(partitions)}

    async def send(self, partition: int, value: bytes) -> Awaitable[Any]:
        self.log[partition].append(value)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    def records(self, partition: int, start: int = 0) -> list[RawRecord]:
        return [
            RawRecord(INTERNAL, partition, offset, None, value, {})
            for offset, value in enumerate(self.log[partition])
            if offset >= start
        ]


async def _route_all(records: list[RawRecord], topic: InternalTopic, batch_size: int = 9) -> RecordingDeadLetters:
    dlq = RecordingDeadLetters()
    router = Router(dlq, topic, max_facts_per_record=4)
    messages = [ClientMessage(r) for r in records]
    for i in range(0, len(messages), batch_size):
        await router(messages[i : i + batch_size])
    return dlq


async def test_facts_of_a_session_meet_in_one_partition_and_the_numbers_equal_the_direct_ones(
    scenario_for: Any, assert_report_matches: Any
) -> None:
    scenario = scenario_for("route")
    log = Log()
    raw = [log.append(r) for r in scenario.all_records() + scenario.duplicates()]
    topic = InternalTopic()
    dlq = await _route_all(raw, topic)
    assert not dlq.sent
    # Packed: several facts per record (at most 4 here), far fewer records than facts.
    facts_by_partition = {p: [f for v in values for f in decode_facts(v)] for p, values in topic.log.items()}
    n_records = sum(len(v) for v in topic.log.values())
    n_facts = sum(len(v) for v in facts_by_partition.values())
    assert n_facts == len(raw) and n_records < n_facts
    assert all(len(decode_facts(v)) <= 4 for values in topic.log.values() for v in values)
    # Every fact sits in its session's partition (its event id's without one): a session's steps from
    # every contract topic meet there, and so do the re-publications of an event.
    where: dict[str, set[int]] = {}
    for p, facts in facts_by_partition.items():
        for f in facts:
            assert partition_of(route_key(f), 6) == p
            where.setdefault(route_key(f), set()).add(p)
    assert all(len(ps) == 1 for ps in where.values())
    assert len({p for ps in where.values() for p in ps}) > 1  # spread over partitions

    # The state stage: one projection fed every internal partition, read back from its segments.
    store = InMemoryCheckpointStore()
    projection = Projection()
    ingest = Ingest(ProjectionSync(store, projection), Checkpoints(store, max_facts_per_segment=3), decode_routed)
    for p in range(6):
        records = topic.records(p)
        for i in range(0, len(records), 2):
            await ingest(records[i : i + 2])
        await ingest.checkpoint()
    assert store.offsets == {(INTERNAL, p): len(topic.log[p]) for p in range(6) if topic.log[p]}
    for segment in store.segments:  # stored as the router packed them, not decoded and encoded again
        assert segment.packed is not None
        stored = segment_documents(segment)[1]["b"]
        assert stored == encode_facts(segment.facts) and decode_facts(stored) == list(segment.facts)
    for window in ("all", "5m", "1h", "24h"):
        assert_report_matches(projection.report(Window.named(window, scenario.at)), scenario.expected(window))
    rebuilt = Projection()
    await ProjectionSync(store, rebuilt).catch_up()
    for window in ("all", "5m", "1h", "24h"):
        assert_report_matches(rebuilt.report(Window.named(window, scenario.at)), scenario.expected(window))


async def test_a_malformed_contract_record_is_dead_lettered_by_the_router() -> None:
    good = Log().append(_scenario_record())
    bad = RawRecord(good.topic, good.partition, good.offset + 1, b"k", b"{not json", dict(good.headers))
    topic = InternalTopic()
    dlq = await _route_all([good, bad], topic)
    assert [r.offset for r, _ in dlq.sent] == [bad.offset]
    assert sum(len(decode_facts(v)) for values in topic.log.values() for v in values) == 1


async def test_records_the_raw_header_path_leaves_are_decoded_as_before_and_traced_ones_reported() -> None:
    """The router reads the client's header bytes; a record they do not pass (here: an id that is not
    UTF-8, a missing id, a type from a newer producer) takes the decoded path: counted, dead-lettered or
    skipped exactly as before. A record with a trace context is reported for its consumer span."""
    good = Log().append(_scenario_record())
    raw = [(k, v.encode()) for k, v in good.headers.items()]

    def variant(offset: int, headers: list[tuple[str, bytes]]) -> ClientMessage:
        return ClientMessage(RawRecord(good.topic, good.partition, offset, b"k", good.value, {}), headers)

    not_utf8 = variant(1, [(k, b"\xffid" if k == "ce_id" else v) for k, v in raw])
    no_id = variant(2, [(k, v) for k, v in raw if k != "ce_id"])
    newer = variant(3, [(k, b"io.kasse.future.Thing.v1" if k == "ce_type" else v) for k, v in raw])
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    traced = variant(4, [*raw, ("traceparent", traceparent.encode())])
    dlq = RecordingDeadLetters()
    topic = InternalTopic()
    router = Router(dlq, topic)
    result = await router([ClientMessage(good), not_utf8, no_id, newer, traced])
    assert (result.records, result.facts, result.dead_lettered, result.skipped) == (5, 3, 1, 1)
    assert [r.offset for r, _ in dlq.sent] == [2] and dlq.sent[0][0].headers["ce_source"] == good.headers["ce_source"]
    facts = [f for values in topic.log.values() for v in values for f in decode_facts(v)]
    # The not-UTF-8 id decoded as the kit decodes headers (replacement characters), a fact of its own.
    assert sorted(f.event_id for f in facts) == sorted([good.headers["ce_id"], "\ufffdid", good.headers["ce_id"]])
    assert result.traced == [(good.topic, good.partition, 4, traceparent)]


async def test_an_internal_record_that_does_not_decode_is_skipped_and_its_offset_moves() -> None:
    decoded = await decode_routed([RawRecord(INTERNAL, 0, 0, None, b"\xc1garbage", {})])
    assert (decoded.facts, decoded.skipped, decoded.ranges) == ([], 1, {(INTERNAL, 0): (0, 1)})


def _scenario_record() -> Any:
    from .test_kpis import _captured

    return _captured(1)


class GroupInstance:
    """One instance of the partitioned state stage: its partitions, the others' published aggregates."""

    def __init__(
        self,
        store: InMemoryCheckpointStore,
        partials: InMemoryPartialStore,
        snapshots: dict[Any, Any],
        revoke_publish_max_minutes: int = 100,
    ):
        def make(tp: tuple[str, int]) -> PartitionState:
            snapshot_store = snapshots.setdefault(tp, InMemorySnapshotStore())
            sync = ProjectionSync(store, Projection(), snapshots=snapshot_store, only=tp)
            analysis = ExperimentAnalysis()
            sync.fact_observers.append(observe(analysis))
            sync.snapshot_parts["experiments"] = snapshot_part(analysis)
            return PartitionState(tp, f"{tp[0]}|{tp[1]}", sync, analysis)

        self.partitions = StatePartitions(make, partials, revoke_publish_max_minutes)
        self.remote = RemotePartials(partials, Projection().rules, skip=lambda: self.partitions.keys)
        self.kpis = MergedKpis(Projection().rules, self.partitions, self.remote)
        self.ingest = Ingest(self.partitions, Checkpoints(store), decode_routed)


async def _publish_all(instance: Any, max_minutes: int | None) -> None:
    """What the periodic job does: publish turn after turn until nothing changed is left."""
    for _ in range(1_000):
        if not await instance.partitions.publish(max_minutes):
            return
    raise AssertionError("changes left after 1,000 publications")


@pytest.mark.parametrize("max_minutes", [None, 2])
async def test_partitioned_state_each_instance_holds_its_sessions_and_reads_merge_the_others_exactly(
    scenario_for: Any, assert_report_matches: Any, max_minutes: int | None
) -> None:
    scenario = scenario_for("partitioned")
    log = Log()
    raw = [log.append(r) for r in scenario.all_records() + scenario.duplicates()]
    topic = InternalTopic()
    await _route_all(raw, topic)
    store, partials = InMemoryCheckpointStore(), InMemoryPartialStore()
    snapshots: dict[Any, InMemorySnapshotStore] = {}
    a, b = GroupInstance(store, partials, snapshots), GroupInstance(store, partials, snapshots)
    owned = {a: [(INTERNAL, p) for p in (0, 1, 2)], b: [(INTERNAL, p) for p in (3, 4, 5)]}
    for instance, tps in owned.items():
        await instance.partitions.assign(tps)
        for _, p in tps:
            await instance.ingest(topic.records(p))
        await instance.ingest.checkpoint()
        await _publish_all(instance, max_minutes)
    for instance in (a, b):
        await instance.remote.poll()
        for window in ("all", "5m", "1h", "24h"):
            assert_report_matches(instance.kpis.report(Window.named(window, scenario.at)), scenario.expected(window))
    # Disjoint: each instance holds only its partitions' sessions, together every session once.
    whole = Projection()
    whole.apply_all(f for values in topic.log.values() for v in values for f in decode_facts(v))
    held = [i.partitions.sessions_held() for i in (a, b)]
    assert sum(held) == len(whole.sessions) and all(held), held
    minute = scenario.at.replace(second=0, microsecond=0)
    last = int(minute.timestamp() // 60)
    for instance in (a, b):
        assert instance.kpis.timeseries(last, 180) == whole.timeseries(last, 180)
        assert instance.kpis.breakdown("product", Window.named("all", scenario.at)) == whole.breakdown(
            "product", Window.named("all", scenario.at)
        )

    # A rebalance: b takes partition 0 from a (a checkpointed, snapshotted and published it first); b
    # rebuilds it from its snapshot and segments, a reads it as published: the numbers stay exact.
    await a.partitions.snapshot()
    await a.partitions.revoke([(INTERNAL, 0)])
    await b.partitions.assign([(INTERNAL, 0)])
    await _publish_all(b, max_minutes)
    for instance in (a, b):
        await instance.remote.poll()
        assert_report_matches(instance.kpis.report(Window.named("all", scenario.at)), scenario.expected("all"))
    assert [len(i.partitions.parts) for i in (a, b)] == [2, 4]

    # A rebalance that gives b its partitions back keeps their state (no rebuild), and a partition
    # revoked and not given back is dropped.
    before = dict(b.partitions.parts)
    await b.ingest.checkpoint()
    await b.partitions.revoke(list(before))
    await b.partitions.assign([tp for tp in before if tp != (INTERNAL, 5)])
    assert all(b.partitions.parts[tp] is before[tp] for tp in b.partitions.parts)
    assert (INTERNAL, 5) not in b.partitions.parts and not b.partitions._parked
    await b.partitions.assign([(INTERNAL, 5)])  # rebuilt from its snapshot and segments
    assert b.partitions.parts[(INTERNAL, 5)] is not before[(INTERNAL, 5)]
    await b.remote.poll()
    assert_report_matches(b.kpis.report(Window.named("all", scenario.at)), scenario.expected("all"))


def test_changed_minutes_are_taken_a_bounded_number_at_a_time_newest_and_oldest_first() -> None:
    p = Projection()
    start = 1_700_000_000_000
    p.apply_all(Viewed(f"e{i}", start + i * 60_000, 0, f"s{i}", "p", "c", "direct") for i in range(50))
    every = set(p.buckets)
    assert len(every) == 50
    turns: list[set[int]] = []
    while p.dirty_minutes:
        changed, _ = p.take_changes(limit=8)
        assert 0 < len(changed) <= 8
        assert all(changed[m] == p.buckets[m] for m in changed)
        turns.append(set(changed))
    assert {max(every), min(every)} <= turns[0]  # the newest and the oldest first
    assert set().union(*turns) == every and sum(map(len, turns)) == len(every)  # each once, none left out
    assert p.take_changes(limit=8) == ({}, False)


class CountingPartialStore(InMemoryPartialStore):
    def __init__(self) -> None:
        super().__init__()
        self.published: list[str] = []

    async def publish(self, updates: list[Any]) -> None:
        self.published.extend(u.key for u in updates)
        await super().publish(updates)


async def test_a_revocation_with_many_changed_minutes_publishes_nothing_in_the_rebalance_and_reads_stay_whole(
    scenario_for: Any, assert_report_matches: Any
) -> None:
    """The revocation runs inside the group's rebalance: catching up on history, a partition has hundreds
    of changed minutes, and publishing them there (one write each) outlasted the rebalance timeout, so the
    group rebalanced again and again. Such partitions are not published in the rebalance; the instance
    that gave them up still reads them locally until their new owner's publication supersedes them."""
    scenario = scenario_for("revoked-unpublished")
    log = Log()
    raw = [log.append(r) for r in scenario.all_records() + scenario.duplicates()]
    topic = InternalTopic()
    await _route_all(raw, topic)
    store, partials = InMemoryCheckpointStore(), CountingPartialStore()
    snapshots: dict[Any, InMemorySnapshotStore] = {}
    # A limit of 0 changed minutes: every partition here has changes unpublished at its revocation.
    a = GroupInstance(store, partials, snapshots, revoke_publish_max_minutes=0)
    b = GroupInstance(store, partials, snapshots)
    every = [(INTERNAL, p) for p in range(6)]
    await a.partitions.assign(every)
    for _, p in every:
        await a.ingest(topic.records(p))
    await a.ingest.checkpoint()
    await a.remote.poll()

    def exact(instance: GroupInstance) -> None:
        for window in ("all", "5m", "1h", "24h"):
            assert_report_matches(instance.kpis.report(Window.named(window, scenario.at)), scenario.expected(window))

    exact(a)
    await a.partitions.revoke(every)
    assert partials.published == []  # nothing written inside the rebalance
    exact(a)  # during the rebalance: the revoked partitions are still read here
    await a.partitions.assign([])  # the rebalance gave them all to b
    assert set(a.partitions.retiring) == {f"{INTERNAL}|{p}" for _, p in every} and not a.partitions.parts
    await a.remote.poll()
    a.partitions.superseded({k: r.seq for k, r in a.remote.parts.items()})
    exact(a)  # nobody published them yet: still read locally, not from nothing

    await b.partitions.assign(every)
    await b.partitions.publish()  # the new owner publishes every minute it loaded
    await a.remote.poll()
    exact(a)  # the publication is newer than a's last one (none): read from it
    a.partitions.superseded({k: r.seq for k, r in a.remote.parts.items()})
    assert a.partitions.retiring == {}
    exact(a)
    exact(b)


@pytest.mark.parametrize("sizes", [[0], [3, 0, 12], [15, 1], [16], [10, 20, 40000, 25535], [65535, 1], [70000, 3]])
def test_packed_lists_of_facts_join_into_the_bytes_of_one_list(sizes: list[int]) -> None:
    """Across MessagePack's three list headers (up to 15 items, up to 65,535, more)."""
    n = 0
    packed, every = [], []
    for size in sizes:
        facts = [
            Viewed(f"e{n + i}", 1_700_000_000_000 + n + i, n + i, f"s{i % 7}", "p", "c", "direct") for i in range(size)
        ]
        n += size
        packed.append(encode_facts(facts))
        every.extend(facts)
    assert join_packed(packed) == encode_facts(every)
