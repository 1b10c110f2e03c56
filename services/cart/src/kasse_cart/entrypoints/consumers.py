"""Event handlers: translate a consumed event into a use case call. Idempotent by construction:
order facts commit with the consumed event id; read models keep the highest revision."""

from __future__ import annotations

from kasse_cart.application.orders import OrderLife
from kasse_cart.application.read_models import ReadModels
from kasse_cart.domain.order import Shipment
from kasse_common.messaging import EventConsumer, EventContext
from kasse_contracts.events import (
    CancellationRefused,
    PaymentCaptured,
    PaymentFailed,
    PaymentRefunded,
    ProductChanged,
    ShipmentCreated,
    ShipmentDelivered,
    ShipmentDispatched,
    ShippingMethodsPublished,
    StockRejected,
    StockReserved,
)


def register(consumer: EventConsumer, orders: OrderLife, read_models: ReadModels) -> None:
    async def product_changed(event: ProductChanged, ctx: EventContext) -> None:
        await read_models.product_changed(event, ctx.event_id)

    async def methods_published(event: ShippingMethodsPublished, ctx: EventContext) -> None:
        await read_models.rate_table_published(event)

    async def stock_reserved(event: StockReserved, ctx: EventContext) -> None:
        await orders.apply(event.order_id, ctx.event_id, lambda o: o.stock_reserved(event.occurred_at))

    async def stock_rejected(event: StockRejected, ctx: EventContext) -> None:
        detail = ", ".join(f"{r.sku}: {r.available} of {r.requested} available" for r in event.rejected_lines)
        await orders.apply(event.order_id, ctx.event_id, lambda o: o.stock_rejected(event.occurred_at, detail))

    async def payment_captured(event: PaymentCaptured, ctx: EventContext) -> None:
        await orders.apply(
            event.order_id, ctx.event_id, lambda o: o.payment_captured(event.occurred_at, event.payment_intent_id)
        )

    async def payment_failed(event: PaymentFailed, ctx: EventContext) -> None:
        await orders.apply(
            event.order_id, ctx.event_id, lambda o: o.payment_failed(event.occurred_at, event.reason, event.message)
        )

    async def payment_refunded(event: PaymentRefunded, ctx: EventContext) -> None:
        await orders.apply(
            event.order_id,
            ctx.event_id,
            lambda o: o.payment_refunded(event.occurred_at, event.total_refunded.amount, event.full),
        )

    async def shipment_created(event: ShipmentCreated, ctx: EventContext) -> None:
        shipment = Shipment(
            shipment_id=event.shipment_id,
            carrier=event.carrier,
            tracking_number=event.tracking_number,
            tracking_url=event.tracking_url,
            promised_delivery_date=event.promised_delivery_date,
        )
        await orders.apply(event.order_id, ctx.event_id, lambda o: o.shipment_created(event.occurred_at, shipment))

    async def shipment_dispatched(event: ShipmentDispatched, ctx: EventContext) -> None:
        await orders.apply(event.order_id, ctx.event_id, lambda o: o.shipment_dispatched(event.dispatched_at))

    async def shipment_delivered(event: ShipmentDelivered, ctx: EventContext) -> None:
        await orders.apply(event.order_id, ctx.event_id, lambda o: o.shipment_delivered(event.delivered_at))

    async def cancellation_refused(event: CancellationRefused, ctx: EventContext) -> None:
        detail = event.reason or "already dispatched"
        await orders.apply(event.order_id, ctx.event_id, lambda o: o.cancellation_refused(event.occurred_at, detail))

    # A lane of its own: every reservation, release and fulfilment publishes a ProductChanged, so in a burst
    # they queued the orders' own events (StockReserved, PaymentCaptured, ...) behind them. In make chaos
    # (150 orders, loaded machine) the cart's lag was 80 ProductChanged ahead of 54 stock events, and orders
    # stayed `placed` long after catalog had reserved them.
    consumer.on(ProductChanged, product_changed, lane="catalog")
    # One lane per topic of the order's own facts, too: in a 100-order chaos run the cart's one lane for
    # them lagged 60-80 records on payments and 110-180 on shipping (every shipment event of every order),
    # so a paid or delivered order showed an old status for minutes. The order's facts accumulate
    # (`Order.derived_status`), so their arriving in another order across lanes changes nothing.
    consumer.on(StockReserved, stock_reserved, lane="stock")
    consumer.on(StockRejected, stock_rejected, lane="stock")
    consumer.on(PaymentCaptured, payment_captured, lane="payments")
    consumer.on(PaymentFailed, payment_failed, lane="payments")
    consumer.on(PaymentRefunded, payment_refunded, lane="payments")
    consumer.on(ShipmentCreated, shipment_created, lane="shipping")
    consumer.on(ShipmentDispatched, shipment_dispatched, lane="shipping")
    consumer.on(ShipmentDelivered, shipment_delivered, lane="shipping")
    consumer.on(CancellationRefused, cancellation_refused, lane="shipping")
    consumer.on(ShippingMethodsPublished, methods_published, lane="shipping")  # a few a day
