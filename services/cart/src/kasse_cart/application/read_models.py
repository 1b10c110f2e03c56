"""Keeping the cart's own views of the catalog and the rate table, and repricing open carts."""

from __future__ import annotations

from kasse_cart.application.carts import CartService
from kasse_cart.domain.cart import ProductInfo
from kasse_cart.domain.shipping import RateTable
from kasse_common.envelope import OutgoingRecord
from kasse_common.retry import retry_on_conflict
from kasse_contracts.events import CartAction, ProductChanged, ShippingMethodsPublished
from kasse_contracts.events.common import TaxClass


def product_info(event: ProductChanged) -> ProductInfo:
    return ProductInfo(
        product_id=event.product_id,
        sku=event.sku,
        name=event.name,
        category=event.category,
        price=event.price.amount,
        currency=event.price.currency,
        stock_available=event.stock_available,
        active=event.active,
        revision=event.revision,
        tax_class=event.tax_class or TaxClass.STANDARD,
    )


def rate_table(event: ShippingMethodsPublished) -> RateTable:
    return RateTable(
        revision=event.revision,
        origin_timezone=event.origin_timezone,
        cutoff_local_time=event.cutoff_local_time,
        holidays=tuple(event.holidays),
        methods=tuple(m.model_dump(mode="json") for m in event.methods),
    )


class ReadModels:
    def __init__(self, carts: CartService) -> None:
        self.service = carts

    async def product_changed(self, event: ProductChanged, event_id: str) -> None:
        product = product_info(event)
        await self.service.products.upsert(product)
        # Reprice with the newest known state (a late, older revision must not win).
        current = await self.service.products.get(product.product_id) or product
        for cart_id in await self.service.carts.ids_with_product(product.product_id):
            await self._reprice(cart_id, current, event_id)

    async def rate_table_published(self, event: ShippingMethodsPublished) -> None:
        await self.service.rate_tables.upsert(event.rate_table_id, rate_table(event))

    async def _reprice(self, cart_id: str, product: ProductInfo, event_id: str) -> None:
        async def attempt() -> None:
            cart = await self.service.carts.get(cart_id)
            if cart is None:
                return
            line = cart.reprice(product)
            flagged = cart.mark_availability(product)
            if line is None and not flagged:
                return
            events: list[OutgoingRecord] = []
            if line is not None:  # a new price is a cart change; an availability flag alone is not
                view = await self.service.view(cart)
                now = self.service.clock()
                event = self.service.cart_updated_event(view, CartAction.PRICE_UPDATED, line, 0, now)
                events.append(self.service.encode(event))
            # consumed_event_id makes a redelivered ProductChanged change nothing on this cart.
            await self.service.carts.save(cart, events, consumed_event_id=event_id)

        await retry_on_conflict(attempt, f"reprice cart {cart_id}", attempts=5)
