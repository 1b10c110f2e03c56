"""Event handlers: translate and call a use case. Redeliveries are no-ops (see PaymentService).

One lane (one Kafka consumer) per topic: a lane handles one record at a time, and in a burst one
consumer for four topics made an order's OrderPlaced wait behind every other order's shipment and
invoice events (payment's lag stayed at 120-160 records on `orders` and `shipping` for the whole
wait of a 300-order chaos run, and 194 of 240 paid orders expired before their intent was made).
"""

from __future__ import annotations

import asyncio

from kasse_common.messaging import EventConsumer, EventContext
from kasse_contracts.events import (
    CancellationRefused,
    OrderCancelled,
    OrderPlaced,
    PaymentCaptured,
    PaymentRefunded,
    ReturnReceived,
    ShipmentCancelled,
    StockReserved,
)
from kasse_payment.application.invoicing import Invoicing
from kasse_payment.application.service import PaymentService


def register(consumer: EventConsumer, payments: PaymentService, invoicing: Invoicing) -> None:
    async def on_order_placed(event: OrderPlaced, ctx: EventContext) -> None:
        # Side by side (two documents, each write idempotent): one round trip's wait instead of two. The
        # invoice needs the order recorded before PaymentCaptured, which cannot come before this handler
        # returned (nothing is screened or charged until payment's write landed); a failure of either is
        # redelivered and both are repeated (after both ended: never one still writing beside its retry).
        results = await asyncio.gather(
            invoicing.order_placed(event), payments.order_placed(event, ctx.event_id), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def on_payment_captured(event: PaymentCaptured, ctx: EventContext) -> None:
        await invoicing.payment_captured(event)

    async def on_payment_refunded(event: PaymentRefunded, ctx: EventContext) -> None:
        await invoicing.payment_refunded(event)

    async def on_stock_reserved(event: StockReserved, ctx: EventContext) -> None:
        await payments.stock_reserved(event, ctx.event_id)

    async def on_order_cancelled(event: OrderCancelled, ctx: EventContext) -> None:
        await payments.order_cancelled(event, ctx.event_id)

    async def on_return_received(event: ReturnReceived, ctx: EventContext) -> None:
        await payments.return_received(event, ctx.event_id)

    async def on_shipment_cancelled(event: ShipmentCancelled, ctx: EventContext) -> None:
        await payments.shipment_cancelled(event, ctx.event_id)

    async def on_cancellation_refused(event: CancellationRefused, ctx: EventContext) -> None:
        await payments.cancellation_refused(event, ctx.event_id)

    consumer.on(OrderPlaced, on_order_placed, lane="orders")
    consumer.on(OrderCancelled, on_order_cancelled, lane="orders")
    # The StockReserved that makes an order ready for screening never queues behind OrderPlaced (issue 12).
    consumer.on(StockReserved, on_stock_reserved, lane="stock")
    # The shipping topic carries every shipment event of every order; payment needs three of them.
    consumer.on(ShipmentCancelled, on_shipment_cancelled, lane="shipping")
    consumer.on(CancellationRefused, on_cancellation_refused, lane="shipping")
    consumer.on(ReturnReceived, on_return_received, lane="shipping")
    # Invoices and credit notes: several writes each (numbering), never in the way of an order's charge.
    consumer.on(PaymentCaptured, on_payment_captured, lane="invoices")
    consumer.on(PaymentRefunded, on_payment_refunded, lane="invoices")
