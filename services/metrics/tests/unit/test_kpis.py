"""Funnel rules, KPIs and exactly-once ingest, with in-memory fakes."""

from __future__ import annotations

import random
import zlib
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from kasse_common.envelope import OutgoingRecord, encode
from kasse_common.errors import Unprocessable
from kasse_contracts.base import Channel, Money
from kasse_contracts.events import PaymentCaptured, ProductViewed
from kasse_metrics.adapters.memory import InMemoryFactStore, RecordingDeadLetters
from kasse_metrics.application.ingest import IngestBatch, ProjectionSync, RawRecord
from kasse_metrics.domain.facts import Fact, Position
from kasse_metrics.domain.kpis import FunnelRules, Projection, Window, minute_of

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


async def ingest_all(records: list[RawRecord], batch_size: int = 7) -> tuple[Projection, Any, Any]:
    store, dlq = InMemoryFactStore(), RecordingDeadLetters()
    ingest = IngestBatch(store, dlq)
    for i in range(0, len(records), batch_size):
        await ingest(records[i : i + batch_size])
    projection = Projection()
    await ProjectionSync(store, projection).catch_up()
    return projection, store, dlq


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

    store, dlq = InMemoryFactStore(), RecordingDeadLetters()
    ingest = IngestBatch(store, dlq)
    half = len(raw) // 2
    await ingest(raw[:half])
    # A crash after the facts were stored but before the offsets moved: the batch is read again.
    await store.add([f for f in (_fact(r) for r in raw[half : half + 5]) if f is not None])
    await ingest(raw[half:])
    projection = Projection()
    sync = ProjectionSync(store, projection)
    await sync.catch_up()

    report = projection.report(Window.named(window, scenario.at))
    assert_report_matches(report, scenario.expected(window))
    assert dlq.sent == []
    assert await sync.catch_up() == 0  # nothing applied twice


def _fact(r: RawRecord) -> Fact | None:
    from kasse_common.envelope import decode
    from kasse_metrics.domain.facts import fact_from_event

    inc = decode(r.value, r.headers)
    return fact_from_event(inc.id, inc.event, Position(r.topic, r.partition, r.offset)) if inc.event else None


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
        "views": 6,
        "add_to_carts": 6,
        "purchases": 5,
        "units": 5,
        "conversion": 5 / 6,
    }
    # prod_c: s9 views once, adds; s10 views twice.
    assert products["prod_c"] == {
        "product": "prod_c",
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
    return Fact(
        eid, "ProductViewed", t, Position("x", 0, 0), session, {"product": "p", "category": "c", "channel": channel}
    )


def _paid(session: str, t: datetime, eid: str) -> Fact:
    return Fact(
        eid,
        "PaymentCaptured",
        t,
        Position("x", 0, 0),
        session,
        {"order": "o-" + session, "amount": 100, "currency": "EUR"},
    )


def _step(kind: str, session: str, t: datetime, eid: str, **data: Any) -> Fact:
    return Fact(eid, kind, t, Position("x", 0, 0), session, data)


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
            _step("PaymentCaptured", "a", T0, "1", order="o1", amount=100, currency="EUR"),
            _step("PaymentCaptured", "b", T0, "2", order="o2", amount=101, currency="EUR"),
            _step("PaymentCaptured", "c", T0, "3", order="o3", amount=500, currency="SEK"),
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
    store, dlq = InMemoryFactStore(), RecordingDeadLetters()
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
    result = await IngestBatch(store, dlq)(
        [RawRecord("kasse.storefront.v1", 0, 0, b"s", good.value, dict(good.headers)), bad]
    )
    assert (result.new_facts, result.dead_lettered) == (1, 1)
    assert [r.offset for r, _ in dlq.sent] == [1]
    assert store.offsets == {("kasse.storefront.v1", 0): 2}


async def test_a_duplicate_in_the_same_batch_and_across_batches_is_counted_once() -> None:
    store, dlq = InMemoryFactStore(), RecordingDeadLetters()
    ev = encode(
        PaymentCaptured(
            occurred_at=T0,
            session_id="s",
            order_id="o",
            payment_intent_id="pi",
            amount=Money(amount=500, currency="EUR"),
        ),
        service="t",
    )
    rec = [RawRecord("kasse.payments.v1", 1, i, b"o", ev.value, dict(ev.headers)) for i in range(3)]
    ingest = IngestBatch(store, dlq)
    first = await ingest(rec[:2])
    second = await ingest(rec[2:])
    assert (first.new_facts, first.duplicates, second.new_facts, second.duplicates) == (1, 1, 0, 1)
    projection = Projection()
    await ProjectionSync(store, projection).catch_up()
    assert projection.report(Window.named("all", None))["revenue"]["EUR"]["revenue"] == 500


async def test_the_local_fast_path_leaves_gaps_to_the_poller_and_never_applies_a_fact_twice() -> None:
    store, dlq = InMemoryFactStore(), RecordingDeadLetters()
    ingest = IngestBatch(store, dlq)
    records = [
        encode(
            ProductViewed(
                occurred_at=T0,
                session_id=f"s{i}",
                product_id="p",
                sku="P",
                category="c",
                price=Money(amount=1, currency="EUR"),
                channel=Channel.SEARCH,
            ),
            service="t",
        )
        for i in range(6)
    ]
    raw = [RawRecord("kasse.storefront.v1", 0, i, b"k", r.value, dict(r.headers)) for i, r in enumerate(records)]
    # Offsets 0-1 were committed by a previous owner of the partition: this instance never saw them.
    await ingest(raw[:2])
    projection = Projection()
    sync = ProjectionSync(store, projection)
    # A crash had stored offset 2's fact without moving the offset: the replay finds it stored here.
    await store.add([f for f in (_fact(r) for r in raw[2:3]) if f is not None])
    result = await ingest(raw[2:4])
    assert (result.new_facts, result.duplicates, len(result.located_here)) == (1, 1, 2)
    # Offsets 0-1 are a gap for this projection: the batch is left to the poller, which reads all four.
    assert await sync.apply_local(result) == 0
    assert await sync.catch_up() == 4
    assert sync.lag_records == 0
    assert await sync.catch_up() == 0
    # Contiguous now: the next batch is folded in from memory, and the poller reads nothing again.
    result = await ingest(raw[4:5])
    assert await sync.apply_local(result) == 1
    assert await sync.catch_up() == 0
    # The poller got there first for a batch: the fast path then applies nothing.
    result = await ingest(raw[5:])
    assert await sync.catch_up() == 1
    assert await sync.apply_local(result) == 0
    assert projection.report(Window.named("all", None))["funnel"][0]["sessions"] == 6


def test_asking_about_many_past_instants_does_not_grow_the_cache_without_bound() -> None:
    p = Projection()
    p.apply_all([_view("a", T0, "1")])
    for i in range(1000):
        assert p.report(Window.named("5m", T0 + timedelta(minutes=i)))["funnel"][0]["sessions"] == (1 if i < 5 else 0)
    assert len(p._cache) <= Projection.CACHE_LIMIT
