"""The one adapter between the KPI engine's facts and the experiment analysis.

The analysis reads a handful of observations (exposures, cart steps, orders and their payment
outcomes); this module is the only place that knows how the engine's facts look, so the engine can
change them without touching the analysis. It is handed every fact the projection is handed (new or
repeated: the analysis is idempotent), from the consumer and from the checkpoints it reads back.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

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


def observations(facts: Iterable[Fact]) -> Iterator[Observation]:
    for f in facts:
        sid = f.session
        if not sid:
            continue
        if isinstance(f, Exposed):
            yield Exposure(sid, f.experiment, f.variant, f.ms)
        elif isinstance(f, CartAdded):
            yield SessionStep(sid, Step.ADDED_TO_CART, f.ms)
        elif isinstance(f, CheckoutBegan):
            yield SessionStep(sid, Step.CHECKOUT_STARTED, f.ms)
        elif isinstance(f, Placed):
            yield OrderPlacedObs(sid, f.order, f.ms)
        elif isinstance(f, Captured):
            yield PaymentCapturedObs(sid, f.order, f.amount, f.currency, f.ms)
        elif isinstance(f, PayFailed):
            yield PaymentFailedObs(sid, f.order, f.fraud, f.ms)
        elif isinstance(f, Refunded):
            yield RefundObs(sid, f.order, f.ms)
