"""The one adapter between the KPI engine's facts and the experiment analysis.

The analysis reads a handful of observations (exposures, cart steps, orders and their payment
outcomes); this module is the only place that knows how the engine's facts look, so the engine can
change them without touching the analysis. It is handed every fact the projection is handed (new or
repeated: the analysis is idempotent), from the consumer and from the checkpoints it reads back.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from kasse_metrics.domain.experiment_analysis import (
    Exposure,
    Observation,
    OrderPlacedObs,
    PaymentCapturedObs,
    PaymentFailedObs,
    RefundObs,
    SessionStep,
    Step,
)
from kasse_metrics.domain.facts import Captured, CartAdded, CheckoutBegan, Exposed, Fact, PayFailed, Placed, Refunded

_OBSERVATION_OF: dict[type[Fact], Callable[[Any, str], Observation]] = {
    Exposed: lambda f, sid: Exposure(sid, f.experiment, f.variant, f.ms),
    CartAdded: lambda f, sid: SessionStep(sid, Step.ADDED_TO_CART, f.ms),
    CheckoutBegan: lambda f, sid: SessionStep(sid, Step.CHECKOUT_STARTED, f.ms),
    Placed: lambda f, sid: OrderPlacedObs(sid, f.order, f.ms),
    Captured: lambda f, sid: PaymentCapturedObs(sid, f.order, f.amount, f.currency, f.ms),
    PayFailed: lambda f, sid: PaymentFailedObs(sid, f.order, f.fraud, f.ms),
    Refunded: lambda f, sid: RefundObs(sid, f.order, f.ms),
}


def observations(facts: Iterable[Fact]) -> Iterator[Observation]:
    # One dict look-up per fact on its exact type (facts are final structs): most facts (views,
    # searches, deliveries) make no observation, and went through every isinstance test before.
    of = _OBSERVATION_OF.get
    for f in facts:
        make = of(type(f))
        if make is not None:
            sid = f.session
            if sid:
                yield make(f, sid)
