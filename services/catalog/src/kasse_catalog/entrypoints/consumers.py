"""Event handlers: translate the event, call the use cases. Each is idempotent per event.

One lane (one Kafka consumer) per topic: the shipping topic carries every shipment event of every order
(catalog needs four of them), the payments topic every payment event (catalog needs PaymentFailed). In one
lane with OrderPlaced, an order's stock reservation queued behind them, and catalog lagged 31-123 records
on shipping in the 100-order chaos runs (issue 12). Cart (dcf66f9) and payment (e75f4a6) did the same.
"""

from __future__ import annotations

import asyncio

from kasse_catalog.application.learning import Learner
from kasse_catalog.application.stock import StockKeeper
from kasse_common.messaging import EventConsumer, EventContext
from kasse_contracts.events import (
    CancellationRefused,
    OrderCancelled,
    OrderPlaced,
    PaymentFailed,
    ProductViewed,
    ReturnReceived,
    ShipmentCancelled,
    ShipmentDelivered,
)


def register(consumer: EventConsumer, stock: StockKeeper, learner: Learner) -> None:
    async def on_order_placed(event: OrderPlaced, ctx: EventContext) -> None:
        # One round trip's wait, not the sum: storing the reservation (its lines are taken beside the
        # consumer) and the learner's writes are independent and each idempotent.
        await asyncio.gather(stock.order_placed(event, ctx.event_id), learner.order_placed(event, ctx.event_id))

    async def on_order_cancelled(event: OrderCancelled, ctx: EventContext) -> None:
        await stock.order_cancelled(event)

    async def on_payment_failed(event: PaymentFailed, ctx: EventContext) -> None:
        await stock.release(event.order_id, event.session_id, f"payment_failed:{event.reason}")

    async def on_shipment_delivered(event: ShipmentDelivered, ctx: EventContext) -> None:
        await stock.fulfil(event.order_id)
        await learner.shipment_delivered(event)

    async def on_return_received(event: ReturnReceived, ctx: EventContext) -> None:
        await stock.restock_return(event)

    async def on_shipment_cancelled(event: ShipmentCancelled, ctx: EventContext) -> None:
        await stock.shipment_cancelled(event)

    async def on_cancellation_refused(event: CancellationRefused, ctx: EventContext) -> None:
        await stock.cancellation_refused(event.order_id)

    async def on_product_viewed(event: ProductViewed, ctx: EventContext) -> None:
        await learner.product_viewed(event, ctx.event_id)

    consumer.on(OrderPlaced, on_order_placed, lane="orders")
    consumer.on(OrderCancelled, on_order_cancelled, lane="orders")
    consumer.on(PaymentFailed, on_payment_failed, lane="payments")
    consumer.on(ShipmentDelivered, on_shipment_delivered, lane="shipping")
    consumer.on(ReturnReceived, on_return_received, lane="shipping")
    consumer.on(CancellationRefused, on_cancellation_refused, lane="shipping")
    consumer.on(ShipmentCancelled, on_shipment_cancelled, lane="shipping")
    # Views are the bulk of the traffic: their own lane, so stock reservations never queue behind them.
    consumer.on(ProductViewed, on_product_viewed, lane="storefront")
