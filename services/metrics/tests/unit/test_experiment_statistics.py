"""The experiment statistics: seeded simulations of A/B and A/A tests watched continuously, and SRM.

Every simulation is seeded and bounded (a few million Bernoulli draws in all, ~2 s).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import pytest

from kasse_metrics.domain.experiments import (
    Decision,
    MeanStats,
    chi_square_sf,
    compare,
    decide,
    planned_sessions_for_rate,
    sample_ratio_check,
)

pytestmark = pytest.mark.unit

BASELINE = 0.10  # conversion rate of the control
MDE = 0.20  # relative: the plan wants to find a 20 % lift
ALPHA = 0.05
PEEK_EVERY = 50  # the shop manager looks after every 50 sessions per variant
PLANNED = planned_sessions_for_rate(BASELINE, mde_relative=MDE, alpha=ALPHA, power=0.8)
TAU = BASELINE * MDE  # the mixing sd: the absolute minimum detectable effect


@dataclass(frozen=True)
class Run:
    decision: Decision
    sessions_per_variant: int


def simulate(rng: random.Random, control_rate: float, variant_rate: float) -> Run:
    """Sessions arrive in both variants; after every PEEK_EVERY per variant someone looks and stops at
    the first decision (the peeking that breaks a naive fixed-horizon test)."""
    conversions = {"control": 0, "variant": 0}
    n = 0
    while n < PLANNED:
        step = min(PEEK_EVERY, PLANNED - n)
        conversions["control"] += sum(rng.random() < control_rate for _ in range(step))
        conversions["variant"] += sum(rng.random() < variant_rate for _ in range(step))
        n += step
        c = compare(
            MeanStats.proportion(conversions["control"], n),
            MeanStats.proportion(conversions["variant"], n),
            tau=TAU,
            alpha=ALPHA,
        )
        decision = decide(c, units=n, planned_units=PLANNED)
        if decision is not Decision.KEEP_RUNNING:
            return Run(decision, n)
    return Run(Decision.NO_DETECTABLE_DIFFERENCE, n)


def test_planned_sample_is_larger_than_the_fixed_horizon_one_but_of_its_order() -> None:
    # Fixed horizon, two-sided 5 %, 80 % power: ((z.975 + z.8)^2 (p0 q0 + p1 q1)) / δ^2 ≈ 3,840 per arm.
    p0, p1 = BASELINE, BASELINE * (1 + MDE)
    fixed = (1.959964 + 0.841621) ** 2 * (p0 * (1 - p0) + p1 * (1 - p1)) / (p1 - p0) ** 2
    assert fixed < PLANNED < 2.5 * fixed


def test_a_true_20_percent_lift_is_decided_for_the_variant_within_the_planned_sample() -> None:
    run = simulate(random.Random(17), BASELINE, BASELINE * 1.2)
    assert run.decision is Decision.VARIANT_BETTER
    assert run.sessions_per_variant <= PLANNED


def test_power_for_a_20_percent_lift_meets_the_plan() -> None:
    runs = [simulate(random.Random(1000 + seed), BASELINE, BASELINE * 1.2) for seed in range(100)]
    power = sum(r.decision is Decision.VARIANT_BETTER for r in runs) / len(runs)
    wrong_way = sum(r.decision is Decision.VARIANT_WORSE for r in runs)
    # Planned for 80 % at a single final look; looking earlier only adds chances to decide.
    assert power >= 0.8, power
    assert wrong_way == 0


def test_aa_runs_watched_continuously_decide_falsely_at_most_5_percent_of_the_time() -> None:
    runs = [simulate(random.Random(seed), BASELINE, BASELINE) for seed in range(200)]
    false_decisions = sum(r.decision in (Decision.VARIANT_BETTER, Decision.VARIANT_WORSE) for r in runs)
    assert false_decisions / len(runs) <= ALPHA, false_decisions


def test_a_naive_fixed_horizon_test_peeked_at_the_same_way_would_fail_the_same_aa_runs() -> None:
    """The control experiment for the one above: the same peeking with the 95 % interval's rule."""
    false_decisions = 0
    for seed in range(200):
        rng = random.Random(seed)
        c_conv = v_conv = n = 0
        while n < PLANNED:
            c_conv += sum(rng.random() < BASELINE for _ in range(PEEK_EVERY))
            v_conv += sum(rng.random() < BASELINE for _ in range(PEEK_EVERY))
            n += PEEK_EVERY
            ci = compare(MeanStats.proportion(c_conv, n), MeanStats.proportion(v_conv, n), tau=TAU).ci95
            if n >= 100 and ci is not None and not ci.contains(0.0):
                false_decisions += 1
                break
    assert false_decisions / 200 > 2 * ALPHA, false_decisions


def test_a_45_55_split_on_a_50_50_experiment_raises_the_sample_ratio_alarm() -> None:
    rng = random.Random(4555)
    counts = {"control": 0, "variant": 0}
    for _ in range(4000):
        counts["control" if rng.random() < 0.45 else "variant"] += 1
    srm = sample_ratio_check(counts, {"control": 50, "variant": 50})
    assert srm.mismatch, srm
    c = compare(MeanStats.proportion(400, 2000), MeanStats.proportion(600, 2000), tau=TAU)
    assert c.significant  # a big difference, yet no decision: the randomisation is broken
    assert decide(c, srm=srm, units=2000, planned_units=PLANNED) is Decision.SAMPLE_RATIO_MISMATCH


def test_fair_splits_rarely_raise_the_alarm() -> None:
    alarms = 0
    for seed in range(200):
        rng = random.Random(seed)
        counts = {"a": 0, "b": 0, "c": 0}
        for _ in range(3000):
            u = rng.random()
            counts["a" if u < 0.5 else "b" if u < 0.75 else "c"] += 1
        alarms += sample_ratio_check(counts, {"a": 2, "b": 1, "c": 1}).mismatch
    assert alarms <= 2  # nominal 0.1 %


def test_chi_square_tail_matches_known_quantiles() -> None:
    assert chi_square_sf(3.841459, 1) == pytest.approx(0.05, rel=1e-5)
    assert chi_square_sf(5.991465, 2) == pytest.approx(0.05, rel=1e-5)
    assert chi_square_sf(16.266236, 3) == pytest.approx(0.001, rel=1e-4)
    assert chi_square_sf(0.0, 4) == 1.0


def test_always_valid_interval_contains_zero_exactly_when_not_significant() -> None:
    rng = random.Random(5)
    for _ in range(200):
        n = rng.randint(100, 5000)
        c, v = rng.randint(1, n - 1), rng.randint(1, n - 1)
        cmp = compare(MeanStats.proportion(c, n), MeanStats.proportion(v, n), tau=0.02)
        assert cmp.always_valid_interval is not None and cmp.ci95 is not None
        assert cmp.always_valid_interval.contains(0.0) == (not cmp.significant)
        # the always-valid interval is wider than the fixed-horizon one
        assert cmp.always_valid_interval.high - cmp.always_valid_interval.low > cmp.ci95.high - cmp.ci95.low


def test_mean_stats_for_revenue_and_the_welch_interval() -> None:
    control = MeanStats.of([0, 0, 1000, 2000, 0, 3000])
    variant = MeanStats.of([0, 1500, 1500, 0, 4000, 0])
    assert control.mean == 1000 and variant.mean == pytest.approx(7000 / 6)
    assert control.variance == pytest.approx(1_600_000)
    cmp = compare(control, variant, tau=100.0)
    se = math.sqrt(control.variance / 6 + variant.variance / 6)  # type: ignore[operator]
    assert cmp.ci95 is not None and cmp.ci95.low == pytest.approx(1000 / 6 - 1.959964 * se, rel=1e-6)
    assert not cmp.significant  # six sessions: never a decision
    assert (control + variant) - variant == control


def test_guardrail_breach_overrides_a_better_primary() -> None:
    better = compare(MeanStats.proportion(1000, 10_000), MeanStats.proportion(1300, 10_000), tau=0.02)
    failures = compare(MeanStats.proportion(50, 1000), MeanStats.proportion(120, 1000), tau=0.02)
    assert decide(better, units=10_000, planned_units=PLANNED) is Decision.VARIANT_BETTER
    assert decide(better, guardrails=[failures], units=10_000, planned_units=PLANNED) is Decision.GUARDRAIL_BREACHED
