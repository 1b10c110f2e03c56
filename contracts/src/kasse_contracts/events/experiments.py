"""Events of experiments (A/B tests): their definitions, and which variant a session was shown.

The metrics service owns the definitions and publishes each change as `ExperimentChanged` on a
compacted topic; every service that honours a parameter folds them into a read model, so no service
calls another to learn the running experiments. Assignment is a pure function of the experiment id,
the variants' weights and the session id (`kasse_common.experiments.assign_variant`), so every
service puts a session into the same variant without asking anyone; the service that first shows a
session a variant publishes `ExperimentExposed` (its event id derived from experiment and session, so
repeats collapse into one).
"""

from __future__ import annotations

from typing import Annotated, ClassVar

from pydantic import AwareDatetime, Field

from kasse_contracts import topics
from kasse_contracts.base import ContractModel, Event, FunnelEvent, Identifier, OpenEnum


class ExperimentParameter(OpenEnum):
    """What an experiment varies, and which service honours it."""

    FREE_SHIPPING_THRESHOLD = "free_shipping_threshold"  # cart; value: minor units as a string, "" = off
    RECOMMENDATION_STRATEGY = "recommendation_strategy"  # catalog; value: a strategy name
    CHECKOUT_LAYOUT = "checkout_layout"  # storefront; value: "one_step", "two_step", …
    CART_COUPON = "cart_coupon"  # cart; value: the coupon code offered on the cart page, "" = none
    STOREFRONT_TEMPLATE = "storefront_template"  # storefront; value: a template variant name


class ExperimentMetric(OpenEnum):
    CONVERSION_RATE = "conversion_rate"  # exposed sessions that paid / exposed sessions
    REVENUE_PER_SESSION = "revenue_per_session"  # captured revenue / exposed sessions
    AVERAGE_ORDER_VALUE = "average_order_value"  # captured revenue / captured orders


class GuardrailMetric(OpenEnum):
    PAYMENT_FAILURE_RATE = "payment_failure_rate"  # failed / (captured + failed) orders
    REFUND_RATE = "refund_rate"  # refunded / captured orders


class ExperimentStatus(OpenEnum):
    DRAFT = "draft"
    RUNNING = "running"
    STOPPED = "stopped"


class Variant(ContractModel):
    name: Identifier
    weight: Annotated[
        int, Field(ge=0, le=10_000, description="Relative share of sessions (weights need not sum to 100)")
    ]
    value: str = Field("", max_length=200, description="The parameter's value in this variant (see the parameter)")


class ExperimentChanged(Event):
    """An experiment's whole current definition; readers keep the highest `revision` per experiment."""

    event_type: ClassVar[str] = "io.kasse.metrics.ExperimentChanged.v1"
    topic: ClassVar[str] = topics.EXPERIMENTS
    key_field: ClassVar[str] = "experiment_id"

    experiment_id: Identifier
    revision: Annotated[int, Field(ge=1)]
    name: str
    hypothesis: str = ""
    parameter: ExperimentParameter
    variants: Annotated[list[Variant], Field(min_length=2, description="The first variant is the control")]
    primary_metric: ExperimentMetric
    guardrails: list[GuardrailMetric] = Field(default_factory=list)
    status: ExperimentStatus
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$")] = "EUR"
    baseline: float = Field(description="Planned value of the primary metric in the control (rate or minor units)")
    minimum_detectable_effect: float = Field(description="Relative lift the plan wants to detect, e.g. 0.2")
    started_at: AwareDatetime | None = None
    stopped_at: AwareDatetime | None = None


class ExperimentExposed(FunnelEvent):
    """A session was first shown a variant. Its event id is derived from experiment and session, so a
    session counts once per experiment however often (and by however many services) it is recorded."""

    event_type: ClassVar[str] = "io.kasse.experiments.ExperimentExposed.v1"
    topic: ClassVar[str] = topics.EXPOSURES
    key_field: ClassVar[str] = "session_id"

    experiment_id: Identifier
    revision: Annotated[int, Field(ge=1, description="The definition's revision the assignment used")]
    variant: Identifier
    parameter: ExperimentParameter
