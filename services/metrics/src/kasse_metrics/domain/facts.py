"""Facts: the compact, deduplicated form of one consumed event that every KPI is computed from.

A fact is keyed by the CloudEvents id, so storing it twice is impossible (that is the dedupe), and it
remembers the first (topic, partition, offset) it was read at, so any instance can read "all facts of
partition p below its committed offset" exactly once. Only what the KPIs need is kept.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from kasse_contracts.base import Event
from kasse_contracts.events import (
    CartAbandoned,
    CartAction,
    CartUpdated,
    CheckoutStarted,
    OrderCancelled,
    OrderPlaced,
    PaymentCaptured,
    PaymentFailed,
    PaymentRefunded,
    ProductSearched,
    ProductViewed,
    ReviewSubmitted,
    ShipmentDelivered,
    ShipmentDispatched,
)

FRAUD_REASON = "fraud_suspected"


@dataclass(frozen=True)
class Position:
    topic: str
    partition: int
    offset: int


@dataclass(frozen=True)
class Fact:
    event_id: str
    kind: str  # the event's class name: ProductViewed, OrderPlaced, ...
    occurred_at: datetime  # event time: the window a fact counts in
    position: Position
    session_id: str | None = None
    data: dict[str, Any] = field(default_factory=dict)


def to_storage_precision(t: datetime) -> datetime:
    """UTC, whole milliseconds: what BSON keeps, so facts read back from Mongo equal the ones computed."""
    t = t.astimezone(UTC)
    return t.replace(microsecond=t.microsecond // 1000 * 1000)


def _is_add_to_cart(event: CartUpdated) -> bool:
    if event.action is CartAction.ADDED:
        return True
    return event.action is CartAction.QUANTITY_CHANGED and event.quantity_delta > 0


def fact_from_event(event_id: str, event: Event, position: Position) -> Fact:
    """Keep only what the KPIs read. Events the KPIs do not use still become facts (they count as traffic)."""
    data: dict[str, Any] = {}
    session_id = getattr(event, "session_id", None)
    if isinstance(event, ProductViewed):
        data = {"product": event.product_id, "category": event.category, "channel": event.channel.value}
    elif isinstance(event, ProductSearched):
        data = {"channel": event.channel.value}
    elif isinstance(event, CartUpdated):
        line = event.line
        data = {"cart": event.cart_id, "add": _is_add_to_cart(event)}
        if line is not None:
            data.update(product=line.product_id, category=line.category)
    elif isinstance(event, CartAbandoned | CheckoutStarted):
        data = {"cart": event.cart_id}
    elif isinstance(event, OrderPlaced):
        data = {
            "order": event.order_id,
            "cart": event.cart_id,
            "amount": event.total.amount,
            "currency": event.total.currency,
            # Sub-documents, not nested arrays: FerretDB v1 refuses arrays of arrays.
            "lines": [
                {"product": li.product_id, "category": li.category, "quantity": li.quantity} for li in event.lines
            ],
        }
    elif isinstance(event, OrderCancelled):
        data = {"order": event.order_id, "reason": event.reason.value}
    elif isinstance(event, PaymentCaptured):
        data = {"order": event.order_id, "amount": event.amount.amount, "currency": event.amount.currency}
    elif isinstance(event, PaymentFailed):
        data = {"order": event.order_id, "fraud": event.reason == FRAUD_REASON}
    elif isinstance(event, PaymentRefunded):
        data = {"order": event.order_id, "amount": event.amount.amount, "currency": event.amount.currency}
    elif isinstance(event, ShipmentDispatched | ShipmentDelivered):
        data = {"order": event.order_id}
    elif isinstance(event, ReviewSubmitted):
        data = {"product": event.product_id, "rating": event.rating}
    return Fact(
        event_id=event_id,
        kind=type(event).__name__,
        occurred_at=to_storage_precision(event.occurred_at),
        position=position,
        session_id=session_id,
        data=data,
    )
