"""Funnel rules, KPIs and exactly-once ingest, with in-memory fakes."""

from __future__ import annotations

import asyncio
import gc
import random
import weakref
import zlib
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from kasse_common.envelope import OutgoingRecord, encode
from kasse_common.errors import Unprocessable
from kasse_contracts.base import Channel, Money
from kasse_contracts.events import PaymentCaptured, ProductViewed
from kasse_metrics.application.experiments import observe, partition_analysis, snapshot_part
from kasse_metrics.application.ingest import Checkpoints, Ingest, ProjectionSync, RawRecord, Segment, contract_decode
from kasse_metrics.domain.facts import (
    Captured,
    CartAdded,
    CheckoutBegan,
    Fact,
    Line,
    Placed,
    Refunded,
    Viewed,
    to_ms,
)
from kasse_metrics.domain.kpis import FunnelRules, Projection, Window, minute_of

from .fakes import InMemoryCheckpointStore, InMemoryReaderRegistry, InMemorySnapshotStore, RecordingDeadLetters

pytestmark = pytest.mark.unit

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


class Log:
    """A fake Kafka: records get (topic, partition by key hash, offset) like a real log."""

    def __init__(self) -> None:
        self.offsets: dict[tuple[str, int], int] = {}

    def append(self, record: OutgoingRecord) -> RawRecord:
        partition = zlib.crc32(record.key.encode()) % 6
        tp = (record.topic, partition)
        offset = self.offsets.get(tp, 0)
        self.offsets[tp] = offset + 1
        return RawRecord(record.topic, partition, offset, record.key.encode(), record.value, dict(record.headers))


class Instance:
    """One metrics instance on a checkpoint store: its projection, its pending records, its ingest."""

    def __init__(self, store: InMemoryCheckpointStore, max_facts_per_segment: int = 5000) -> None:
        self.store = store
        self.projection = Projection()
        self.sync = ProjectionSync(store, self.projection)
        self.dlq = RecordingDeadLetters()
        self.ingest = Ingest(self.sync, Checkpoints(store, max_facts_per_segment), contract_decode(self.dlq))


async def ingest_all(records: list[RawRecord], batch_size: int = 7) -> tuple[Projection, Any, Any]:
    """Ingest and checkpoint every few batches, then rebuild a fresh projection from the store alone."""
    store = InMemoryCheckpointStore()
    instance = Instance(store)
    for n, i in enumerate(range(0, len(records), batch_size)):
        await instance.ingest(records[i : i + batch_size])
        if n % 3 == 2:
            await instance.ingest.checkpoint()
    await instance.ingest.checkpoint()
    projection = Projection()
    await ProjectionSync(store, projection).catch_up()
    return projection, store, instance.dlq


@pytest.mark.parametrize("window", ["all", "5m", "1h", "24h"])
async def test_scenario_kpis_are_exact_through_duplicates_reordering_and_a_crash(
    scenario_for: Any, assert_report_matches: Any, window: str
) -> None:
    scenario = scenario_for("unit")
    log = Log()
    raw = [log.append(r) for r in scenario.first_part()]
    raw += [log.append(r) for r in scenario.duplicates()]
    raw += [log.append(r) for r in scenario.second_part()]
    random.Random(7).shuffle(raw)  # partitions interleave arbitrarily

    store = InMemoryCheckpointStore()
    crashing = Instance(store)
    half = len(raw) // 2
    await crashing.ingest(raw[:half])
    await crashing.ingest.checkpoint()
    # A crash between the two writes of a checkpoint: the segments are stored, the offsets not moved.
    await crashing.ingest(raw[half : half + 5])
    store.crash_before_offsets = True
    with pytest.raises(ConnectionError):
        await crashing.ingest.checkpoint()
    # Not yet checkpointed at all when it crashed: lost with the process.
    await crashing.ingest(raw[half + 5 : half + 9])

    restarted = Instance(store)
    await restarted.sync.catch_up()  # rebuilt from the checkpoints
    await restarted.ingest(raw[half:])  # Kafka redelivers from the stored offsets
    assert_report_matches(restarted.projection.report(Window.named(window, scenario.at)), scenario.expected(window))
    await restarted.ingest.checkpoint()

    projection = Projection()
    sync = ProjectionSync(store, projection)
    await sync.catch_up()
    report = projection.report(Window.named(window, scenario.at))
    assert_report_matches(report, scenario.expected(window))
    assert crashing.dlq.sent == [] and restarted.dlq.sent == []
    assert await sync.catch_up() == 0  # nothing applied twice


async def test_replay_from_the_beginning_rebuilds_the_same_numbers(scenario_for: Any) -> None:
    scenario = scenario_for("replay")
    log = Log()
    raw = [log.append(r) for r in scenario.all_records() + scenario.duplicates()]
    first, _, _ = await ingest_all(raw, batch_size=5)
    second, _, _ = await ingest_all(list(reversed(raw)), batch_size=11)
    for window in ("all", "5m", "1h", "24h"):
        w = Window.named(window, scenario.at)
        assert first.report(w) == second.report(w)
        for dim in ("product", "category", "channel"):
            assert first.breakdown(dim, w) == second.breakdown(dim, w)


async def test_breakdowns_by_product_category_and_channel(scenario_for: Any) -> None:
    scenario = scenario_for("breakdown")
    log = Log()
    projection, _, _ = await ingest_all([log.append(r) for r in scenario.all_records()])
    w = Window.named("all", scenario.at)
    products = {r["product"]: r for r in projection.breakdown("product", w)}
    # prod_a: s1 s2 s3 s6 s8 s11 view; s1 s2 s3 s6 s8 s11 add; s1 s2 s3 s6 s11 order.
    assert products["prod_a"] == {
        "product": "prod_a",
        "name": "Product prod_a",  # from its cart and order lines (no ProductChanged in the scenario)
        "views": 6,
        "add_to_carts": 6,
        "purchases": 5,
        "units": 5,
        "conversion": 5 / 6,
    }
    # prod_c: s9 views once, adds; s10 views twice.
    assert products["prod_c"] == {
        "product": "prod_c",
        "name": "Product prod_c",
        "views": 3,
        "add_to_carts": 1,
        "purchases": 0,
        "units": 0,
        "conversion": 0.0,
    }
    categories = {r["category"]: r for r in projection.breakdown("category", w)}
    assert categories["garden"]["views"] == 3 and categories["garden"]["purchases"] == 2
    channels = {r["channel"]: r for r in projection.breakdown("channel", w)}
    assert channels["search"]["sessions"] == 3
    assert channels["search"]["conversion_rate"]["numerator"] == 2
    assert channels["search"]["revenue"] == {"EUR": 8000}
    assert channels["email"]["revenue"] == {"EUR": 6001}
    assert channels["social"]["sessions"] == 1 and channels["social"]["conversion_rate"]["value"] == 0.0
    with pytest.raises(Unprocessable):
        projection.breakdown("colour", w)


def _view(session: str, t: datetime, eid: str, channel: str = "direct") -> Fact:
    return Viewed(eid, to_ms(t), 0, session, "p", "c", channel)


def _paid(session: str, t: datetime, eid: str) -> Fact:
    return Captured(eid, to_ms(t), 0, session, "o-" + session, 100, "EUR")


def test_a_session_counts_once_per_step_and_steps_must_follow_in_order() -> None:
    p = Projection(FunnelRules(steps=("viewed", "paid")))
    p.apply_all(
        [
            _view("a", T0, "1"),
            _view("a", T0 + timedelta(seconds=5), "2"),
            _paid("a", T0 + timedelta(seconds=9), "3"),
            _paid("a", T0 + timedelta(seconds=10), "4"),
            # b paid before it ever viewed: not converted (closed, ordered funnel)
            _paid("b", T0, "5"),
            _view("b", T0 + timedelta(seconds=1), "6"),
            # c paid without a view at all: not in the funnel
            _paid("c", T0, "7"),
        ]
    )
    f = p.funnel(Window.named("all", None))
    assert [s["sessions"] for s in f["steps"]] == [2, 1]


def test_the_conversion_window_bounds_how_late_a_step_may_come() -> None:
    p = Projection(FunnelRules(steps=("viewed", "paid"), conversion_window=timedelta(hours=1)))
    p.apply_all(
        [
            _view("a", T0, "1"),
            _paid("a", T0 + timedelta(minutes=59), "2"),
            _view("b", T0, "3"),
            _paid("b", T0 + timedelta(minutes=61), "4"),
        ]
    )
    assert [s["sessions"] for s in p.funnel(Window.named("all", None))["steps"]] == [2, 1]


def test_late_events_count_in_the_minute_they_happened() -> None:
    p = Projection()
    p.apply_all([_view("a", T0 + timedelta(minutes=30), "1")])
    p.apply_all([_view("b", T0, "2")])  # arrives later, happened earlier
    at = T0 + timedelta(minutes=30, seconds=10)
    assert p.report(Window.named("5m", at))["funnel"][0]["sessions"] == 1
    assert p.report(Window.named("1h", at))["funnel"][0]["sessions"] == 2
    series = p.timeseries(minute_of(at), 31)
    assert series[0]["views"] == 1 and series[-1]["views"] == 1 and sum(pt["views"] for pt in series) == 2


def test_average_order_value_rounds_half_up_per_currency() -> None:
    p = Projection()
    p.apply_all(
        [
            Captured("1", to_ms(T0), 0, "a", "o1", 100, "EUR"),
            Captured("2", to_ms(T0), 0, "b", "o2", 101, "EUR"),
            Captured("3", to_ms(T0), 0, "c", "o3", 500, "SEK"),
        ]
    )
    revenue = p.report(Window.named("all", None))["revenue"]
    assert revenue == {
        "EUR": {"revenue": 201, "orders_paid": 2, "average_order_value": 101},
        "SEK": {"revenue": 500, "orders_paid": 1, "average_order_value": 500},
    }


def test_unknown_window_and_bad_rules_are_refused() -> None:
    with pytest.raises(Unprocessable):
        Window.named("3m", None)
    with pytest.raises(ValueError):
        FunnelRules(steps=("viewed", "teleported"))
    with pytest.raises(ValueError):
        FunnelRules(steps=("viewed", "viewed"))


async def test_malformed_records_are_dead_lettered_and_their_offsets_still_move() -> None:
    store = InMemoryCheckpointStore()
    instance = Instance(store)
    good = encode(
        ProductViewed(
            occurred_at=T0,
            session_id="s",
            product_id="p",
            sku="P",
            category="c",
            price=Money(amount=1, currency="EUR"),
            channel=Channel.SEARCH,
        ),
        service="t",
    )
    bad = RawRecord("kasse.storefront.v1", 0, 1, b"s", b"{not json", dict(good.headers))
    result = await instance.ingest([RawRecord("kasse.storefront.v1", 0, 0, b"s", good.value, dict(good.headers)), bad])
    assert (result.new_facts, result.dead_lettered) == (1, 1)
    assert [r.offset for r, _ in instance.dlq.sent] == [1]
    assert store.offsets == {}  # not stored before the checkpoint ...
    assert await instance.ingest.checkpoint() == 2
    assert store.offsets == {("kasse.storefront.v1", 0): 2}  # ... and then past the dead letter too


def _captured(i: int = 0) -> Any:
    return encode(
        PaymentCaptured(
            occurred_at=T0,
            session_id=f"s{i}",
            order_id=f"o{i}",
            payment_intent_id=f"pi{i}",
            amount=Money(amount=500, currency="EUR"),
        ),
        service="t",
    )


async def test_a_duplicate_in_the_same_batch_across_batches_and_after_a_restart_is_counted_once() -> None:
    store = InMemoryCheckpointStore()
    ev = _captured()
    rec = [RawRecord("kasse.payments.v1", 1, i, b"o", ev.value, dict(ev.headers)) for i in range(4)]
    instance = Instance(store)
    first = await instance.ingest(rec[:2])
    await instance.ingest.checkpoint()
    second = await instance.ingest(rec[2:3])
    await instance.ingest.checkpoint()
    assert (first.new_facts, first.duplicates, second.new_facts, second.duplicates) == (1, 1, 0, 1)
    # A restarted instance knows the event id from the checkpoints.
    restarted = Instance(store)
    await restarted.sync.catch_up()
    third = await restarted.ingest(rec[3:])
    assert (third.new_facts, third.duplicates) == (0, 1)
    assert restarted.projection.report(Window.named("all", None))["revenue"]["EUR"]["revenue"] == 500


def _views(n: int, partition: int = 0) -> list[RawRecord]:
    out = []
    for i in range(n):
        r = encode(
            ProductViewed(
                occurred_at=T0,
                session_id=f"s{partition}-{i}",
                product_id="p",
                sku="P",
                category="c",
                price=Money(amount=1, currency="EUR"),
                channel=Channel.SEARCH,
            ),
            service="t",
        )
        out.append(RawRecord("kasse.storefront.v1", partition, i, b"k", r.value, dict(r.headers)))
    return out


def _viewers(p: Projection) -> int:
    return int(p.report(Window.named("all", None))["funnel"][0]["sessions"])


async def test_visible_before_stored_and_a_failed_checkpoint_keeps_its_records_pending() -> None:
    store = InMemoryCheckpointStore()
    instance = Instance(store)
    raw = _views(6)
    await instance.ingest(raw[:3])
    assert _viewers(instance.projection) == 3  # visible at once, nothing stored yet
    assert store.offsets == {}
    store.fail_next_write = True
    with pytest.raises(ConnectionError):
        await instance.ingest.checkpoint()
    await instance.ingest(raw[3:])  # consumed while the store was down
    assert store.offsets == {} and instance.ingest.checkpoints.pending_records == 6
    assert await instance.ingest.checkpoint() == 6
    assert store.offsets == {("kasse.storefront.v1", 0): 6}
    assert [(s.start, s.end, len(s.facts)) for s in store.segments] == [(0, 6, 6)]
    # The poller does not read this instance's own segments back ...
    assert await instance.sync.catch_up() == 0 and instance.sync.lag_records == 0
    # ... and a fresh instance rebuilds the same numbers from them.
    other = Instance(store)
    assert await other.sync.catch_up() == 6 and _viewers(other.projection) == 6


async def test_each_instance_reads_the_others_partitions_and_large_partitions_are_split() -> None:
    store = InMemoryCheckpointStore()
    a, b = Instance(store, max_facts_per_segment=4), Instance(store, max_facts_per_segment=4)
    await a.ingest(_views(10, partition=0))
    await b.ingest(_views(3, partition=1))
    await a.ingest.checkpoint()
    await b.ingest.checkpoint()
    assert sorted((s.partition, s.start, s.end, len(s.facts)) for s in store.segments) == [
        (0, 0, 4, 4),
        (0, 4, 8, 4),
        (0, 8, 10, 2),
        (1, 0, 3, 3),
    ]
    assert await a.sync.catch_up() == 3 and await b.sync.catch_up() == 10
    assert _viewers(a.projection) == _viewers(b.projection) == 13
    assert await a.sync.catch_up() == await b.sync.catch_up() == 0


async def test_a_segment_read_twice_or_written_twice_counts_once() -> None:
    store = InMemoryCheckpointStore()
    zombie, owner = Instance(store), Instance(store)
    raw = _views(5)
    # A rebalance: the old owner (zombie) and the new one both store offsets 0-2.
    await zombie.ingest(raw[:3])
    await zombie.ingest.checkpoint()
    await owner.ingest(raw)
    await owner.ingest.checkpoint()
    reader = Instance(store)
    assert await reader.sync.catch_up() == 5 and _viewers(reader.projection) == 5
    reader.sync.seen.clear()  # read everything again
    assert await reader.sync.catch_up() == 0 and _viewers(reader.projection) == 5


def test_asking_about_many_past_instants_does_not_grow_the_cache_without_bound() -> None:
    p = Projection()
    p.apply_all([_view("a", T0, "1")])
    for i in range(1000):
        assert p.report(Window.named("5m", T0 + timedelta(minutes=i)))["funnel"][0]["sessions"] == (1 if i < 5 else 0)
    assert len(p._cache) <= Projection.CACHE_LIMIT


class _ScanningProjection(Projection):
    """The fold as it was: every session's last time compared with the horizon."""

    def _idle_sessions(self, horizon: int) -> list[str]:
        return [sid for sid, s in self.sessions.items() if s.last_ms < horizon]


def test_the_fold_index_forgets_exactly_the_sessions_a_scan_of_all_would() -> None:
    """Sessions come and go over days of event time, their facts late and out of order, a restore in the
    middle: after every batch the indexed fold holds the same sessions and counts as a scan of all."""
    rng = random.Random(11)
    rules = FunnelRules(steps=("viewed", "paid"), conversion_window=timedelta(minutes=90))
    indexed, scanning = Projection(rules), _ScanningProjection(rules)
    t = T0
    n = 0
    for batch in range(400):
        facts: list[Fact] = []
        for _ in range(rng.randrange(1, 12)):
            t += timedelta(seconds=rng.randrange(0, 240))
            # Mostly recent sessions, some far back (late facts of sessions a fold may have forgotten).
            late = rng.random() < 0.15
            when = t - timedelta(minutes=rng.randrange(60, 300) if late else rng.randrange(0, 20))
            session = f"s{rng.randrange(max(1, n // 3 - 40), n // 3 + 2)}"
            n += 1
            maker = _paid if rng.random() < 0.3 else _view
            facts.append(maker(session, when, f"e{n}"))
        assert indexed.apply_all(facts) == scanning.apply_all(facts)
        if batch == 200:  # a restored state has no index: its first fold scans, then indexes again
            restored = Projection(rules)
            restored.restore(indexed.snapshot())
            indexed = restored
        assert sorted(indexed.sessions) == sorted(scanning.sessions), batch
        assert indexed.sessions_folded == scanning.sessions_folded
    assert scanning.sessions_folded > 100  # the folds did forget sessions
    everything = Window.named("all", None)
    assert indexed.report(everything) == scanning.report(everything)


@pytest.mark.parametrize(
    "steps", [FunnelRules().steps, ("checkout_started", "paid")], ids=["default-steps", "checkout-first"]
)
def test_a_session_contributes_what_its_facts_say_whatever_their_order_repeated_steps_included(
    steps: tuple[str, ...],
) -> None:
    """Many views and checkouts per session (earlier, later and equal to the first; views from other
    channels), carts and payments, applied in random order and batches: after every batch, each session's
    stored contribution is the one its state gives now, and at the end the aggregates equal those of the same
    facts applied in time order."""
    rng = random.Random(23)
    offsets = [-30, 0, 0, 5, 40, 400]
    facts: list[Fact] = []
    for n in range(300):
        session, t = f"s{n}", T0 + timedelta(seconds=rng.randrange(0, 3600))
        for v in range(rng.randrange(1, 6)):
            when = to_ms(t + timedelta(seconds=rng.choice(offsets)))
            channel = rng.choice(["direct", "email", "search"])
            facts.append(Viewed(f"{session}-v{v}", when, 0, session, "p", "c", channel))
        if rng.random() < 0.5:
            facts.append(CartAdded(f"{session}-a", to_ms(t + timedelta(seconds=20)), 0, session, f"c-{session}"))
        for c in range(rng.randrange(0, 4)):
            when = to_ms(t + timedelta(seconds=25 + rng.choice(offsets)))
            facts.append(CheckoutBegan(f"{session}-c{c}", when, 0, session, f"c-{session}"))
        if rng.random() < 0.3:
            facts.append(_paid(session, t + timedelta(seconds=rng.randrange(10, 90)), f"{session}-p"))
    rules = FunnelRules(steps=steps)
    in_time_order = Projection(rules)
    in_time_order.apply_all(sorted(facts, key=lambda f: (f.ms, f.event_id)))
    shuffled = list(facts)
    rng.shuffle(shuffled)
    p = Projection(rules)
    i = 0
    while i < len(shuffled):
        step = rng.randrange(1, 40)
        p.apply_all(shuffled[i : i + step])
        i += step
        for s in p.sessions.values():
            assert s.contributed == tuple(p.contribution(s))
    everything = Window.named("all", None)
    assert p.report(everything) == in_time_order.report(everything)
    assert p.total == in_time_order.total and dict(p.buckets) == dict(in_time_order.buckets)


def test_state_is_bounded_sessions_fold_old_minutes_merge_into_days_and_ids_are_a_window() -> None:
    rules = FunnelRules(steps=("viewed", "paid"), conversion_window=timedelta(hours=1))
    p = Projection(rules, dedupe_window_ids=100, minute_resolution_minutes=120)
    day0 = T0.replace(hour=0)
    # One converting session per 10 minutes over three days of event time, in time order.
    for i in range(3 * 144):
        t = day0 + timedelta(minutes=10 * i)
        p.apply_all([_view(f"s{i}", t, f"v{i}"), _paid(f"s{i}", t + timedelta(seconds=30), f"p{i}")])
        assert len(p.sessions) <= 6 + 2 + 1  # an hour's sessions and the fold interval, never all
        assert len(p.ids) <= 100
        assert len(p.buckets) <= 120 + 3 + 10  # recent minutes, one bucket per older day
    assert p.sessions_folded > 400
    everything = p.report(Window.named("all", None))
    assert [s["sessions"] for s in everything["funnel"]] == [432, 432]  # folded sessions still count
    assert everything["median_seconds_view_to_payment"] == 30.0
    # The recent minutes keep minute resolution; a whole past day is still exact by day.
    last = day0 + timedelta(minutes=10 * 431)
    assert p.report(Window.named("1h", last))["funnel"][0]["sessions"] == 6
    assert p.report(Window.named("24h", day0 + timedelta(days=1, minutes=-1)))["funnel"][0]["sessions"] == 144
    # A short window looks up its own minutes; a longer one scans the buckets: the same buckets either way,
    # over minute buckets, day buckets (keyed by their first minute) and the edge between them.
    for name in ("5m", "1h", "24h"):
        for at in range(minute_of(day0) - 30, minute_of(last) + 30, 7):
            w = Window(name, at - {"5m": 5, "1h": 60, "24h": 1440}[name] + 1, at)
            scanned: Counter[Any] = Counter()
            for minute, bucket in p.buckets.items():
                if w.contains(minute):
                    scanned.update(bucket)
            assert p.counters(w) == scanned, (name, at)
    # An id older than the window is forgotten (counted again); a recent one is a duplicate.
    assert p.apply_all([_view("s431", last, "v431")]) == 0
    assert p.apply_all([_view("s0", day0, "v0")]) == 1


def test_aggregates_of_disjoint_sessions_add_up_to_the_whole(scenario_for: Any) -> None:
    from kasse_metrics.application.decoding import FastDecoder
    from kasse_metrics.domain.kpis import merged_counters, report_from

    scenario = scenario_for("merge")
    decoder = FastDecoder()
    facts = [decoder(r.value, r.headers, 0) for r in scenario.all_records()]
    whole, halves = Projection(), [Projection(), Projection()]
    whole.apply_all(f for f in facts if f)
    for f in facts:
        assert f is not None
        halves[zlib.crc32((f.session or f.event_id).encode()) % 2].apply_all([f])
    assert all(len(h.sessions) < len(whole.sessions) for h in halves)
    for window in ("all", "5m", "1h", "24h"):
        w = Window.named(window, scenario.at)
        merged = report_from(merged_counters([h.counters(w) for h in halves]), whole.rules, window)
        assert merged == whole.report(w)


def test_a_snapshot_restores_the_same_numbers_and_state(scenario_for: Any) -> None:
    from kasse_metrics.application.decoding import FastDecoder

    scenario = scenario_for("snap")
    decoder = FastDecoder()
    facts = [f for r in scenario.all_records() if (f := decoder(r.value, r.headers, 0))]
    half = len(facts) // 2
    original = Projection()
    original.apply_all(facts[:half])
    restored = Projection()
    restored.restore(original.snapshot())
    assert restored.sessions == original.sessions and restored.total == original.total
    # The rest (and the first half again: duplicates, known by id) lands on both the same way.
    assert restored.apply_all(facts) == original.apply_all(facts) == len(facts) - half
    for window in ("all", "5m", "1h", "24h"):
        w = Window.named(window, scenario.at)
        assert restored.report(w) == original.report(w)
        assert restored.breakdown("channel", w) == original.breakdown("channel", w)


async def test_a_restart_loads_the_snapshot_and_reads_only_the_segments_above_it() -> None:
    store, snapshots = InMemoryCheckpointStore(), InMemorySnapshotStore()
    first = Instance(store)
    first.sync.snapshots = snapshots
    raw = _views(10)
    await first.ingest(raw[:6])
    await first.ingest.checkpoint()
    assert await first.sync.snapshot()
    assert not await first.sync.snapshot()  # nothing new since: skipped
    await first.ingest(raw[6:])
    await first.ingest.checkpoint()

    class CountingStore(InMemoryCheckpointStore):
        read_from: list[int] = []

        async def read(self, tp: Any, start: int, end: int) -> list[Any]:
            self.read_from.append(start)
            return await super().read(tp, start, end)

    counting = CountingStore()
    counting.segments, counting.offsets = store.segments, store.offsets
    restarted = Instance(counting)
    restarted.sync.snapshots = snapshots
    assert not restarted.sync.caught_up
    assert await restarted.sync.restore()
    assert _viewers(restarted.projection) == 6  # from the snapshot alone
    await restarted.sync.catch_up()
    assert counting.read_from == [6]  # the history below the snapshot is not read again
    assert restarted.sync.caught_up and _viewers(restarted.projection) == 10


async def test_segments_below_the_snapshot_are_deleted_once_every_live_reader_has_read_them() -> None:
    store, snapshots, readers = InMemoryCheckpointStore(), InMemorySnapshotStore(), InMemoryReaderRegistry()
    now = [0.0]
    readers.clock = lambda: now[0]
    writer, lagging = Instance(store), Instance(store)
    for instance in (writer, lagging):
        instance.sync.snapshots, instance.sync.readers, instance.sync.reader_ttl_s = snapshots, readers, 60
        await instance.sync.restore()  # nothing to load yet; registered as readers
    raw = _views(10)
    await writer.ingest(raw[:4])
    await writer.ingest.checkpoint()
    await writer.ingest(raw[4:8])
    await writer.ingest.checkpoint()
    await lagging.sync.catch_up()
    await lagging.sync.heartbeat()  # has read offsets [0, 8)
    await writer.ingest(raw[8:])
    await writer.ingest.checkpoint()
    await writer.sync.heartbeat()

    # The snapshot holds all 10; the lagging reader has read 8: only the segments it has read go.
    assert await writer.sync.snapshot()
    assert [(s.start, s.end) for s in store.segments] == [(8, 10)]
    assert writer.sync.segments_pruned == 2
    await lagging.sync.catch_up()
    assert _viewers(lagging.projection) == 10
    # It has read on: the writer's next heartbeat deletes what it held back, with no new fact to snapshot.
    await lagging.sync.heartbeat()
    await writer.sync.heartbeat()
    assert store.segments == [] and writer.sync.segments_pruned == 3

    # A restart loads the snapshot and reads only what is left above it: the same numbers.
    restarted = Instance(store)
    restarted.sync.snapshots, restarted.sync.readers = snapshots, readers
    await restarted.sync.restore()
    await restarted.sync.catch_up()
    assert _viewers(restarted.projection) == 10

    # A reader silent beyond the time-to-live no longer holds segments back; when it comes back it
    # finds itself dropped and reloads from the snapshot, so it misses nothing that was deleted.
    silent = Instance(store)
    silent.sync.snapshots, silent.sync.readers = snapshots, readers
    await silent.sync.restore()
    await silent.sync.catch_up()
    await lagging.sync.heartbeat()
    await restarted.sync.heartbeat()
    await silent.sync.heartbeat()
    now[0] = 61.0  # `restarted` and `silent` last heard of at 0: beyond the time-to-live
    more = _views(13)[10:]
    await writer.ingest(more)
    await writer.ingest.checkpoint()
    await writer.sync.heartbeat()
    await lagging.sync.catch_up()
    await lagging.sync.heartbeat()
    assert await writer.sync.snapshot()
    assert store.segments == []  # the silent readers held nothing back
    assert set(readers.readers) == {writer.sync.reader_id, lagging.sync.reader_id}
    await silent.sync.heartbeat()  # dropped meanwhile: reloads from the snapshot
    assert silent.sync.reader_id in readers.readers
    await silent.sync.catch_up()
    assert _viewers(silent.projection) == 13


async def test_segments_stored_after_the_snapshot_that_covers_them_are_deleted_without_new_facts() -> None:
    """The snapshot holds every fact consumed, stored or not: a checkpoint may store its records after it.
    With no fact after that (a restart reading the history above its snapshot in one go, then quiet), no
    new snapshot comes to delete them: the heartbeat does (the crash test's lingering segments)."""
    store, snapshots, readers = InMemoryCheckpointStore(), InMemorySnapshotStore(), InMemoryReaderRegistry()
    instance = Instance(store)
    instance.sync.snapshots, instance.sync.readers = snapshots, readers
    await instance.sync.restore()
    raw = _views(10)
    await instance.ingest(raw[:4])
    await instance.ingest.checkpoint()
    await instance.ingest(raw[4:])  # consumed and visible, not stored yet
    assert await instance.sync.snapshot()  # holds all 10, and deletes the stored segment below it
    assert [(s.start, s.end) for s in store.segments] == []
    await instance.ingest.checkpoint()  # [4, 10) stored after the snapshot that holds it
    assert [(s.start, s.end) for s in store.segments] == [(4, 10)]
    assert not await instance.sync.snapshot()  # nothing new: no snapshot, so no prune from there
    await instance.sync.heartbeat()
    assert store.segments == [] and instance.sync.segments_pruned == 2

    # Killed after storing segments that its latest snapshot covers, before deleting them: the restarted
    # instance loads that snapshot and deletes them at its first heartbeat, with no new fact either.
    more = _views(14)[10:]
    await instance.ingest(more)
    assert await instance.sync.snapshot()
    await instance.ingest.checkpoint()
    assert [(s.start, s.end) for s in store.segments] == [(10, 14)]
    await readers.unregister(instance.sync.reader_id)  # the killed instance's reader, dropped as silent
    restarted = Instance(store)
    restarted.sync.snapshots, restarted.sync.readers = snapshots, readers
    assert await restarted.sync.restore()
    await restarted.sync.catch_up()
    assert _viewers(restarted.projection) == 14
    assert not await restarted.sync.snapshot()  # the loaded snapshot holds everything: not taken again
    await restarted.sync.heartbeat()
    assert store.segments == [] and restarted.sync.segments_pruned == 1


async def test_a_segment_being_stored_is_not_deleted_under_its_writer_and_goes_once_committed() -> None:
    """A checkpoint stores segments below the snapshot (which holds facts not stored yet) while the snapshot's
    prune runs. The Mongo store writes where a segment lies, then its facts: deleted in between, its facts
    would stay with no segment to find them. So the prune keeps what is above the committed offsets (a
    write under way is), and the next heartbeat deletes that segment once its offsets are raised."""

    class PausingStore(InMemoryCheckpointStore):
        def __init__(self) -> None:
            super().__init__()
            self.pause = False
            self.half_written = asyncio.Event()
            self.finish = asyncio.Event()

        async def write(self, segments: Sequence[Segment]) -> None:
            if not self.pause:
                return await super().write(segments)
            self.segments.extend(segments)
            self.half_written.set()
            await self.finish.wait()
            for seg in segments:
                self.offsets[seg.tp] = max(self.offsets.get(seg.tp, 0), seg.end)

    store, snapshots, readers = PausingStore(), InMemorySnapshotStore(), InMemoryReaderRegistry()
    instance = Instance(store)
    instance.sync.snapshots, instance.sync.readers = snapshots, readers
    await instance.sync.restore()
    raw = _views(10)
    await instance.ingest(raw[:4])
    await instance.ingest.checkpoint()
    await instance.ingest(raw[4:])  # consumed and visible, not stored yet
    store.pause = True
    checkpoint = asyncio.create_task(instance.ingest.checkpoint())
    await asyncio.wait_for(store.half_written.wait(), timeout=5)
    assert await instance.sync.snapshot()  # holds all 10: deletes [0, 4), not [4, 10) while it is written
    assert [(s.start, s.end) for s in store.segments] == [(4, 10)]
    store.finish.set()
    await asyncio.wait_for(checkpoint, timeout=5)
    await instance.sync.heartbeat()
    assert store.segments == [] and instance.sync.segments_pruned == 2


async def test_an_owner_dropped_as_silent_keeps_the_facts_it_holds_above_its_snapshot() -> None:
    """A partition's owner whose heartbeats stalled beyond the time-to-live holds everything its own latest
    snapshot covers: nothing it needs was deleted, so it registers again. It used to reload that snapshot,
    throwing away the facts consumed since, which an owner (it reads its partition from Kafka) never reads
    again: the restarted instance of the crash test reported 557 of 654 events as ready."""
    store, snapshots, readers = InMemoryCheckpointStore(), InMemorySnapshotStore(), InMemoryReaderRegistry()
    now = [0.0]
    readers.clock = lambda: now[0]
    owner = Instance(store)
    owner.sync.snapshots, owner.sync.readers, owner.sync.reader_ttl_s = snapshots, readers, 2
    owner.sync.only = ("kasse.storefront.v1", 0)
    await owner.sync.restore()
    raw = _views(10)
    await owner.ingest(raw[:6])
    assert await owner.sync.snapshot()
    await owner.ingest(raw[6:8])
    await owner.ingest.checkpoint()
    await owner.ingest(raw[8:])  # consumed, not stored yet
    now[0] = 5.0
    assert await readers.live_seen(2) == []  # another reader's prune dropped it as silent
    await owner.sync.heartbeat()
    assert _viewers(owner.projection) == 10 and owner.sync.seen == {("kasse.storefront.v1", 0): 10}
    assert readers.readers[owner.sync.reader_id][1] == owner.sync.seen  # registered again, holding all 10


def _shop_facts(n_sessions: int, start_ms: int, first: int = 0) -> list[Fact]:
    """Sessions that view, add to a cart, order and pay, a minute apart: facts for many minutes."""
    out: list[Fact] = []
    for i in range(first, first + n_sessions):
        sid, ms = f"s{i}", start_ms + i * 60_000
        out.append(Viewed(f"v{i}", ms, 0, sid, f"p{i % 3}", "kitchen", "search"))
        out.append(CartAdded(f"a{i}", ms + 1_000, 0, sid, f"c{i}", f"p{i % 3}", "kitchen", f"Lamp {i % 3}"))
        if i % 2:
            line = Line(f"p{i % 3}", "kitchen", 1)
            out.append(Placed(f"o{i}", ms + 2_000, 0, sid, f"o{i}", f"c{i}", 500, "EUR", (line,)))
            out.append(Captured(f"k{i}", ms + 3_000, 0, sid, f"o{i}", 500, "EUR"))
    return out


def _state(p: Projection) -> tuple[Any, ...]:
    return (
        p.sessions,
        {m: +b for m, b in p.buckets.items() if +b},
        +p.total,
        list(p.ids.ids),
        p.product_names,
        p.facts_applied,
        p.watermark_ms,
        p.sessions_folded,
    )


def test_a_snapshot_encoded_in_slices_while_facts_are_applied_restores_the_state_of_its_last_slice() -> None:
    """Between the slices the event loop applies facts: to sessions already encoded, to new sessions, and a
    fold that forgets sessions; the snapshot holds exactly the state as of its last slice."""
    rules = FunnelRules(conversion_window=timedelta(minutes=5))
    t0 = to_ms(T0)
    early = _shop_facts(40, t0)
    later = [  # sessions already held step on, and new ones come, then time moves on past a fold
        *[Refunded(f"r{i}", t0 + i * 60_000 + 9_000, 0, f"s{i}", f"o{i}", 500, "EUR") for i in range(1, 40, 4)],
        *_shop_facts(25, t0, first=40),
        Viewed("late", t0 + 200 * 60_000, 0, "s-late", "p9", "garden", "ads"),
    ]
    live, reference = Projection(rules), Projection(rules)
    live.apply_all(early)
    reference.apply_all(early)
    folded_before = live.sessions_folded
    slices = live.snapshot_slices(sessions_per_slice=2, minutes_per_slice=3)
    per_step = len(later) // 5 + 1
    steps = 0
    while True:
        try:
            next(slices)
        except StopIteration as done:
            blob = done.value
            break
        steps += 1
        batch, later = later[:per_step], later[per_step:]
        live.apply_all(batch)
        reference.apply_all(batch)
    assert steps > 5 and not later  # every fact went in between slices
    assert live.sessions_folded > folded_before  # a fold ran during the snapshot
    restored = Projection(rules)
    restored.restore(blob)
    assert _state(restored) == _state(live) == _state(reference)
    for window in ("all", "5m", "1h", "24h"):
        w = Window.named(window, T0 + timedelta(minutes=200))
        assert restored.report(w) == reference.report(w)

    # Taken again with nothing applied in between: the same state (and `snapshot()` takes it in one go).
    again = Projection(rules)
    again.restore(live.snapshot())
    assert _state(again) == _state(live)


async def test_a_snapshot_stored_while_batches_are_ingested_between_its_slices_restores_exactly() -> None:
    """`ProjectionSync.snapshot` lets the event loop run between slices: the consumer folds batches in
    meanwhile. The stored snapshot and its offsets agree: a restart from it plus the segments above reads the
    same numbers as the instance that never stopped."""
    import asyncio

    store, snapshots = InMemoryCheckpointStore(), InMemorySnapshotStore()
    live = Instance(store)
    live.sync.snapshots = snapshots
    raw = _views(400)
    await live.ingest(raw[:300])
    await live.ingest.checkpoint()
    real = live.projection.snapshot_slices

    def sliced(*args: Any, **kwargs: Any) -> Any:
        return real(sessions_per_slice=20)  # 15 slices for the 300 sessions held

    live.projection.snapshot_slices = sliced  # type: ignore[method-assign]
    taking = asyncio.create_task(live.sync.snapshot())
    fed = 300
    while not taking.done():
        if fed < 400:
            await live.ingest(raw[fed : fed + 10])
            fed += 10
        await asyncio.sleep(0)
    assert await taking and fed > 300  # batches went in while it was encoded
    await live.ingest(raw[fed:])
    await live.ingest.checkpoint()
    assert snapshots.latest is not None
    seen = snapshots.latest[0][("kasse.storefront.v1", 0)]
    assert 300 < seen <= 400

    restarted = Instance(store)
    restarted.sync.snapshots = snapshots
    assert await restarted.sync.restore()
    await restarted.sync.catch_up()
    assert _viewers(restarted.projection) == _viewers(live.projection) == 400
    assert _state(restarted.projection) == _state(live.projection)


def test_a_snapshot_of_the_earlier_format_still_loads_and_a_replaced_state_abandons_one_under_way() -> None:
    from kasse_metrics.domain.kpis import ProjectionSnapshot, SnapshotAbandoned, _snapshot_encoder

    live = Projection()
    live.apply_all(_shop_facts(12, to_ms(T0)))
    whole = ProjectionSnapshot(  # format 2: every session and minute in one map / list
        sessions=live.sessions,
        buckets=[(m, list(b.items())) for m, b in live.buckets.items()],
        ids=list(live.ids.ids),
        watermark_ms=live.watermark_ms,
        facts_applied=live.facts_applied,
        sessions_folded=live.sessions_folded,
        last_fold_minute=0,
        product_names=live.product_names,
    )
    restored = Projection()
    restored.restore(_snapshot_encoder.encode(whole))
    assert _state(restored) == _state(live)

    slices = live.snapshot_slices(sessions_per_slice=2)
    next(slices)
    live.restore(_snapshot_encoder.encode(whole))  # a reader dropped as silent reloads meanwhile
    with pytest.raises(SnapshotAbandoned):
        while True:
            next(slices)
    assert _state(live) == _state(restored)
    live.snapshot()  # the abandoned one no longer holds the projection


def test_the_catalogs_product_name_wins_over_line_names_whatever_the_order() -> None:
    from kasse_metrics.domain.facts import CartAdded, Named

    facts: list[Fact] = [
        CartAdded("e1", 1_000, 0, "s1", "c1", "p1", "kitchen", "Lamp (cart line)"),
        Named("e2", 500, 1, None, "p1", "Lamp"),
        Named("e3", 400, 2, None, "p1", "Old lamp"),
        Viewed("e4", 2_000, 3, "s1", "p1", "kitchen", "search"),
        Viewed("e5", 2_000, 4, "s2", "p2", "kitchen", "search"),
    ]
    rows = []
    for order in (facts, list(reversed(facts))):
        projection = Projection()
        projection.apply_all(order)
        restored = Projection()
        restored.restore(projection.snapshot())
        by_id = {r["product"]: r["name"] for r in restored.breakdown("product", Window.named("all", None))}
        rows.append(by_id)
    assert rows[0] == rows[1] == {"p1": "Lamp", "p2": None}


def test_a_dropped_partition_state_is_freed_by_reference_counting_alone() -> None:
    """The service freezes the heap once its partitions are loaded (`gc.freeze`, out of the cyclic GC's
    reach): a revoked partition's state is then freed only if no reference cycle holds it (a projection
    keeping bound methods of itself was one)."""
    rules = FunnelRules(steps=("viewed", "paid"), conversion_window=timedelta(hours=1))
    analysis = partition_analysis(rules.conversion_window)
    sync = ProjectionSync(InMemoryCheckpointStore(), Projection(rules), snapshots=InMemorySnapshotStore())
    sync.fact_observers.append(observe(analysis))
    sync.snapshot_parts["experiments"] = snapshot_part(analysis)
    facts: list[Fact] = []
    for i in range(50):
        t = T0 + timedelta(minutes=i)
        facts += [_view(f"s{i}", t, f"v{i}"), _paid(f"s{i}", t + timedelta(seconds=30), f"p{i}")]
    sync.projection.apply_all(facts)
    for observer in sync.fact_observers:
        observer(facts)
    refs = [weakref.ref(sync.projection), weakref.ref(sync), weakref.ref(analysis)]
    del observer, analysis, sync
    gc.disable()
    try:
        assert [r() is None for r in refs] == [True, True, True]
    finally:
        gc.enable()
