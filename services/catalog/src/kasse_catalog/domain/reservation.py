"""An order's stock reservation: one document per order that records the progress line by line.

RESERVING → RESERVED (every line taken) or REJECTED (some line could not be served; every line
already taken was given back). RESERVED → RELEASED (order cancelled or payment failed) or FULFILLED
(delivered: the units left stock on hand for good). A release
that arrives before the order (events of different topics come in any order) leaves a RELEASED
reservation with no lines, so a late OrderPlaced reserves nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum


class ReservationStatus(StrEnum):
    RESERVING = "reserving"
    RESERVED = "reserved"
    REJECTED = "rejected"
    RELEASED = "released"
    FULFILLED = "fulfilled"


@dataclass
class ReservationLine:
    product_id: str
    sku: str
    quantity: int
    taken: bool = False


@dataclass(frozen=True)
class Shortfall:
    product_id: str
    sku: str
    requested: int
    available: int


@dataclass
class Reservation:
    order_id: str
    session_id: str
    customer_id: str | None
    lines: list[ReservationLine]
    status: ReservationStatus = ReservationStatus.RESERVING
    shortfalls: list[Shortfall] = field(default_factory=list)
    release_reason: str | None = None
    # When the order asked for its stock: a reservation still RESERVING long after it was interrupted.
    requested_at: datetime | None = None
    version: int | None = None

    @classmethod
    def start(
        cls,
        order_id: str,
        session_id: str,
        customer_id: str | None,
        lines: list[tuple[str, str, int]],
        requested_at: datetime | None = None,
    ) -> Reservation:
        """Lines of the same product are merged: one conditional update per product."""
        merged: dict[str, ReservationLine] = {}
        for product_id, sku, quantity in lines:
            if quantity < 1:
                raise ValueError(f"quantity of {product_id} must be at least 1")
            if product_id in merged:
                merged[product_id].quantity += quantity
            else:
                merged[product_id] = ReservationLine(product_id, sku, quantity)
        return cls(order_id, session_id, customer_id, list(merged.values()), requested_at=requested_at)

    @classmethod
    def released_before_placed(cls, order_id: str, session_id: str, reason: str) -> Reservation:
        return cls(order_id, session_id, None, [], ReservationStatus.RELEASED, release_reason=reason)

    @property
    def in_progress(self) -> bool:
        return self.status is ReservationStatus.RESERVING

    @property
    def holds_stock(self) -> bool:
        return self.status in (ReservationStatus.RESERVING, ReservationStatus.RESERVED)

    def confirm(self) -> None:
        if not all(line.taken for line in self.lines):
            raise ValueError("cannot confirm a reservation with lines not taken")
        self.status = ReservationStatus.RESERVED

    def reject(self, shortfalls: list[Shortfall]) -> None:
        if any(line.taken for line in self.lines):
            raise ValueError("give back every taken line before rejecting")
        self.shortfalls = list(shortfalls)
        self.status = ReservationStatus.REJECTED

    def fulfil(self) -> None:
        if self.status is not ReservationStatus.RESERVED:
            raise ValueError(f"only a reserved order can be fulfilled, not a {self.status.value} one")
        self.status = ReservationStatus.FULFILLED

    def release(self, reason: str) -> None:
        for line in self.lines:
            line.taken = False
        self.release_reason = reason
        self.status = ReservationStatus.RELEASED
