"""The storefront's own rules: small calculations on what the services answer."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

# Before it ships an order can be cancelled by the customer (the cart service decides; this only
# decides whether to offer the button).
CANCELLABLE = frozenset({"placed", "stock_reserved", "paid"})
TIMELINE_STEPS = ("placed", "paid", "shipped", "delivered")


@dataclass(frozen=True)
class FreeShippingProgress:
    threshold: int
    remaining: int
    percent: int

    @property
    def reached(self) -> bool:
        return self.remaining == 0


def free_shipping_progress(subtotal: int, threshold: int | None) -> FreeShippingProgress | None:
    if threshold is None or threshold <= 0:
        return None
    remaining = max(0, threshold - subtotal)
    return FreeShippingProgress(threshold, remaining, min(100, subtotal * 100 // threshold))


def rating_distribution(ratings: Iterable[int]) -> list[tuple[int, int, int]]:
    """(stars, count, percent) from 5 down to 1."""
    counts = {stars: 0 for stars in range(1, 6)}
    for rating in ratings:
        if rating in counts:
            counts[rating] += 1
    total = sum(counts.values())
    return [(stars, counts[stars], (counts[stars] * 100 // total) if total else 0) for stars in range(5, 0, -1)]


def timeline_steps(status: str) -> list[tuple[str, bool]]:
    """The shopper's four steps, each done or not; a cancelled order shows none done after its state."""
    order = {"placed": 0, "stock_reserved": 0, "paid": 1, "shipped": 2, "delivered": 3}
    reached = order.get(status, 3 if status in ("partially_refunded", "refunded") else -1)
    return [(step, i <= reached) for i, step in enumerate(TIMELINE_STEPS)]


def can_cancel(status: str) -> bool:
    return status in CANCELLABLE


def can_return(delivered: bool, deadline: datetime | None, now: datetime) -> bool:
    return delivered and deadline is not None and now <= deadline
