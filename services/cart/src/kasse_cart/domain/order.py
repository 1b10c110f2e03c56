"""The order's life: an explicit state machine driven by facts from stock, payment and shipping.

Events of different topics arrive in any order and more than once, so the order records *facts*
(stock reserved, payment captured, dispatched, ...) and its status is derived from them with a fixed
precedence. Facts only accumulate, so a duplicate or a late event can never move the status back:

    placed → stock_reserved → paid → shipped → delivered → partially_refunded → refunded
    any state before shipped → cancelled (stock rejected, payment failed, customer request, not paid
    by `payment_due_at`); terminal — unless shipping refuses the cancellation because the parcel had
    already left (CancellationRefused): then the order stands as shipped, and nothing is refunded

Cancelling yields a `CancellationNotice` the application turns into OrderCancelled. Plain Python.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from enum import StrEnum
from typing import Any

from kasse_common.errors import Conflict


class OrderStatus(StrEnum):
    PLACED = "placed"
    STOCK_RESERVED = "stock_reserved"
    PAID = "paid"
    SHIPPED = "shipped"
    DELIVERED = "delivered"
    PARTIALLY_REFUNDED = "partially_refunded"
    REFUNDED = "refunded"
    CANCELLED = "cancelled"


# The forward order of the non-cancelled states; cancelled is terminal and outranks them all.
RANK = {status: i for i, status in enumerate(OrderStatus)}


class CancelReason(StrEnum):
    STOCK_REJECTED = "stock_rejected"
    PAYMENT_FAILED = "payment_failed"
    FRAUD_SUSPECTED = "fraud_suspected"
    CUSTOMER_REQUEST = "customer_request"
    PAYMENT_TIMEOUT = "payment_timeout"


@dataclass(frozen=True)
class CancellationNotice:
    """An OrderCancelled to publish. `announcement` tells the first notice from the paid follow-up."""

    reason: CancelReason
    detail: str
    was_paid: bool
    announcement: str


@dataclass
class TimelineEntry:
    at: datetime
    status: OrderStatus
    note: str


@dataclass
class Shipment:
    shipment_id: str
    carrier: str
    tracking_number: str
    tracking_url: str | None
    promised_delivery_date: date | None


@dataclass
class Order:
    order_id: str
    placed_at: datetime
    total: int
    currency: str
    cart_id: str = ""
    session_id: str = ""
    customer_id: str | None = None
    email: str = ""
    token_hash: str = ""  # the order token itself is never stored
    idempotency_key: str = ""
    details: dict[str, Any] = field(default_factory=dict)  # the placed order as published (lines, totals, ...)
    status: OrderStatus = OrderStatus.PLACED
    stock_reserved_at: datetime | None = None
    stock_rejected_at: datetime | None = None
    paid_at: datetime | None = None
    payment_intent_id: str | None = None
    payment_failed_at: datetime | None = None
    shipment: Shipment | None = None
    dispatched_at: datetime | None = None
    delivered_at: datetime | None = None
    refunded_amount: int = 0
    fully_refunded: bool = False
    cancelled_at: datetime | None = None
    cancel_reason: CancelReason | None = None
    cancel_detail: str = ""
    cancel_announced_paid: bool = False  # OrderCancelled said was_paid=true
    payment_due_at: datetime | None = None  # unpaid by then: cancelled with reason payment_timeout
    cancellation_refused_at: datetime | None = None  # shipping could not stop the parcel any more
    timeline: list[TimelineEntry] = field(default_factory=list)
    version: int = 0  # optimistic concurrency: the stored version this object was loaded at

    @property
    def is_cancelled(self) -> bool:
        return self.cancelled_at is not None and self.cancellation_refused_at is None

    @property
    def is_paid(self) -> bool:
        return self.paid_at is not None

    @property
    def has_left_warehouse(self) -> bool:
        return self.dispatched_at is not None or self.delivered_at is not None

    # -- facts from the other services -----------------------------------------------------------
    def stock_reserved(self, at: datetime) -> list[CancellationNotice]:
        if self.stock_reserved_at is None:
            self.stock_reserved_at = at
        return self._advance(at, "stock reserved")

    def stock_rejected(self, at: datetime, detail: str) -> list[CancellationNotice]:
        if self.stock_rejected_at is None:
            self.stock_rejected_at = at
        if self.is_cancelled or self.has_left_warehouse or self.stock_reserved_at is not None:
            # A contradiction (or a duplicate): recorded, but it cannot undo what happened.
            return self._advance(at, f"stock rejection ignored: {detail}")
        return self._cancel(CancelReason.STOCK_REJECTED, detail, at)

    def payment_captured(self, at: datetime, payment_intent_id: str) -> list[CancellationNotice]:
        first = self.paid_at is None
        if first:
            self.paid_at = at
            self.payment_intent_id = payment_intent_id
        notices = self._advance(at, "payment captured")
        if self.is_cancelled and first and not self.cancel_announced_paid and self.cancel_reason is not None:
            # Captured after we cancelled unpaid: say again, with was_paid, so payment refunds.
            self.cancel_announced_paid = True
            notices.append(CancellationNotice(self.cancel_reason, self.cancel_detail, True, "paid-after-cancel"))
        return notices

    def payment_failed(self, at: datetime, reason: str, message: str) -> list[CancellationNotice]:
        if self.payment_failed_at is None:
            self.payment_failed_at = at
        if self.is_cancelled or self.is_paid or self.has_left_warehouse:
            return self._advance(at, f"payment failure ignored: {reason}")
        cancel_reason = {
            "fraud_suspected": CancelReason.FRAUD_SUSPECTED,
            "review_timeout": CancelReason.PAYMENT_TIMEOUT,  # held for review and nobody decided in time
        }.get(reason, CancelReason.PAYMENT_FAILED)
        return self._cancel(cancel_reason, message or reason, at)

    def payment_refunded(self, at: datetime, total_refunded: int, full: bool) -> list[CancellationNotice]:
        self.refunded_amount = max(self.refunded_amount, total_refunded)
        self.fully_refunded = self.fully_refunded or full
        return self._advance(at, f"refunded {total_refunded} in total" + (" (full)" if full else ""))

    def shipment_created(self, at: datetime, shipment: Shipment) -> list[CancellationNotice]:
        if self.shipment is None:
            self.shipment = shipment
        return self._advance(at, f"shipment {shipment.shipment_id} booked with {shipment.carrier}")

    def shipment_dispatched(self, at: datetime) -> list[CancellationNotice]:
        if self.dispatched_at is None:
            self.dispatched_at = at
        return self._advance(at, "dispatched")

    def shipment_delivered(self, at: datetime) -> list[CancellationNotice]:
        if self.delivered_at is None:
            self.delivered_at = at
        return self._advance(at, "delivered")

    def cancellation_refused(self, at: datetime, detail: str) -> list[CancellationNotice]:
        """Shipping could not stop the parcel: the cancellation does not take effect (no refund, no release)."""
        if self.cancellation_refused_at is None:
            self.cancellation_refused_at = at
            if self.dispatched_at is None:
                self.dispatched_at = at  # the parcel is on its way, whatever we had heard
        return self._advance(at, f"cancellation refused by shipping: {detail}", allow_back=True)

    # -- deadlines ---------------------------------------------------------------------------------
    @property
    def awaits_payment(self) -> bool:
        return not self.is_cancelled and not self.is_paid and not self.has_left_warehouse

    def expire_unpaid(self, at: datetime) -> list[CancellationNotice]:
        """The payment deadline passed: cancel (payment cancels the intent, catalog releases the stock)."""
        if not self.awaits_payment or self.payment_due_at is None or at < self.payment_due_at:
            return []
        return self._cancel(CancelReason.PAYMENT_TIMEOUT, f"not paid by {self.payment_due_at.isoformat()}", at)

    def postpone_payment_deadline(self, until: datetime, at: datetime, why: str) -> None:
        if self.payment_due_at is None or until > self.payment_due_at:
            self.payment_due_at = until
            self.timeline.append(
                TimelineEntry(at, self.status, f"payment deadline moved to {until.isoformat()}: {why}")
            )

    # -- the customer ------------------------------------------------------------------------------
    def cancel_by_customer(self, at: datetime) -> list[CancellationNotice]:
        if self.is_cancelled:
            raise Conflict(f"order {self.order_id} is already cancelled")
        if self.has_left_warehouse:
            raise Conflict(f"order {self.order_id} has already shipped; request a return instead")
        return self._cancel(CancelReason.CUSTOMER_REQUEST, "cancelled by the customer", at)

    # -- the machine -------------------------------------------------------------------------------
    def derived_status(self) -> OrderStatus:
        if self.is_cancelled:
            return OrderStatus.CANCELLED
        if self.fully_refunded:
            return OrderStatus.REFUNDED
        if self.refunded_amount > 0:
            return OrderStatus.PARTIALLY_REFUNDED
        if self.delivered_at is not None:
            return OrderStatus.DELIVERED
        if self.dispatched_at is not None:
            return OrderStatus.SHIPPED
        if self.paid_at is not None:
            return OrderStatus.PAID
        if self.stock_reserved_at is not None:
            return OrderStatus.STOCK_RESERVED
        return OrderStatus.PLACED

    def _advance(self, at: datetime, note: str, *, allow_back: bool = False) -> list[CancellationNotice]:
        new = self.derived_status()
        if RANK[new] < RANK[self.status] and not allow_back:  # facts only accumulate; this guards the invariant
            raise AssertionError(f"order {self.order_id} would move back from {self.status} to {new}")
        self.status = new
        self.timeline.append(TimelineEntry(at, new, note))
        return []

    def _cancel(self, reason: CancelReason, detail: str, at: datetime) -> list[CancellationNotice]:
        self.cancelled_at = at
        self.cancel_reason = reason
        self.cancel_detail = detail
        self.cancel_announced_paid = self.is_paid
        self._advance(at, f"cancelled: {reason.value}" + (f" ({detail})" if detail else ""))
        return [CancellationNotice(reason, detail, self.is_paid, "cancelled")]
