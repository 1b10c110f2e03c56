"""One order's fulfilment: what was ordered, whether it is paid or cancelled, its shipment, its returns.

It is one aggregate (one document) because the events that drive it arrive on different topics in
any order: OrderPlaced, PaymentCaptured and OrderCancelled each record their fact here, and the
shipment is created by whichever of OrderPlaced/PaymentCaptured completes the picture — once.
Every method returns the contract events the change causes; the caller commits both together.
"""

from __future__ import annotations

from collections import Counter
from datetime import date, datetime, timedelta
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from kasse_common.errors import Conflict, Unprocessable
from kasse_common.money.refunds import PaidLine, ShippingRefundPolicy, return_refund
from kasse_contracts.base import Event, Money
from kasse_contracts.events import (
    Address,
    CancellationRefused,
    ItemCondition,
    ReturnReason,
    ReturnReceived,
    ReturnRequested,
    ShipmentCancelled,
    ShipmentCreated,
    ShipmentDelivered,
    ShipmentDispatched,
)
from kasse_contracts.events.shipping import ReturnLine


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore")


class OrderLine(_Model):
    product_id: str
    sku: str
    name: str
    quantity: int
    unit_price: Money
    discounted_total: Money | None = None  # what the customer paid for the line; None from older orders

    def paid(self) -> int:
        """Orders placed before per-line discounts were published: the list price (payment caps the refund)."""
        if self.discounted_total is not None:
            return self.discounted_total.amount
        return self.unit_price.amount * self.quantity


class OrderInfo(_Model):
    """The shipping-relevant part of OrderPlaced (this service's read model of the order)."""

    session_id: str
    customer_id: str | None = None
    email: str
    lines: list[OrderLine]
    method_id: str
    method_name: str
    carrier: str
    promised_from: date
    promised_to: date
    address: Address
    placed_at: datetime
    shipping_charged: Money | None = None  # shipping after its discount (free shipping: 0)


class PaymentInfo(_Model):
    payment_intent_id: str
    captured_at: datetime
    session_id: str
    customer_id: str | None = None


class CancellationInfo(_Model):
    reason: str
    cancelled_at: datetime
    session_id: str = ""
    customer_id: str | None = None
    refused: bool = False  # the parcel had left: the cancellation did not take effect


class ShipmentStatus(StrEnum):
    CREATED = "created"
    DISPATCHED = "dispatched"
    DELIVERED = "delivered"
    CANCELLED = "cancelled"


class TimelineEntry(_Model):
    status: str
    at: datetime
    description: str


class Booking(_Model):
    """What the carrier gave us when the parcel was booked."""

    carrier: str
    tracking_number: str
    tracking_url: str | None = None


class Shipment(_Model):
    shipment_id: str
    method_id: str
    carrier: str
    tracking_number: str
    tracking_url: str | None = None
    promised_delivery_date: date
    status: ShipmentStatus
    created_at: datetime
    dispatched_at: datetime | None = None
    delivered_at: datetime | None = None
    next_transition_at: datetime | None = Field(
        None, description="When the carrier's next scan is due; None once delivered or cancelled"
    )
    timeline: list[TimelineEntry] = Field(default_factory=list)


class ReturnStatus(StrEnum):
    REQUESTED = "requested"
    RECEIVED = "received"


class ReturnItem(_Model):
    product_id: str
    sku: str
    quantity: int
    refund_amount: Money
    condition: ItemCondition | None = None  # as the warehouse found it on arrival


class ReturnCase(_Model):
    return_id: str
    lines: list[ReturnItem]
    reason: ReturnReason
    comment: str = ""
    label_reference: str
    refund_amount: Money  # the items' refunds plus `shipping_refund`
    shipping_refund: Money | None = None
    status: ReturnStatus
    requested_at: datetime
    received_at: datetime | None = None
    session_id: str


class ReturnPolicy(_Model):
    window_days: int
    conditions: list[str]
    refund_shipping: ShippingRefundPolicy = ShippingRefundPolicy.WHEN_ALL_RETURNED

    def deadline(self, delivered_at: datetime) -> datetime:
        return delivered_at + timedelta(days=self.window_days)


class RequestedLine(_Model):
    product_id: str
    quantity: int


class Fulfilment(_Model):
    order_id: str
    order: OrderInfo | None = None
    payment: PaymentInfo | None = None
    cancellation: CancellationInfo | None = None
    shipment: Shipment | None = None
    returns: list[ReturnCase] = Field(default_factory=list)

    # -- facts from other services --------------------------------------------------------------
    def record_order(self, order: OrderInfo) -> None:
        if self.order is None:  # OrderPlaced is immutable: a redelivery changes nothing
            self.order = order

    def record_payment(self, payment: PaymentInfo) -> None:
        if self.payment is None:
            self.payment = payment

    def record_cancellation(self, cancellation: CancellationInfo, now: datetime) -> list[Event]:
        """Shipping decides whether the order can still be cancelled: a shipment that has not left the
        warehouse (or none at all) is stopped → ShipmentCancelled, and only then does payment refund; a
        dispatched parcel cannot be recalled → CancellationRefused, the order stands (return it instead)."""
        if self.cancellation is not None:
            return []
        self.cancellation = cancellation
        shipment = self.shipment
        session_id = self.order.session_id if self.order else cancellation.session_id
        customer_id = self.order.customer_id if self.order else cancellation.customer_id
        if shipment is not None and shipment.status in (ShipmentStatus.DISPATCHED, ShipmentStatus.DELIVERED):
            cancellation.refused = True
            shipment.timeline.append(
                TimelineEntry(
                    status=shipment.status.value,
                    at=now,
                    description=f"Cancellation ({cancellation.reason}) refused: the parcel had already left",
                )
            )
            assert shipment.dispatched_at is not None
            return [
                CancellationRefused(
                    occurred_at=now,
                    session_id=session_id or self.order_id,
                    customer_id=customer_id,
                    order_id=self.order_id,
                    shipment_id=shipment.shipment_id,
                    reason="already_dispatched",
                    dispatched_at=shipment.dispatched_at,
                )
            ]
        if shipment is not None and shipment.status is ShipmentStatus.CREATED:
            shipment.status = ShipmentStatus.CANCELLED
            shipment.next_transition_at = None
            shipment.timeline.append(
                TimelineEntry(status="cancelled", at=now, description=f"Order cancelled ({cancellation.reason})")
            )
        # No shipment yet: it never ships (ready_to_ship() is now false).
        return [
            ShipmentCancelled(
                occurred_at=now,
                session_id=session_id or self.order_id,
                customer_id=customer_id,
                order_id=self.order_id,
                shipment_id=shipment.shipment_id if shipment else None,
                reason=cancellation.reason,
            )
        ]

    @property
    def cancelled(self) -> bool:
        return self.cancellation is not None and not self.cancellation.refused

    # -- shipment -------------------------------------------------------------------------------
    def ready_to_ship(self) -> bool:
        return (
            self.order is not None and self.payment is not None and self.cancellation is None and self.shipment is None
        )

    def create_shipment(
        self, *, shipment_id: str, booking: Booking, promised: date, now: datetime, first_scan_at: datetime
    ) -> list[Event]:
        if not self.ready_to_ship():
            raise Conflict(f"order {self.order_id} cannot be shipped now")
        assert self.order is not None
        self.shipment = Shipment(
            shipment_id=shipment_id,
            method_id=self.order.method_id,
            carrier=booking.carrier,
            tracking_number=booking.tracking_number,
            tracking_url=booking.tracking_url,
            promised_delivery_date=promised,
            status=ShipmentStatus.CREATED,
            created_at=now,
            next_transition_at=first_scan_at,
            timeline=[
                TimelineEntry(
                    status="created", at=now, description=f"Booked with {booking.carrier}; delivery by {promised}"
                )
            ],
        )
        return [
            ShipmentCreated(
                occurred_at=now,
                session_id=self.order.session_id,
                customer_id=self.order.customer_id,
                order_id=self.order_id,
                shipment_id=shipment_id,
                method_id=self.order.method_id,
                carrier=booking.carrier,
                tracking_number=booking.tracking_number,
                tracking_url=booking.tracking_url,
                promised_delivery_date=promised,
            )
        ]

    def advance(self, *, scanned_at: datetime, next_scan_at: datetime | None) -> list[Event]:
        """The carrier's next scan happened at `scanned_at`: created → dispatched → delivered."""
        shipment, order = self.shipment, self.order
        if shipment is None or order is None:
            return []
        if shipment.status is ShipmentStatus.CREATED:
            shipment.status = ShipmentStatus.DISPATCHED
            shipment.dispatched_at = scanned_at
            shipment.next_transition_at = next_scan_at
            shipment.timeline.append(
                TimelineEntry(status="dispatched", at=scanned_at, description=f"Picked up by {shipment.carrier}")
            )
            return [
                ShipmentDispatched(
                    occurred_at=scanned_at,
                    session_id=order.session_id,
                    customer_id=order.customer_id,
                    order_id=self.order_id,
                    shipment_id=shipment.shipment_id,
                    carrier=shipment.carrier,
                    tracking_number=shipment.tracking_number,
                    dispatched_at=scanned_at,
                )
            ]
        if shipment.status is ShipmentStatus.DISPATCHED:
            shipment.status = ShipmentStatus.DELIVERED
            shipment.delivered_at = scanned_at
            shipment.next_transition_at = None
            shipment.timeline.append(TimelineEntry(status="delivered", at=scanned_at, description="Delivered"))
            return [
                ShipmentDelivered(
                    occurred_at=scanned_at,
                    session_id=order.session_id,
                    customer_id=order.customer_id,
                    order_id=self.order_id,
                    shipment_id=shipment.shipment_id,
                    delivered_at=scanned_at,
                )
            ]
        return []

    # -- returns --------------------------------------------------------------------------------
    def returnable(self) -> Counter[str]:
        """Delivered quantities per product minus those already in a return."""
        if self.order is None or self.shipment is None or self.shipment.status is not ShipmentStatus.DELIVERED:
            return Counter()
        left: Counter[str] = Counter()
        for line in self.order.lines:
            left[line.product_id] += line.quantity
        for case in self.returns:
            for item in case.lines:
                left[item.product_id] -= item.quantity
        return left

    def request_return(
        self,
        *,
        return_id: str,
        label_reference: str,
        lines: list[RequestedLine],
        reason: ReturnReason,
        comment: str,
        policy: ReturnPolicy,
        now: datetime,
        session_id: str,
    ) -> list[Event]:
        order, shipment = self.order, self.shipment
        if order is None:
            raise Unprocessable(f"order {self.order_id} is not known to shipping")
        if shipment is None or shipment.status is not ShipmentStatus.DELIVERED or shipment.delivered_at is None:
            state = "not shipped yet" if shipment is None else shipment.status.value
            raise Unprocessable(f"only delivered items can be returned; this order is {state}", reason="not_delivered")
        deadline = policy.deadline(shipment.delivered_at)
        if now > deadline:
            raise Unprocessable(
                f"the {policy.window_days}-day return window ended on {deadline.date().isoformat()}",
                reason="window_closed",
            )
        if not lines:
            raise Unprocessable("a return needs at least one line", reason="empty")
        wanted: Counter[str] = Counter()
        for line in lines:
            if line.quantity < 1:
                raise Unprocessable(f"quantity for {line.product_id} must be at least 1", reason="bad_quantity")
            wanted[line.product_id] += line.quantity
        left = self.returnable()
        by_product = {line.product_id: line for line in order.lines}
        for product_id, quantity in wanted.items():
            if product_id not in by_product:
                raise Unprocessable(f"{product_id} was not delivered with this order", reason="not_delivered")
            if quantity > left[product_id]:
                raise Unprocessable(
                    f"{product_id}: {quantity} requested but only {max(left[product_id], 0)} can still be returned",
                    reason="quantity_exceeds_delivered",
                )
        # What the customer paid for these units (their share of the discounts), exact over any sequence
        # of returns; the shipping only where the policy says (the kit's money rules).
        returned_before = Counter({pid: line.quantity - left[pid] for pid, line in by_product.items()})
        refund = return_refund(
            [PaidLine(line.product_id, line.quantity, line.paid()) for line in order.lines],
            returned_before,
            wanted,
            shipping_charged=order.shipping_charged.amount if order.shipping_charged else 0,
            policy=policy.refund_shipping,
        )
        currency = order.lines[0].unit_price.currency
        items = [
            ReturnItem(
                product_id=r.product_id,
                sku=by_product[r.product_id].sku,
                quantity=r.quantity,
                refund_amount=Money(amount=r.amount, currency=currency),
            )
            for r in refund.lines
        ]
        total = Money(amount=refund.total, currency=currency)
        case = ReturnCase(
            return_id=return_id,
            lines=items,
            reason=reason,
            comment=comment,
            label_reference=label_reference,
            refund_amount=total,
            shipping_refund=Money(amount=refund.shipping, currency=currency) if refund.shipping else None,
            status=ReturnStatus.REQUESTED,
            requested_at=now,
            session_id=session_id,
        )
        self.returns.append(case)
        return [
            ReturnRequested(
                occurred_at=now,
                session_id=session_id,
                customer_id=order.customer_id,
                order_id=self.order_id,
                return_id=return_id,
                lines=_return_lines(case),
                reason=reason,
                comment=comment,
                label_reference=label_reference,
                refund_amount=total,
                shipping_refund=case.shipping_refund,
            )
        ]

    def find_return(self, return_id: str) -> ReturnCase | None:
        return next((r for r in self.returns if r.return_id == return_id), None)

    def receive_return(
        self, return_id: str, now: datetime, conditions: dict[str, ItemCondition] | None = None
    ) -> list[Event]:
        """The warehouse scanned the returned parcel in, with the state of each item (by product; not
        given: resellable); catalog restocks the resellable ones. A second scan changes nothing."""
        case = self.find_return(return_id)
        if case is None:
            raise Unprocessable(f"return {return_id} does not belong to order {self.order_id}")
        if case.status is ReturnStatus.RECEIVED:
            return []
        conditions = conditions or {}
        unknown = set(conditions) - {item.product_id for item in case.lines}
        if unknown:
            raise Unprocessable(f"return {return_id} has no line for {', '.join(sorted(unknown))}")
        for item in case.lines:
            item.condition = conditions.get(item.product_id, ItemCondition.RESELLABLE)
        case.status = ReturnStatus.RECEIVED
        case.received_at = now
        assert self.order is not None
        return [
            ReturnReceived(
                occurred_at=now,
                session_id=case.session_id,
                customer_id=self.order.customer_id,
                order_id=self.order_id,
                return_id=return_id,
                lines=_return_lines(case),
                refund_amount=case.refund_amount,
                shipping_refund=case.shipping_refund,
            )
        ]


def _return_lines(case: ReturnCase) -> list[ReturnLine]:
    return [
        ReturnLine(
            product_id=i.product_id,
            sku=i.sku,
            quantity=i.quantity,
            refund_amount=i.refund_amount,
            condition=i.condition,
        )
        for i in case.lines
    ]
