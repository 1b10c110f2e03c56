"""Per-variant analysis from the engine's facts, and the rules of an experiment's definition."""

from __future__ import annotations

import itertools
import random
from datetime import UTC, datetime

import pytest

from kasse_common.errors import Conflict, Unprocessable
from kasse_contracts.events import ExperimentMetric, ExperimentParameter, ExperimentStatus, GuardrailMetric, Variant
from kasse_metrics.application.experiment_feed import observations
from kasse_metrics.domain import experiment_definitions as rules
from kasse_metrics.domain.experiment_analysis import ExperimentAnalysis
from kasse_metrics.domain.facts import Captured, CartAdded, CheckoutBegan, Exposed, Fact, PayFailed, Placed, Refunded

pytestmark = pytest.mark.unit

T0 = datetime(2026, 12, 1, 10, tzinfo=UTC)
MS = int(T0.timestamp() * 1000)


def spec(**kw: object) -> rules.ExperimentSpec:
    base: dict[str, object] = {
        "name": "free shipping from 35",
        "parameter": ExperimentParameter.FREE_SHIPPING_THRESHOLD,
        "variants": (Variant(name="control", weight=50, value="5000"), Variant(name="low", weight=50, value="3500")),
        "primary_metric": ExperimentMetric.CONVERSION_RATE,
        "guardrails": (GuardrailMetric.PAYMENT_FAILURE_RATE, GuardrailMetric.REFUND_RATE),
        "baseline": 0.1,
        "minimum_detectable_effect": 0.2,
    }
    base.update(kw)
    return rules.ExperimentSpec(**base)  # type: ignore[arg-type]


class Script:
    """Sessions of a free-shipping experiment, and the facts the engine would make of their events."""

    def __init__(self) -> None:
        self.facts: list[Fact] = []
        self.n = 0

    def _id(self) -> str:
        self.n += 1
        return f"evt_{self.n}"

    def session(
        self,
        sid: str,
        variant: str,
        *,
        cart: bool = False,
        pay: int | None = None,
        fail: bool = False,
        refund: bool = False,
    ) -> None:
        f = self.facts
        f.append(Exposed(f"exp|{sid}", MS, 0, sid, "exp_fs", variant))
        if cart or pay is not None or fail:
            f.append(CartAdded(self._id(), MS + 1, 0, sid, f"cart_{sid}"))
        if pay is not None or fail:
            order = f"ord_{sid}"
            f.append(CheckoutBegan(self._id(), MS + 2, 0, sid, f"cart_{sid}"))
            f.append(Placed(self._id(), MS + 3, 0, sid, order, f"cart_{sid}", pay or 999, "EUR"))
            if fail:
                f.append(PayFailed(self._id(), MS + 4, 0, sid, order, False))
            if pay is not None:
                f.append(Captured(self._id(), MS + 5, 0, sid, order, pay, "EUR"))
            if refund:
                f.append(Refunded(self._id(), MS + 6, 0, sid, order, pay or 0, "EUR"))


def analysis_with(definition_status: ExperimentStatus = ExperimentStatus.RUNNING) -> ExperimentAnalysis:
    d = rules.new_definition("exp_fs", spec(), T0)
    if definition_status is ExperimentStatus.RUNNING:
        started = rules.start(d, T0)
        assert started is not None
        d = started
    a = ExperimentAnalysis()
    a.set_definitions([d])
    return a


def test_per_variant_numbers_equal_the_script_whatever_the_order_and_however_often_facts_arrive() -> None:
    s = Script()
    s.session("a1", "control", cart=True)
    s.session("a2", "control", pay=4000)
    s.session("a3", "control", fail=True)
    s.session("a4", "control")
    s.session("b1", "low", pay=3600, refund=True)
    s.session("b2", "low", pay=2000)
    s.session("b3", "low", cart=True)

    once = analysis_with()
    once.observe_all(observations(s.facts))
    shuffled = list(s.facts) * 3  # redeliveries and replays of every fact
    random.Random(3).shuffle(shuffled)
    thrice = analysis_with()
    thrice.observe_all(observations(shuffled))

    for a in (once, thrice):
        r = a.report("exp_fs")
        control, low = r["variants"]
        assert control["sessions"] == 4 and low["sessions"] == 3
        assert [x["sessions"] for x in control["funnel"]] == [4, 3, 2, 2, 1]
        assert [x["sessions"] for x in low["funnel"]] == [3, 3, 2, 2, 2]
        assert control["conversion_rate"] == pytest.approx(1 / 4)
        assert low["conversion_rate"] == pytest.approx(2 / 3)
        assert control["revenue"] == 4000 and low["revenue"] == 5600
        assert low["revenue_per_session"] == pytest.approx(5600 / 3)
        assert low["average_order_value"] == pytest.approx(2800)
        assert control["payment_failure_rate"] == pytest.approx(1 / 2)  # a3 failed, a2 captured
        assert low["refund_rate"] == pytest.approx(1 / 2)
        cmp = low["comparison"]
        assert cmp["difference"] == pytest.approx(2 / 3 - 1 / 4)
        assert low["decision"] == "keep_running"  # seven sessions decide nothing
        assert r["sample_ratio"]["mismatch"] is False


def test_a_variant_weighted_zero_reports_instead_of_failing() -> None:
    """Weights 100/0 are a valid definition (a variant switched off); the report must still compute."""
    d = rules.new_definition(
        "exp_fs",
        spec(variants=(Variant(name="control", weight=100, value="5000"), Variant(name="low", weight=0, value="3500"))),
        T0,
    )
    started = rules.start(d, T0)
    assert started is not None
    s = Script()
    s.session("a1", "control", pay=4000)
    s.session("a2", "control", cart=True)
    a = ExperimentAnalysis()
    a.set_definitions([started])
    a.observe_all(observations(s.facts))
    r = a.report("exp_fs")
    assert [v["sessions"] for v in r["variants"]] == [2, 0]
    assert r["sample_ratio"]["mismatch"] is False

    s.session("b1", "low", cart=True)  # nobody can be assigned a variant weighted 0
    a.observe_all(observations(s.facts))
    assert a.report("exp_fs")["sample_ratio"]["mismatch"] is True


def test_a_big_true_lift_is_decided_and_a_lopsided_split_raises_the_alarm_instead() -> None:
    rng = random.Random(11)
    s = Script()
    for i in range(3000):
        variant = "control" if i % 2 else "low"
        rate = 0.10 if variant == "control" else 0.16
        s.session(f"s{i}", variant, pay=2500 if rng.random() < rate else None)
    a = analysis_with()
    a.observe_all(observations(s.facts))
    r = a.report("exp_fs")
    assert r["decision"] == "variant_better", r["variants"][1]["comparison"]
    low = r["variants"][1]["comparison"]
    assert low["always_valid_interval"][0] > 0

    lopsided = Script()
    for i in range(3000):
        variant = "control" if rng.random() < 0.45 else "low"
        lopsided.session(f"t{i}", variant, pay=2500 if rng.random() < 0.1 else None)
    b = analysis_with()
    b.observe_all(observations(lopsided.facts))
    rb = b.report("exp_fs")
    assert rb["sample_ratio"]["mismatch"] is True
    assert rb["decision"] == "sample_ratio_mismatch"


def test_changing_weights_of_a_running_experiment_is_refused_with_the_reason() -> None:
    draft = rules.new_definition("exp_fs", spec(), T0)
    heavier = spec(
        variants=(Variant(name="control", weight=30, value="5000"), Variant(name="low", weight=70, value="3500"))
    )
    revised = rules.revise(draft, heavier, T0)  # a draft may change anything
    assert revised.revision == 2 and revised.variants[1].weight == 70
    running = rules.start(revised, T0)
    assert running is not None and running.status is ExperimentStatus.RUNNING and running.started_at == T0
    assert rules.start(running, T0) is None  # idempotent
    with pytest.raises(Conflict, match="weights"):
        rules.revise(running, spec(), T0)
    renamed = rules.revise(running, spec(name="renamed", variants=heavier.variants), T0)
    assert renamed.name == "renamed"
    stopped = rules.stop(renamed, T0)
    assert stopped is not None and stopped.status is ExperimentStatus.STOPPED
    with pytest.raises(Conflict):
        rules.start(stopped, T0)
    with pytest.raises(Conflict):
        rules.revise(stopped, spec(), T0)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"variants": (Variant(name="control", weight=1),)}, "variants"),
        ({"variants": (Variant(name="a", weight=1), Variant(name="a", weight=1))}, "variants"),
        ({"variants": (Variant(name="a", weight=0), Variant(name="b", weight=1))}, "variants"),
        ({"variants": (Variant(name="a", weight=1, value="35 EUR"), Variant(name="b", weight=1))}, "variants"),
        ({"baseline": 1.5}, "baseline"),
        ({"minimum_detectable_effect": 0.0}, "minimum_detectable_effect"),
        ({"name": " "}, "name"),
    ],
)
def test_bad_definitions_are_refused_saying_what_is_wrong(change: dict[str, object], field: str) -> None:
    with pytest.raises(Unprocessable) as refused:
        rules.new_definition("exp_x", spec(**change), T0)
    assert refused.value.extra.get("field") == field


def test_the_analysis_survives_a_snapshot_round_trip() -> None:
    import msgspec

    s = Script()
    s.session("a1", "control", pay=1200, refund=True)
    s.session("a2", "control", fail=True)
    s.session("b1", "low", cart=True)
    a = analysis_with()
    a.observe_all(observations(s.facts))
    restored = analysis_with()
    restored.restore(msgspec.msgpack.decode(msgspec.msgpack.encode(a.state())))
    assert restored.report("exp_fs")["variants"] == a.report("exp_fs")["variants"]
    restored.observe_all(observations(s.facts))  # replayed after the restore: nothing changes
    assert restored.report("exp_fs")["variants"] == a.report("exp_fs")["variants"]


def test_the_state_stays_bounded_by_the_conversion_window_and_the_numbers_stay_exact() -> None:
    """Two days of sessions (a new one every 20 s, each active for up to 20 minutes, some exposed to
    nothing) through a one-hour conversion window: the bounded analysis holds about one window of
    sessions, the reference (every session kept) holds all of them, and their reports are equal, with
    redeliveries of recent and of long-folded facts, and a snapshot round trip half-way."""
    import msgspec

    rng = random.Random(17)
    minute = 60_000
    facts: list[Fact] = []
    n_sessions = 2 * 24 * 180
    ids = itertools.count()

    def fact_id() -> str:
        return f"evt_{next(ids)}"

    for i in range(n_sessions):
        start = MS + i * 20_000
        sid = f"s{i}"
        t = start
        if i % 10:  # one session in ten is never exposed (e.g. it never opened a cart)
            variant = "low" if rng.random() < 0.5 else "control"
            facts.append(Exposed(f"exp|{sid}", t, 0, sid, "exp_fs", variant))
        if rng.random() < 0.6:
            t += rng.randrange(minute)
            facts.append(CartAdded(fact_id(), t, 0, sid, f"cart_{sid}"))
            if rng.random() < 0.5:
                t += rng.randrange(5 * minute)
                facts.append(CheckoutBegan(fact_id(), t, 0, sid, f"cart_{sid}"))
                order = f"ord_{sid}"
                amount = rng.randrange(1000, 20_000)
                t += rng.randrange(5 * minute)
                facts.append(Placed(fact_id(), t, 0, sid, order, f"cart_{sid}", amount, "EUR"))
                t += rng.randrange(5 * minute)
                if rng.random() < 0.15:
                    facts.append(PayFailed(fact_id(), t, 0, sid, order, rng.random() < 0.2))
                else:
                    facts.append(Captured(fact_id(), t, 0, sid, order, amount, "EUR"))
                    if rng.random() < 0.1:
                        facts.append(Refunded(fact_id(), t + rng.randrange(5 * minute), 0, sid, order, amount, "EUR"))
    facts.sort(key=lambda f: f.ms)
    # Redeliveries: every 50th fact again a little later, and every 200th again a day later (long folded).
    stream: list[Fact] = []
    pending: dict[int, list[Fact]] = {}
    for k, f in enumerate(facts):
        stream.append(f)
        stream.extend(pending.pop(k, []))
        if k % 50 == 0:
            pending.setdefault(k + 5, []).append(f)  # again five facts later
        if k % 200 == 0:
            stream.append(f)  # an immediate duplicate
    late = [f for k, f in enumerate(facts[: len(facts) // 4]) if k % 200 == 1]  # of the first half-day

    def bounded() -> ExperimentAnalysis:
        a = ExperimentAnalysis(conversion_window_ms=60 * minute, fold_every_ms=10 * minute)
        a.set_definitions(analysis_with().definitions.values())
        return a

    reference = ExperimentAnalysis(conversion_window_ms=None)
    reference.set_definitions(analysis_with().definitions.values())
    a = bounded()
    most_held = 0
    half = len(stream) // 2
    for k in range(0, len(stream), 500):
        batch = stream[k : k + 500]
        for analysis in (reference, a):
            analysis.observe_all(observations(batch))
        if k <= half < k + 500:  # a restart half-way: snapshot, restore into a fresh instance
            restored = bounded()
            restored.restore(msgspec.msgpack.decode(msgspec.msgpack.encode(a.state())))
            a = restored
        if k > half and late:  # the long-folded facts delivered again, a day late
            for analysis in (reference, a):
                analysis.observe_all(observations(late))
            late = []
        most_held = max(most_held, len(a.sessions))

    assert len(reference.sessions) == len({f.session for f in facts})
    # One window (180 sessions an hour) plus sessions' activity and the fold period: far below the total.
    assert most_held <= 180 * 2, most_held
    assert a.sessions_folded > n_sessions * 0.9
    assert a.late_dropped > 0  # the day-late redeliveries were dropped, not counted again
    got, want = a.report("exp_fs"), reference.report("exp_fs")
    assert got["variants"] == want["variants"]
    assert got["sessions"] == want["sessions"] == n_sessions - n_sessions // 10
    assert got["sample_ratio"] == want["sample_ratio"]
