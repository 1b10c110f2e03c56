"""The order's life after placing: facts from the other services, the customer's cancel, the views."""

from __future__ import annotations

import hmac
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from kasse_cart.application.ports import Clock, Encoder, OrderRepository, PaymentLookup
from kasse_cart.domain.cart import hash_token
from kasse_cart.domain.order import CancellationNotice, Order, OrderStatus
from kasse_common.envelope import OutgoingRecord, derived_event_id
from kasse_common.errors import AggregateNotYetKnown, KasseError, NotFound
from kasse_common.retry import retry_on_conflict
from kasse_contracts.base import Money
from kasse_contracts.events import CancellationReason, OrderCancelled

SAVE_ATTEMPTS = 5


class OrderNotYetKnown(AggregateNotYetKnown):
    """An event about an order this service has not stored (yet): the consumer parks it."""


@dataclass(frozen=True)
class OrderView:
    order: Order
    client_secret: str | None


class InvoicesUnavailable(KasseError):
    status = 503
    title = "Service unavailable"


class OrderLife:
    def __init__(self, *, orders: OrderRepository, encode: Encoder, clock: Clock, payments: PaymentLookup) -> None:
        self.orders = orders
        self.encode = encode
        self.clock = clock
        self.payments = payments

    async def apply(self, order_id: str, event_id: str, fact: Callable[[Order], list[CancellationNotice]]) -> bool:
        """Apply one consumed event's fact to the order, exactly once; False when it was a duplicate."""

        async def attempt() -> bool:
            order = await self.orders.get(order_id)
            if order is None:
                raise OrderNotYetKnown(f"order {order_id} is not known")
            notices = fact(order)
            return await self.orders.save(order, self.cancellations(order, notices), consumed_event_id=event_id)

        # Still contended after that: the ConcurrencyError reaches the consumer, which retries with backoff.
        return await retry_on_conflict(attempt, f"apply {event_id} to order {order_id}", attempts=SAVE_ATTEMPTS)

    async def cancel_by_customer(self, order_id: str, order_token: str | None) -> Order:
        async def attempt() -> Order:
            order = await self._authorised(order_id, order_token)
            notices = order.cancel_by_customer(self.clock())
            await self.orders.save(order, self.cancellations(order, notices))
            return order

        return await retry_on_conflict(attempt, f"cancel order {order_id}", attempts=SAVE_ATTEMPTS)

    async def view(self, order_id: str, order_token: str | None) -> OrderView:
        order = await self._authorised(order_id, order_token)
        secret = None
        if order.status in (OrderStatus.PLACED, OrderStatus.STOCK_RESERVED):
            # Only an unpaid, live order can need the customer's action (3-D Secure and the like).
            secret = await self.payments.client_secret(order_id)
        return OrderView(order, secret)

    async def invoices(self, order_id: str, order_token: str | None) -> list[dict[str, Any]]:
        await self._authorised(order_id, order_token)
        found = await self.payments.invoices(order_id)
        if found is None:
            raise InvoicesUnavailable("the invoices cannot be fetched right now; try again shortly")
        return found

    async def invoice_pdf(self, order_id: str, order_token: str | None, number: str) -> bytes:
        await self._authorised(order_id, order_token)
        pdf = await self.payments.invoice_pdf(order_id, number)
        if pdf is None:
            raise NotFound(f"no invoice {number} for this order (yet)")
        return pdf

    async def admin_get(self, order_id: str) -> Order:
        order = await self.orders.get(order_id)
        if order is None:
            raise NotFound(f"no order {order_id}")
        return order

    async def _authorised(self, order_id: str, order_token: str | None) -> Order:
        order = await self.orders.get(order_id)
        if order is None or not order_token or not hmac.compare_digest(order.token_hash, hash_token(order_token)):
            raise NotFound("no order with this id and token")
        return order

    def cancellations(self, order: Order, notices: list[CancellationNotice]) -> list[OutgoingRecord]:
        now: datetime = self.clock()
        return [
            self.encode(
                OrderCancelled(
                    occurred_at=order.cancelled_at or now,
                    session_id=order.session_id or order.order_id,
                    customer_id=order.customer_id,
                    order_id=order.order_id,
                    reason=CancellationReason(notice.reason.value),
                    detail=notice.detail,
                    was_paid=notice.was_paid,
                    total=Money(amount=order.total, currency=order.currency),
                ),
                # Deterministic: a retried handler or request can never announce a cancel twice.
                event_id=derived_event_id(order.order_id, "cancelled", notice.announcement),
            )
            for notice in notices
        ]
