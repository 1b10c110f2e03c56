"""The rules of an experiment's definition and life: draft → running → stopped. Pure Python.

The definition *is* the `ExperimentChanged` payload (the contract every honouring service folds), so
each accepted change is one new revision of it.

- Variants: at least two, unique names, weights ≥ 0 with at least the control's > 0; the first
  variant is the control. The value must make sense for the parameter (a free-shipping threshold is
  minor units, or "" for none).
- Plan: the baseline of the primary metric (a rate in (0, 1) for conversion, minor units > 0 for
  revenue per session and AOV) and the relative minimum detectable effect (≠ 0, |mde| ≤ 10): they
  give the planned sample and the mixing variance of the sequential test.
- A running experiment's variants (names, weights, values) and parameter cannot change: that would
  move sessions between variants mid-test (assignment hashes over the weights) and compare groups
  that were not randomised alike. Name, hypothesis, guardrails and plan may change.
- A stopped experiment is final (a new experiment is a new id); start and stop are idempotent.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from kasse_common.errors import Conflict, Unprocessable
from kasse_contracts.events import (
    ExperimentChanged,
    ExperimentMetric,
    ExperimentParameter,
    ExperimentStatus,
    GuardrailMetric,
    Variant,
)


@dataclass(frozen=True)
class ExperimentSpec:
    """What an administrator gives: everything of a definition but its id, revision and life."""

    name: str
    parameter: ExperimentParameter
    variants: tuple[Variant, ...]
    primary_metric: ExperimentMetric
    baseline: float
    minimum_detectable_effect: float
    hypothesis: str = ""
    guardrails: tuple[GuardrailMetric, ...] = ()
    currency: str = "EUR"

    def validate(self) -> None:
        if not self.name.strip():
            raise Unprocessable("an experiment needs a name", field="name")
        for what, member in (
            ("parameter", self.parameter),
            ("primary_metric", self.primary_metric),
            *(("guardrails", g) for g in self.guardrails),
        ):
            if not member.is_known:
                raise Unprocessable(f"unknown {what} {str(member)!r}", field=what)
        if len(self.variants) < 2:
            raise Unprocessable("an experiment needs a control and at least one variant", field="variants")
        names = [v.name for v in self.variants]
        if len(set(names)) != len(names):
            raise Unprocessable("variant names must be unique", field="variants")
        if self.variants[0].weight <= 0 or sum(v.weight for v in self.variants) <= 0:
            raise Unprocessable("the control (the first variant) needs a weight above 0", field="variants")
        if self.parameter is ExperimentParameter.FREE_SHIPPING_THRESHOLD:
            for v in self.variants:
                if v.value != "" and not (v.value.isdigit() and len(v.value) <= 9):
                    raise Unprocessable(
                        f"variant {v.name}: a free-shipping threshold is whole minor units (e.g. 3500) or '' for none",
                        field="variants",
                    )
        if self.primary_metric is ExperimentMetric.CONVERSION_RATE:
            if not 0 < self.baseline < 1:
                raise Unprocessable("the baseline conversion rate is a fraction in (0, 1), e.g. 0.1", field="baseline")
        elif self.baseline <= 0:
            raise Unprocessable("the baseline is the control's expected value in minor units (> 0)", field="baseline")
        if self.minimum_detectable_effect == 0 or abs(self.minimum_detectable_effect) > 10:
            raise Unprocessable(
                "the minimum detectable effect is a relative change, not 0 (e.g. 0.2 for +20 %)",
                field="minimum_detectable_effect",
            )


def new_definition(experiment_id: str, spec: ExperimentSpec, now: datetime) -> ExperimentChanged:
    spec.validate()
    return ExperimentChanged(
        occurred_at=now,
        experiment_id=experiment_id,
        revision=1,
        status=ExperimentStatus.DRAFT,
        **_spec_fields(spec),
    )


def revise(current: ExperimentChanged, spec: ExperimentSpec, now: datetime) -> ExperimentChanged:
    spec.validate()
    if current.status is ExperimentStatus.STOPPED:
        raise Conflict(f"experiment {current.experiment_id} is stopped; define a new experiment instead")
    if current.status is ExperimentStatus.RUNNING:
        if spec.parameter != current.parameter:
            raise Conflict(f"experiment {current.experiment_id} is running: its parameter cannot change")
        if list(spec.variants) != list(current.variants):
            raise Conflict(
                f"experiment {current.experiment_id} is running: changing its variants or weights would move "
                "sessions between variants and the comparison would no longer be randomised; stop it and "
                "define a new experiment"
            )
    return current.model_copy(update={**_spec_fields(spec), "revision": current.revision + 1, "occurred_at": now})


def start(current: ExperimentChanged, now: datetime) -> ExperimentChanged | None:
    """The running definition, or None when it runs already (nothing to publish)."""
    if current.status is ExperimentStatus.RUNNING:
        return None
    if current.status is ExperimentStatus.STOPPED:
        raise Conflict(f"experiment {current.experiment_id} is stopped; a stopped experiment does not restart")
    return current.model_copy(
        update={
            "status": ExperimentStatus.RUNNING,
            "started_at": now,
            "revision": current.revision + 1,
            "occurred_at": now,
        }
    )


def stop(current: ExperimentChanged, now: datetime) -> ExperimentChanged | None:
    if current.status is ExperimentStatus.STOPPED:
        return None
    return current.model_copy(
        update={
            "status": ExperimentStatus.STOPPED,
            "stopped_at": now,
            "revision": current.revision + 1,
            "occurred_at": now,
        }
    )


def _spec_fields(spec: ExperimentSpec) -> dict[str, object]:
    return {
        "name": spec.name.strip(),
        "hypothesis": spec.hypothesis,
        "parameter": spec.parameter,
        "variants": list(spec.variants),
        "primary_metric": spec.primary_metric,
        "guardrails": list(spec.guardrails),
        "currency": spec.currency,
        "baseline": spec.baseline,
        "minimum_detectable_effect": spec.minimum_detectable_effect,
    }
