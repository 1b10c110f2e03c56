"""Event handlers: translate and call a use case. Redeliveries are no-ops (see PaymentService)."""

from __future__ import annotations

from kasse_common.messaging import EventConsumer, EventContext
from kasse_contracts.events import OrderCancelled, OrderPlaced, ReturnReceived, StockReserved
from kasse_payment.application.service import PaymentService


def register(consumer: EventConsumer, payments: PaymentService) -> None:
    async def on_order_placed(event: OrderPlaced, ctx: EventContext) -> None:
        await payments.order_placed(event, ctx.event_id)

    async def on_stock_reserved(event: StockReserved, ctx: EventContext) -> None:
        await payments.stock_reserved(event, ctx.event_id)

    async def on_order_cancelled(event: OrderCancelled, ctx: EventContext) -> None:
        await payments.order_cancelled(event, ctx.event_id)

    async def on_return_received(event: ReturnReceived, ctx: EventContext) -> None:
        await payments.return_received(event, ctx.event_id)

    consumer.on(OrderPlaced, on_order_placed)
    consumer.on(StockReserved, on_stock_reserved)
    consumer.on(OrderCancelled, on_order_cancelled)
    consumer.on(ReturnReceived, on_return_received)
