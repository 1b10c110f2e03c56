"""Event handlers: translate and call a use case. Redeliveries are no-ops (see PaymentService)."""

from __future__ import annotations

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
        await invoicing.order_placed(event)  # first: the invoice is made from the order as placed
        await payments.order_placed(event, ctx.event_id)

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

    consumer.on(OrderPlaced, on_order_placed)
    consumer.on(ShipmentCancelled, on_shipment_cancelled)
    consumer.on(CancellationRefused, on_cancellation_refused)
    # Its own lane (a second Kafka consumer): in a burst, the StockReserved that makes an order ready for
    # screening no longer queues behind every other order's OrderPlaced in one consumer (issue 12).
    consumer.on(StockReserved, on_stock_reserved, lane="stock")
    consumer.on(OrderCancelled, on_order_cancelled)
    consumer.on(ReturnReceived, on_return_received)
    consumer.on(PaymentCaptured, on_payment_captured)
    consumer.on(PaymentRefunded, on_payment_refunded)
