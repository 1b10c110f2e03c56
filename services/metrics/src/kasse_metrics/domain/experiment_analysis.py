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
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
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

ALPHA = 0.05
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


@dataclass(frozen=True)
class OrderPlacedObs:
    session: str
    order: str


@dataclass(frozen=True)
class PaymentCapturedObs:
    session: str
    order: str
    amount: int
    currency: str


@dataclass(frozen=True)
class PaymentFailedObs:
    session: str
    order: str
    fraud: bool


@dataclass(frozen=True)
class RefundObs:
    session: str
    order: str


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

    def order(self, order_id: str) -> _Order:
        o = self.orders.get(order_id)
        if o is None:
            o = self.orders[order_id] = _Order()
        return o


class ExperimentAnalysis:
    """Exposures and the outcomes of sessions, and the per-variant report computed from them."""

    def __init__(self) -> None:
        self.definitions: dict[str, ExperimentChanged] = {}
        # experiment → session → (time, variant) of the earliest exposure
        self.exposures: dict[str, dict[str, tuple[int, str]]] = {}
        self.sessions: dict[str, _Session] = {}
        self.version = 0
        self._cache: dict[str, tuple[int, dict[str, Any]]] = {}

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
        return n

    def _session(self, session_id: str) -> _Session:
        s = self.sessions.get(session_id)
        if s is None:
            s = self.sessions[session_id] = _Session()
        return s

    def observe(self, o: Observation) -> None:
        if isinstance(o, Exposure):
            by_session = self.exposures.setdefault(o.experiment, {})
            current = by_session.get(o.session)
            if current is None or (o.at_ms, o.variant) < current:
                by_session[o.session] = (o.at_ms, o.variant)
        elif isinstance(o, SessionStep):
            self._session(o.session).steps.add(o.step.value)
        elif isinstance(o, OrderPlacedObs):
            self._session(o.session).order(o.order).placed = True
        elif isinstance(o, PaymentCapturedObs):
            order = self._session(o.session).order(o.order)
            if order.captured is None:
                order.captured = (o.amount, o.currency)
        elif isinstance(o, PaymentFailedObs):
            if not o.fraud:
                self._session(o.session).order(o.order).failed = True
        elif isinstance(o, RefundObs):
            self._session(o.session).order(o.order).refunded = True

    # -- snapshot (plain data; the caller encodes it) --------------------------------------------
    def state(self) -> dict[str, Any]:
        return {
            "exposures": {e: {s: [ms, v] for s, (ms, v) in by.items()} for e, by in self.exposures.items()},
            "sessions": {
                sid: [
                    sorted(s.steps),
                    {o: [x.placed, x.captured and list(x.captured), x.failed, x.refunded] for o, x in s.orders.items()},
                ]
                for sid, s in self.sessions.items()
            },
        }

    def restore(self, state: dict[str, Any]) -> None:
        self.exposures = {e: {s: (ms, v) for s, (ms, v) in by.items()} for e, by in state["exposures"].items()}
        self.sessions = {}
        for sid, (steps, orders) in state["sessions"].items():
            session = self.sessions[sid] = _Session(steps=set(steps))
            for order_id, (placed, captured, failed, refunded) in orders.items():
                session.orders[order_id] = _Order(placed, tuple(captured) if captured else None, failed, refunded)
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

    def _variant_stats(self, definition: ExperimentChanged) -> dict[str, dict[str, Any]]:
        names = [v.name for v in definition.variants]
        stats: dict[str, dict[str, Any]] = {
            n: {
                "funnel": dict.fromkeys(FUNNEL_STEPS, 0),
                "conversion": MeanStats(),
                "revenue_per_session": MeanStats(),
                "aov": MeanStats(),
                "payment_failure": MeanStats(),
                "refund": MeanStats(),
                "revenue": 0,
            }
            for n in names
        }
        empty = _Session()
        for session_id, (_, variant) in self.exposures.get(definition.experiment_id, {}).items():
            v = stats.get(variant)
            if v is None:  # a variant the definition does not have (any more): not analysed
                continue
            s = self.sessions.get(session_id, empty)
            funnel = v["funnel"]
            funnel["exposed"] += 1
            placed = any(o.placed for o in s.orders.values())
            revenue = 0
            paid = False
            for o in s.orders.values():
                if o.captured is not None:
                    paid = True
                    if o.captured[1] == definition.currency:
                        revenue += o.captured[0]
                        v["aov"] = v["aov"].add(o.captured[0])
                    v["refund"] = v["refund"].add(1.0 if o.refunded else 0.0)
                    v["payment_failure"] = v["payment_failure"].add(0.0)
                elif o.failed:
                    v["payment_failure"] = v["payment_failure"].add(1.0)
            reached = {
                "added_to_cart": Step.ADDED_TO_CART.value in s.steps,
                "checkout_started": Step.CHECKOUT_STARTED.value in s.steps,
                "order_placed": placed,
                "paid": paid,
            }
            for step, hit in reached.items():
                funnel[step] += hit
            v["conversion"] = v["conversion"].add(1.0 if paid else 0.0)
            v["revenue_per_session"] = v["revenue_per_session"].add(float(revenue))
            v["revenue"] += revenue
        return stats

    def _compute(self, d: ExperimentChanged) -> dict[str, Any]:
        stats = self._variant_stats(d)
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
        planned = self._planned(d, stats[control][primary_key])
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
                decision = decide(
                    primary, guardrails=list(guards.values()), srm=srm, units=units, planned_units=planned
                )
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

    @staticmethod
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
