"""The statistics of an A/B test: differences, intervals, an always-valid decision, sample-ratio mismatch.

Pure Python (math and statistics only), no I/O.

The method (also in the service README):
- Every metric is a mean per unit: conversion rate = mean of 0/1 per exposed session, revenue per
  session = mean revenue per exposed session, average order value = mean per order of those sessions;
  guardrails: payment failure rate = mean of 0/1 per order with a payment outcome, refund rate = mean
  of 0/1 per captured order. A variant keeps n, Σx and Σx² per metric (`MeanStats`), which is all the
  tests need and can be updated incrementally.
- Difference to control: θ̂ = mean(variant) - mean(control), standard error s = √(var_v/n_v + var_c/n_c)
  (unpooled, Welch); a fixed-horizon 95 % interval θ̂ ± 1.96·s is shown for reference.
- The decision is the **mixture sequential probability ratio test (mSPRT)** of Johari, Koomen,
  Pekelis and Walsh ("Always valid inference", Operations Research 2022), with a normal mixing
  distribution N(0, τ²) over the true difference:
      Λ = √(s² / (s² + τ²)) · exp(τ² θ̂² / (2 s² (s² + τ²)))
  Λ is (asymptotically) a non-negative martingale under "no difference", so by Ville's inequality
  P(Λ ever ≥ 1/alpha) ≤ alpha: the always-valid p-value 1/Λ may be looked at after every session and the
  test still makes a false decision at most alpha of the time. Inverting it gives the always-valid
  (confidence-sequence) interval θ̂ ± √(2 s² (s² + τ²)/τ² · (ln(1/alpha) + ½ ln((s² + τ²)/s²))), the
  interval the dashboard shows next to the decision; it contains 0 exactly when p > alpha.
- Mixing variance τ²: τ is the **absolute minimum detectable effect** of the experiment's plan
  (baseline x relative MDE). The mixture's power is highest for true effects near τ and falls off
  slowly on either side, so this makes the test most sensitive where the shop said it cares; a much
  larger τ wastes power on small effects, a much smaller one waits a long time for large effects.
- Planned sample: the smallest n per variant at which the mSPRT, looked at only once at n, would reach
  the requested power for the MDE (normal approximation). Looking earlier can only decide earlier, so
  the power within the plan is at least that. At the planned sample without a decision the answer is
  "no detectable difference" (the effect is, with that power, smaller than the MDE).
- With several variants each is compared with the control at alpha/(k-1) (Bonferroni).
- Sample-ratio mismatch: Pearson's χ² goodness of fit of the exposed sessions per variant against the
  configured weights; an alarm at p < 0.001 (the usual threshold: SRM is checked continuously, and a
  true SRM is large) once at least 100 sessions were exposed. An experiment with SRM gets no decision:
  the assignment or the exposure logging is broken, so the comparison is not randomised any more.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from statistics import NormalDist

_STANDARD_NORMAL = NormalDist()
SRM_P_THRESHOLD = 0.001
SRM_MIN_SESSIONS = 100
MIN_UNITS_FOR_DECISION = 100  # per arm: below this the normal approximation is not trusted


@dataclass(frozen=True)
class MeanStats:
    """Sufficient statistics of a per-unit metric: n, Σx, Σx²."""

    n: int = 0
    total: float = 0.0
    total_sq: float = 0.0

    @classmethod
    def of(cls, values: Sequence[float]) -> MeanStats:
        return cls(len(values), float(sum(values)), float(sum(v * v for v in values)))

    @classmethod
    def proportion(cls, successes: int, n: int) -> MeanStats:
        return cls(n, float(successes), float(successes))

    def add(self, x: float) -> MeanStats:
        return MeanStats(self.n + 1, self.total + x, self.total_sq + x * x)

    def __add__(self, other: MeanStats) -> MeanStats:
        return MeanStats(self.n + other.n, self.total + other.total, self.total_sq + other.total_sq)

    def __sub__(self, other: MeanStats) -> MeanStats:
        return MeanStats(self.n - other.n, self.total - other.total, self.total_sq - other.total_sq)

    @property
    def mean(self) -> float | None:
        return self.total / self.n if self.n else None

    @property
    def variance(self) -> float | None:
        """Sample variance (n - 1); None below two units."""
        if self.n < 2:
            return None
        return max(0.0, (self.total_sq - self.total * self.total / self.n) / (self.n - 1))


class Decision(StrEnum):
    KEEP_RUNNING = "keep_running"
    VARIANT_BETTER = "variant_better"
    VARIANT_WORSE = "variant_worse"
    NO_DETECTABLE_DIFFERENCE = "no_detectable_difference"  # planned sample reached, no decision
    GUARDRAIL_BREACHED = "guardrail_breached"
    SAMPLE_RATIO_MISMATCH = "sample_ratio_mismatch"


@dataclass(frozen=True)
class Interval:
    low: float
    high: float

    def contains(self, x: float) -> bool:
        return self.low <= x <= self.high


@dataclass(frozen=True)
class Comparison:
    """Variant vs control on one metric."""

    control_mean: float | None
    variant_mean: float | None
    difference: float | None
    relative_difference: float | None
    ci95: Interval | None  # fixed-horizon reference
    always_valid_interval: Interval | None  # at the comparison's alpha
    always_valid_p: float  # 1/Λ, capped at 1
    significant: bool  # always_valid_p <= alpha (and enough units)


def _std_error_sq(control: MeanStats, variant: MeanStats) -> float | None:
    vc, vv = control.variance, variant.variance
    if vc is None or vv is None:
        return None
    return vc / control.n + vv / variant.n


def msprt_likelihood_ratio(difference: float, se_sq: float, tau: float) -> float:
    """Λ of the normal-mixture SPRT for H0: θ = 0, mixing N(0, τ²) (see the module docstring)."""
    tau_sq = tau * tau
    exponent = tau_sq * difference * difference / (2.0 * se_sq * (se_sq + tau_sq))
    # exp overflows past ~709: Λ is then astronomically large, and 1/Λ is 0 to any precision we show.
    return math.sqrt(se_sq / (se_sq + tau_sq)) * math.exp(min(exponent, 700.0))


def always_valid_half_width(se_sq: float, tau: float, alpha: float) -> float:
    tau_sq = tau * tau
    return math.sqrt(
        2.0 * se_sq * (se_sq + tau_sq) / tau_sq * (math.log(1.0 / alpha) + 0.5 * math.log((se_sq + tau_sq) / se_sq))
    )


def compare(control: MeanStats, variant: MeanStats, *, tau: float, alpha: float = 0.05) -> Comparison:
    """Difference, fixed 95 % interval, always-valid p-value and interval of variant vs control."""
    if tau <= 0:
        raise ValueError("the mixing standard deviation tau must be positive")
    mc, mv = control.mean, variant.mean
    diff = None if mc is None or mv is None else mv - mc
    rel = None if diff is None or not mc else diff / mc
    se_sq = _std_error_sq(control, variant)
    if diff is None or se_sq is None:
        return Comparison(mc, mv, diff, rel, None, None, 1.0, False)
    if se_sq == 0.0:
        # No variance in either arm (every unit equal): identical means carry no evidence; different
        # constant means are certain but a normal approximation says nothing honest, so no decision.
        return Comparison(mc, mv, diff, rel, Interval(diff, diff), Interval(diff, diff), 1.0, False)
    se = math.sqrt(se_sq)
    z = _STANDARD_NORMAL.inv_cdf(0.975)
    p = min(1.0, 1.0 / msprt_likelihood_ratio(diff, se_sq, tau))
    half = always_valid_half_width(se_sq, tau, alpha)
    enough = min(control.n, variant.n) >= MIN_UNITS_FOR_DECISION
    return Comparison(
        control_mean=mc,
        variant_mean=mv,
        difference=diff,
        relative_difference=rel,
        ci95=Interval(diff - z * se, diff + z * se),
        always_valid_interval=Interval(diff - half, diff + half),
        always_valid_p=p,
        significant=enough and p <= alpha,
    )


def planned_units_per_variant(
    baseline_mean: float, baseline_sd: float, *, mde_relative: float, alpha: float = 0.05, power: float = 0.8
) -> int:
    """Units per variant at which the mSPRT (looked at once, at n) has `power` for the relative MDE.

    The variant's sd is taken equal to the control's except for proportions, where the caller passes
    the sd at the baseline and this function recomputes it at the lifted rate (`proportion_sd`).
    """
    if not 0 < alpha < 1 or not 0 < power < 1:
        raise ValueError("alpha and power must be in (0, 1)")
    effect = abs(baseline_mean * mde_relative)
    if effect <= 0 or baseline_sd <= 0:
        raise ValueError("the baseline and the minimum detectable effect must be positive")
    return _smallest_n(lambda n: 2 * baseline_sd**2 / n, effect, alpha, power)


def planned_sessions_for_rate(
    baseline_rate: float, *, mde_relative: float, alpha: float = 0.05, power: float = 0.8
) -> int:
    """Sessions per variant for a conversion-type rate (Bernoulli variances at baseline and lifted rate)."""
    if not 0 < baseline_rate < 1:
        raise ValueError("a baseline rate is in (0, 1)")
    p0 = baseline_rate
    p1 = min(max(p0 * (1 + mde_relative), 1e-9), 1 - 1e-9)
    effect = abs(p1 - p0)
    if effect <= 0:
        raise ValueError("the minimum detectable effect must not be zero")
    return _smallest_n(lambda n: (p0 * (1 - p0) + p1 * (1 - p1)) / n, effect, alpha, power)


def _smallest_n(se_sq_at: Callable[[int], float], effect: float, alpha: float, power: float) -> int:
    z_power = _STANDARD_NORMAL.inv_cdf(power)

    def powerful(n: int) -> bool:
        se_sq = se_sq_at(n)
        half = always_valid_half_width(se_sq, effect, alpha)  # τ = the MDE (absolute)
        return (effect - half) / math.sqrt(se_sq) >= z_power

    hi = 2
    while not powerful(hi):
        hi *= 2
        if hi > 1 << 40:
            raise ValueError("no practical sample size reaches that power")
    lo = hi // 2
    while lo + 1 < hi:
        mid = (lo + hi) // 2
        if powerful(mid):
            hi = mid
        else:
            lo = mid
    return max(hi, MIN_UNITS_FOR_DECISION)


# -- sample-ratio mismatch ----------------------------------------------------------------------


def _regularized_upper_gamma(a: float, x: float) -> float:
    """Q(a, x) = Γ(a, x)/Γ(a): a series below a + 1, a continued fraction above (Numerical Recipes)."""
    if x <= 0:
        return 1.0
    log_prefix = a * math.log(x) - x - math.lgamma(a)
    if x < a + 1:
        term = total = 1.0 / a
        ap = a
        for _ in range(10_000):
            ap += 1
            term *= x / ap
            total += term
            if abs(term) < abs(total) * 1e-15:
                break
        return max(0.0, 1.0 - total * math.exp(log_prefix))
    tiny = 1e-300
    b = x + 1 - a
    c = 1 / tiny
    d = 1 / b
    h = d
    for i in range(1, 10_000):
        an = -i * (i - a)
        b += 2
        d = an * d + b
        d = tiny if abs(d) < tiny else d
        c = b + an / c
        c = tiny if abs(c) < tiny else c
        d = 1 / d
        delta = d * c
        h *= delta
        if abs(delta - 1) < 1e-15:
            break
    return min(1.0, math.exp(log_prefix) * h)


def chi_square_sf(statistic: float, dof: int) -> float:
    """P(χ²_dof ≥ statistic)."""
    if dof < 1:
        raise ValueError("degrees of freedom must be at least 1")
    return _regularized_upper_gamma(dof / 2.0, statistic / 2.0)


@dataclass(frozen=True)
class SampleRatio:
    observed: dict[str, int]
    expected_share: dict[str, float]
    chi_square: float
    p_value: float
    mismatch: bool


def sample_ratio_check(observed: Mapping[str, int], weights: Mapping[str, float]) -> SampleRatio:
    """Pearson's χ² of the observed sessions per variant against the configured weights."""
    total_weight = sum(weights.values())
    if total_weight <= 0:
        raise ValueError("weights must add up to more than 0")
    share = {v: w / total_weight for v, w in weights.items()}
    counts = {v: int(observed.get(v, 0)) for v in weights}
    n = sum(counts.values())
    if any(counts[v] for v, s in share.items() if s == 0):
        # A session in a variant weighted 0 cannot come from the assignment: certain mismatch.
        return SampleRatio(counts, share, 0.0, 0.0, True)
    weighted = [s for s in share.values() if s > 0]
    if n == 0 or len(weighted) < 2:  # one variant takes everyone: nothing to compare the split with
        return SampleRatio(counts, share, 0.0, 1.0, False)
    stat = sum((counts[v] - n * s) ** 2 / (n * s) for v, s in share.items() if s > 0)
    p = chi_square_sf(stat, len(weighted) - 1)
    return SampleRatio(counts, share, stat, p, n >= SRM_MIN_SESSIONS and p < SRM_P_THRESHOLD)


def decide(
    primary: Comparison,
    *,
    higher_is_better: bool = True,
    guardrails: Sequence[Comparison] = (),
    srm: SampleRatio | None = None,
    units: int,
    planned_units: int | None,
) -> Decision:
    """The decision for one variant against the control (guardrails: lower is better)."""
    if srm is not None and srm.mismatch:
        return Decision.SAMPLE_RATIO_MISMATCH
    for g in guardrails:
        if g.significant and g.difference is not None and g.difference > 0:
            return Decision.GUARDRAIL_BREACHED
    if primary.significant and primary.difference is not None and primary.difference != 0:
        better = (primary.difference > 0) == higher_is_better
        return Decision.VARIANT_BETTER if better else Decision.VARIANT_WORSE
    if planned_units is not None and units >= planned_units:
        return Decision.NO_DETECTABLE_DIFFERENCE
    return Decision.KEEP_RUNNING
