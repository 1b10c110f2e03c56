"""Per experiment and variant: exposed sessions, their funnel, the primary and guardrail metrics, and
the comparison with the control (statistics in `domain.experiments`). Pure Python, no I/O.

Fed with `Observation`s, the few things the analysis needs from the event stream, translated from
the KPI engine's facts by one adapter (`application.experiment_feed`), so the engine can change its
fact types without touching this module.

Every observation is idempotent: a session's variant is the one of its earliest exposure, steps are
flags, orders are keyed by order id and their outcomes are flags or the captured amount. So a
redelivered, duplicated or replayed event changes nothing, in whatever order the events arrive; the
numbers are a function of the set of events, like the KPIs.

Rules:
- A session belongs to the variant it was exposed to (the assignment is deterministic, so every
  service records the same variant; the earliest exposure wins should two ever differ). Every
  outcome of an exposed session counts for its variant: exposure happens when a service first shows
  the session the varied parameter (the cart, the recommendations), before an order can exist.
- Funnel per variant (sessions): exposed → added to cart → began checkout → placed an order → paid.
- Conversion rate: exposed sessions that paid / exposed sessions. Revenue per session: captured
  revenue in the experiment's currency / exposed sessions. Average order value: per captured order.
- Guardrails: payment failure rate = orders whose payment failed (not for fraud) and was never
  captured / orders with a payment outcome; refund rate = captured orders with a refund / captured.

Bounded state, like the KPI engine's conversion-window folding: a session idle (event time) for a
whole conversion window is folded — its final contribution is added to per-experiment, per-variant
aggregates (counts and the sums the statistics need) and it is forgotten; observations older than
the window (watermark - window) are dropped, so a redelivered event of a folded session changes
nothing. Memory is then the sessions active within one window plus the aggregates; the numbers are
exactly those of keeping every session, as long as a session's outcomes come within a conversion
window of its previous activity (the rule the funnel has too).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from operator import attrgetter
from typing import Any

from kasse_contracts.events import ExperimentChanged, ExperimentMetric, ExperimentStatus, GuardrailMetric
from kasse_metrics.domain.experiments import (
    Comparison,
    Decision,
    MeanStats,
    SampleRatio,
    compare,
    decide,
    planned_sessions_for_rate,
    planned_units_per_variant,
    sample_ratio_check,
)
from kasse_metrics.domain.idle_index import IdleIndex

ALPHA = 0.05
DAY_MS = 86_400_000
FOLD_EVERY_MS = 10 * 60_000  # of event time, as the KPI engine (kpis.FOLD_EVERY_MINUTES)
GUARDRAIL_TAU = 0.02  # guardrails: the mixture is tuned to a 2-point change in a failure/refund rate
FUNNEL_STEPS = ("exposed", "added_to_cart", "checkout_started", "order_placed", "paid")


class Step(StrEnum):
    ADDED_TO_CART = "added_to_cart"
    CHECKOUT_STARTED = "checkout_started"


@dataclass(frozen=True)
class Exposure:
    session: str
    experiment: str
    variant: str
    at_ms: int  # event time, epoch milliseconds


@dataclass(frozen=True)
class SessionStep:
    session: str
    step: Step
    at_ms: int | None = None  # event time; None: unknown (never dropped as late)


@dataclass(frozen=True)
class OrderPlacedObs:
    session: str
    order: str
    at_ms: int | None = None  # event time; None: unknown (never dropped as late)


@dataclass(frozen=True)
class PaymentCapturedObs:
    session: str
    order: str
    amount: int
    currency: str
    at_ms: int | None = None  # event time; None: unknown (never dropped as late)


@dataclass(frozen=True)
class PaymentFailedObs:
    session: str
    order: str
    fraud: bool
    at_ms: int | None = None  # event time; None: unknown (never dropped as late)


@dataclass(frozen=True)
class RefundObs:
    session: str
    order: str
    at_ms: int | None = None  # event time; None: unknown (never dropped as late)


Observation = Exposure | SessionStep | OrderPlacedObs | PaymentCapturedObs | PaymentFailedObs | RefundObs


@dataclass
class _Order:
    placed: bool = False
    captured: tuple[int, str] | None = None  # (amount, currency) of the first capture seen
    failed: bool = False  # not for fraud
    refunded: bool = False


@dataclass
class _Session:
    steps: set[str] = field(default_factory=set)
    orders: dict[str, _Order] = field(default_factory=dict)
    last_ms: int = 0  # latest event time seen: idle for a whole conversion window → folded

    def order(self, order_id: str) -> _Order:
        o = self.orders.get(order_id)
        if o is None:
            o = self.orders[order_id] = _Order()
        return o


@dataclass
class _Contribution:
    """What one session adds to its variant's numbers (its outcomes are final once it is folded)."""

    reached: dict[str, bool]
    paid: bool
    revenue: dict[str, int]  # by currency
    captured: list[tuple[int, str, bool]]  # per captured order: amount, currency, refunded
    failed: int  # orders whose payment failed (not for fraud) and were never captured


def _contribution(s: _Session) -> _Contribution:
    revenue: dict[str, int] = {}
    captured = []
    failed = 0
    for o in s.orders.values():
        if o.captured is not None:
            amount, currency = o.captured
            revenue[currency] = revenue.get(currency, 0) + amount
            captured.append((amount, currency, o.refunded))
        elif o.failed:
            failed += 1
    return _Contribution(
        reached={
            "added_to_cart": Step.ADDED_TO_CART.value in s.steps,
            "checkout_started": Step.CHECKOUT_STARTED.value in s.steps,
            "order_placed": any(o.placed for o in s.orders.values()),
            "paid": bool(captured),
        },
        paid=bool(captured),
        revenue=revenue,
        captured=captured,
        failed=failed,
    )


@dataclass
class _Aggregate:
    """Sessions of one variant summed: counts and integer sums (exact in any order, so folded and
    open sessions add up to the same numbers), independent of the definition (currency chosen later)."""

    funnel: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FUNNEL_STEPS, 0))
    paid: int = 0
    revenue: dict[str, list[int]] = field(default_factory=dict)  # currency -> [Σ session revenue, Σ its square]
    aov: dict[str, list[int]] = field(default_factory=dict)  # currency -> [captured orders, Σ amount, Σ amount²]
    refunded: list[int] = field(default_factory=lambda: [0, 0])  # [captured orders, refunded ones]
    failed: list[int] = field(default_factory=lambda: [0, 0])  # [orders with a payment outcome, failed ones]

    def add(self, c: _Contribution) -> None:
        self.funnel["exposed"] += 1
        for step, hit in c.reached.items():
            self.funnel[step] += hit
        self.paid += c.paid
        for currency, amount in c.revenue.items():
            sums = self.revenue.setdefault(currency, [0, 0])
            sums[0] += amount
            sums[1] += amount * amount
        for amount, currency, refunded in c.captured:
            stats = self.aov.setdefault(currency, [0, 0, 0])
            stats[0] += 1
            stats[1] += amount
            stats[2] += amount * amount
            self.refunded[0] += 1
            self.refunded[1] += refunded
            self.failed[0] += 1
        self.failed[0] += c.failed
        self.failed[1] += c.failed

    def merged(self, other: _Aggregate) -> _Aggregate:
        out = _Aggregate.of_state(self.state())
        for step, n in other.funnel.items():
            out.funnel[step] = out.funnel.get(step, 0) + n
        out.paid += other.paid
        for currency, sums in other.revenue.items():
            mine = out.revenue.setdefault(currency, [0, 0])
            out.revenue[currency] = [a + b for a, b in zip(mine, sums, strict=True)]
        for currency, stats in other.aov.items():
            mine = out.aov.setdefault(currency, [0, 0, 0])
            out.aov[currency] = [a + b for a, b in zip(mine, stats, strict=True)]
        out.refunded = [a + b for a, b in zip(out.refunded, other.refunded, strict=True)]
        out.failed = [a + b for a, b in zip(out.failed, other.failed, strict=True)]
        return out

    def state(self) -> list[Any]:
        return [
            dict(self.funnel),
            self.paid,
            {c: list(v) for c, v in self.revenue.items()},
            {c: list(v) for c, v in self.aov.items()},
            list(self.refunded),
            list(self.failed),
        ]

    @classmethod
    def of_state(cls, state: list[Any]) -> _Aggregate:
        funnel, paid, revenue, aov, refunded, failed = state
        return cls(
            dict(funnel),
            paid,
            {c: list(v) for c, v in revenue.items()},
            {c: list(v) for c, v in aov.items()},
            list(refunded),
            list(failed),
        )

    def stats(self, currency: str) -> dict[str, Any]:
        """The report's per-variant statistics, revenue in `currency`."""
        n = self.funnel["exposed"]
        revenue, revenue_sq = self.revenue.get(currency, [0, 0])
        orders, aov_total, aov_sq = self.aov.get(currency, [0, 0, 0])
        return {
            "funnel": dict(self.funnel),
            "conversion": MeanStats.proportion(self.paid, n),
            "revenue_per_session": MeanStats(n, float(revenue), float(revenue_sq)),
            "aov": MeanStats(orders, float(aov_total), float(aov_sq)),
            "payment_failure": MeanStats.proportion(self.failed[1], self.failed[0]),
            "refund": MeanStats.proportion(self.refunded[1], self.refunded[0]),
            "revenue": revenue,
        }


class ExperimentAnalysis:
    """Exposures and the outcomes of sessions, and the per-variant report computed from them.

    `conversion_window_ms`: how long an idle session is kept before it is folded (the KPI engine's
    conversion window); None keeps every session (the reference the tests compare with)."""

    def __init__(self, conversion_window_ms: int | None = 30 * DAY_MS, fold_every_ms: int = FOLD_EVERY_MS) -> None:
        self.definitions: dict[str, ExperimentChanged] = {}
        # experiment → session → (time, variant) of the earliest exposure, for sessions not folded yet
        self.exposures: dict[str, dict[str, tuple[int, str]]] = {}
        self.sessions: dict[str, _Session] = {}
        # experiment → variant → the folded sessions' sums
        self.folded: dict[str, dict[str, _Aggregate]] = {}
        self.window_ms = conversion_window_ms
        self.fold_every_ms = fold_every_ms
        self.watermark_ms = 0  # latest event time observed
        self.last_fold_ms = 0
        self.sessions_folded = 0
        self.late_dropped = 0  # observations older than the window: their session is (or will be) folded
        self.version = 0
        self._cache: dict[str, tuple[int, dict[str, Any]]] = {}
        self._idle = IdleIndex(fold_every_ms)  # the sessions a fold may forget

    # -- write side ---------------------------------------------------------------------------
    def set_definitions(self, definitions: Iterable[ExperimentChanged]) -> None:
        new = {d.experiment_id: d for d in definitions}
        if {k: v.revision for k, v in new.items()} != {k: v.revision for k, v in self.definitions.items()}:
            self.definitions = new
            self.version += 1

    def observe_all(self, observations: Iterable[Observation]) -> int:
        n = 0
        for o in observations:
            self.observe(o)
            n += 1
        if n:
            self.version += 1
            if self.window_ms is not None and self.watermark_ms >= self.last_fold_ms + self.fold_every_ms:
                self.fold()
        return n

    def _session(self, session_id: str, at_ms: int | None) -> _Session:
        s = self.sessions.get(session_id)
        if s is None:
            s = self.sessions[session_id] = _Session(last_ms=self.watermark_ms)
            self._idle.add(session_id, s.last_ms)
        if at_ms is not None and at_ms > s.last_ms:
            self._idle.moved(session_id, s.last_ms, at_ms)
            s.last_ms = at_ms
        return s

    def observe(self, o: Observation) -> None:
        at_ms = o.at_ms
        if at_ms is not None:
            if self.window_ms is not None and at_ms < self.watermark_ms - self.window_ms:
                self.late_dropped += 1
                return
            if at_ms > self.watermark_ms:
                self.watermark_ms = at_ms
        if isinstance(o, Exposure):
            self._session(o.session, at_ms)
            by_session = self.exposures.setdefault(o.experiment, {})
            current = by_session.get(o.session)
            if current is None or (o.at_ms, o.variant) < current:
                by_session[o.session] = (o.at_ms, o.variant)
        elif isinstance(o, SessionStep):
            self._session(o.session, at_ms).steps.add(o.step.value)
        elif isinstance(o, OrderPlacedObs):
            self._session(o.session, at_ms).order(o.order).placed = True
        elif isinstance(o, PaymentCapturedObs):
            order = self._session(o.session, at_ms).order(o.order)
            if order.captured is None:
                order.captured = (o.amount, o.currency)
        elif isinstance(o, PaymentFailedObs):
            session = self._session(o.session, at_ms)
            if not o.fraud:
                session.order(o.order).failed = True
        elif isinstance(o, RefundObs):
            self._session(o.session, at_ms).order(o.order).refunded = True

    def fold(self) -> int:
        """Fold the sessions idle for a whole conversion window into their variants' aggregates and
        forget them (sessions never exposed are only forgotten). Returns how many were folded."""
        if self.window_ms is None:
            return 0
        self.last_fold_ms = self.watermark_ms
        horizon = self.watermark_ms - self.window_ms
        stale = self._idle.idle(horizon, self.sessions, attrgetter("last_ms"))
        for sid in stale:
            self._fold_session(sid, self.sessions.pop(sid))
        if stale:
            self.version += 1
        return len(stale)

    def _fold_session(self, sid: str, session: _Session) -> None:
        contribution: _Contribution | None = None
        for experiment, by_session in self.exposures.items():
            exposure = by_session.pop(sid, None)
            if exposure is None:
                continue
            contribution = contribution or _contribution(session)
            self._aggregate(experiment, exposure[1]).add(contribution)
        self.sessions_folded += 1

    def _aggregate(self, experiment: str, variant: str) -> _Aggregate:
        by_variant = self.folded.setdefault(experiment, {})
        agg = by_variant.get(variant)
        if agg is None:
            agg = by_variant[variant] = _Aggregate()
        return agg

    # -- snapshot (plain data; the caller encodes it) --------------------------------------------
    def state(self) -> dict[str, Any]:
        return {
            "v": 2,
            "exposures": {e: {s: [ms, v] for s, (ms, v) in by.items()} for e, by in self.exposures.items()},
            "sessions": {
                sid: [
                    sorted(s.steps),
                    {o: [x.placed, x.captured and list(x.captured), x.failed, x.refunded] for o, x in s.orders.items()},
                    s.last_ms,
                ]
                for sid, s in self.sessions.items()
            },
            "folded": {e: {v: agg.state() for v, agg in by.items()} for e, by in self.folded.items()},
            "watermark_ms": self.watermark_ms,
            "last_fold_ms": self.last_fold_ms,
            "sessions_folded": self.sessions_folded,
            "late_dropped": self.late_dropped,
        }

    def restore(self, state: dict[str, Any]) -> None:
        self.exposures = {e: {s: (ms, v) for s, (ms, v) in by.items()} for e, by in state["exposures"].items()}
        # A first-version snapshot (every session, no times): its latest exposure stands for "now".
        latest = max((ms for by in self.exposures.values() for ms, _ in by.values()), default=0)
        self.watermark_ms = state.get("watermark_ms", latest)
        self.last_fold_ms = state.get("last_fold_ms", latest)
        self.sessions_folded = state.get("sessions_folded", 0)
        self.late_dropped = state.get("late_dropped", 0)
        self.folded = {
            e: {v: _Aggregate.of_state(agg) for v, agg in by.items()} for e, by in state.get("folded", {}).items()
        }
        self.sessions = {}
        for sid, saved in state["sessions"].items():
            steps, orders = saved[0], saved[1]
            last_ms = saved[2] if len(saved) > 2 else self.watermark_ms
            session = self.sessions[sid] = _Session(steps=set(steps), last_ms=last_ms)
            for order_id, (placed, captured, failed, refunded) in orders.items():
                session.orders[order_id] = _Order(placed, tuple(captured) if captured else None, failed, refunded)
        for by in self.exposures.values():  # every exposed session has its entry (folding goes by it)
            for sid in by:
                if sid not in self.sessions:
                    self.sessions[sid] = _Session(last_ms=self.watermark_ms)
        self._idle.reset()
        self.version += 1

    # -- read side ----------------------------------------------------------------------------
    def reports(self) -> list[dict[str, Any]]:
        return [self.report(e) for e in sorted(self.definitions)]

    def report(self, experiment_id: str) -> dict[str, Any]:
        cached = self._cache.get(experiment_id)
        if cached is not None and cached[0] == self.version:
            return cached[1]
        report = self._compute(self.definitions[experiment_id])
        self._cache[experiment_id] = (self.version, report)
        return report

    def variant_aggregates(self, experiment_id: str) -> dict[str, _Aggregate]:
        """Per variant (every variant seen): the folded sessions' sums plus the open sessions'
        contributions. Aggregates of disjoint sets of sessions (partitions) merge by addition."""
        out = {v: agg.merged(_Aggregate()) for v, agg in self.folded.get(experiment_id, {}).items()}
        empty = _Session()
        for session_id, (_, variant) in self.exposures.get(experiment_id, {}).items():
            agg = out.get(variant)
            if agg is None:
                agg = out[variant] = _Aggregate()
            agg.add(_contribution(self.sessions.get(session_id, empty)))
        return out

    def all_aggregates(self) -> dict[str, dict[str, _Aggregate]]:
        """`variant_aggregates` of every experiment this state has seen (what a partition publishes)."""
        return {e: self.variant_aggregates(e) for e in sorted(set(self.exposures) | set(self.folded))}

    def _variant_stats(self, definition: ExperimentChanged) -> dict[str, dict[str, Any]]:
        return variant_stats(definition, self.variant_aggregates(definition.experiment_id))

    def _compute(self, d: ExperimentChanged) -> dict[str, Any]:
        return report_of(d, self._variant_stats(d))


def variant_stats(definition: ExperimentChanged, aggregates: dict[str, _Aggregate]) -> dict[str, dict[str, Any]]:
    """The statistics of the definition's variants (a variant it does not have any more is not analysed)."""
    return {v.name: aggregates.get(v.name, _Aggregate()).stats(definition.currency) for v in definition.variants}


def merge_aggregates(parts: Iterable[dict[str, _Aggregate]]) -> dict[str, _Aggregate]:
    out: dict[str, _Aggregate] = {}
    for part in parts:
        for variant, agg in part.items():
            mine = out.get(variant)
            out[variant] = agg.merged(_Aggregate()) if mine is None else mine.merged(agg)
    return out


def aggregates_state(aggregates: dict[str, dict[str, _Aggregate]]) -> dict[str, dict[str, list[Any]]]:
    return {e: {v: agg.state() for v, agg in by.items()} for e, by in aggregates.items()}


def aggregates_of_state(state: dict[str, dict[str, list[Any]]]) -> dict[str, dict[str, _Aggregate]]:
    return {e: {v: _Aggregate.of_state(agg) for v, agg in by.items()} for e, by in state.items()}


def report_of(d: ExperimentChanged, stats: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The experiment's report from its variants' statistics (`variant_stats`)."""
    control = d.variants[0].name
    k = len(d.variants)
    alpha = ALPHA / max(1, k - 1)
    srm = sample_ratio_check(
        {n: s["funnel"]["exposed"] for n, s in stats.items()}, {v.name: v.weight for v in d.variants}
    )
    primary_key = {
        ExperimentMetric.CONVERSION_RATE: "conversion",
        ExperimentMetric.REVENUE_PER_SESSION: "revenue_per_session",
        ExperimentMetric.AVERAGE_ORDER_VALUE: "aov",
    }[d.primary_metric]
    guardrail_keys = {
        GuardrailMetric.PAYMENT_FAILURE_RATE: "payment_failure",
        GuardrailMetric.REFUND_RATE: "refund",
    }
    tau = abs(d.baseline * d.minimum_detectable_effect) or 1e-9
    planned = _planned(d, stats[control][primary_key])
    variants = []
    for v in d.variants:
        s = stats[v.name]
        row: dict[str, Any] = {
            "variant": v.name,
            "value": v.value,
            "weight": v.weight,
            "control": v.name == control,
            "sessions": s["funnel"]["exposed"],
            "funnel": [{"step": step, "sessions": s["funnel"][step]} for step in FUNNEL_STEPS],
            "conversion_rate": s["conversion"].mean,
            "revenue": s["revenue"],
            "revenue_per_session": s["revenue_per_session"].mean,
            "orders_paid": s["aov"].n,
            "average_order_value": s["aov"].mean,
            "payment_failure_rate": s["payment_failure"].mean,
            "refund_rate": s["refund"].mean,
        }
        if v.name != control:
            primary = compare(stats[control][primary_key], s[primary_key], tau=tau, alpha=alpha)
            guards = {
                g.value: compare(
                    stats[control][guardrail_keys[g]], s[guardrail_keys[g]], tau=GUARDRAIL_TAU, alpha=alpha
                )
                for g in d.guardrails
            }
            units = min(stats[control][primary_key].n, s[primary_key].n)
            decision = decide(primary, guardrails=list(guards.values()), srm=srm, units=units, planned_units=planned)
            row["comparison"] = _comparison_json(primary)
            row["guardrails"] = {g: _comparison_json(c) for g, c in guards.items()}
            row["decision"] = decision.value
        variants.append(row)
    decisions = [r["decision"] for r in variants if "decision" in r]
    return {
        "experiment_id": d.experiment_id,
        "name": d.name,
        "hypothesis": d.hypothesis,
        "parameter": d.parameter.value,
        "status": d.status.value,
        "revision": d.revision,
        "primary_metric": d.primary_metric.value,
        "guardrails": [g.value for g in d.guardrails],
        "currency": d.currency,
        "started_at": d.started_at.isoformat() if d.started_at else None,
        "stopped_at": d.stopped_at.isoformat() if d.stopped_at else None,
        "alpha": alpha,
        "method": "mSPRT: always-valid p-value, normal mixture, tau = the plan's absolute MDE",
        "mixing_sd": tau,
        "planned_units_per_variant": planned,
        "sessions": sum(r["sessions"] for r in variants),
        "sample_ratio": _srm_json(srm),
        "decision": _overall(decisions, d.status),
        "variants": variants,
    }


def _planned(d: ExperimentChanged, control: MeanStats) -> int | None:
    try:
        if d.primary_metric is ExperimentMetric.CONVERSION_RATE:
            return planned_sessions_for_rate(d.baseline, mde_relative=d.minimum_detectable_effect, alpha=ALPHA)
        sd = control.variance
        if sd is None or sd <= 0:
            return None  # revenue metrics: planned once the control shows its spread
        return planned_units_per_variant(d.baseline, sd**0.5, mde_relative=d.minimum_detectable_effect, alpha=ALPHA)
    except ValueError:
        return None


def _overall(decisions: list[str], status: ExperimentStatus) -> str:
    for first in (
        Decision.SAMPLE_RATIO_MISMATCH,
        Decision.GUARDRAIL_BREACHED,
        Decision.VARIANT_BETTER,
        Decision.VARIANT_WORSE,
    ):
        if first.value in decisions:
            return first.value
    if decisions and all(x == Decision.NO_DETECTABLE_DIFFERENCE.value for x in decisions):
        return Decision.NO_DETECTABLE_DIFFERENCE.value
    return Decision.KEEP_RUNNING.value


def _comparison_json(c: Comparison) -> dict[str, Any]:
    return {
        "control": c.control_mean,
        "variant": c.variant_mean,
        "difference": c.difference,
        "relative_difference": c.relative_difference,
        "ci95": None if c.ci95 is None else [c.ci95.low, c.ci95.high],
        "always_valid_interval": None
        if c.always_valid_interval is None
        else [c.always_valid_interval.low, c.always_valid_interval.high],
        "always_valid_p": c.always_valid_p,
        "significant": c.significant,
    }


def _srm_json(srm: SampleRatio) -> dict[str, Any]:
    return {
        "observed": srm.observed,
        "expected_share": srm.expected_share,
        "chi_square": srm.chi_square,
        "p_value": srm.p_value,
        "mismatch": srm.mismatch,
    }
