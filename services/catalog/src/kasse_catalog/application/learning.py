"""Learning from the event stream: co-purchases, co-views, sessions' recent views, popularity and
delivered orders. Every step is idempotent per event id, so redeliveries count once."""

from __future__ import annotations

import asyncio
from itertools import permutations

from kasse_catalog.application.ports import ProductRepository, PurchaseLedger, RelationKind, SignalStore
from kasse_contracts.events import OrderPlaced, ProductViewed, ShipmentDelivered

MAX_PAIR_PRODUCTS = 20  # an order with hundreds of lines would otherwise write n² counters


class Learner:
    def __init__(
        self,
        products: ProductRepository,
        signals: SignalStore,
        ledger: PurchaseLedger,
        *,
        recent_views: int = 20,
        viewed_together_window: int = 10,
    ) -> None:
        self.products = products
        self.signals = signals
        self.ledger = ledger
        self.recent_views = recent_views
        self.window = viewed_together_window

    async def order_placed(self, order: OrderPlaced, event_id: str) -> None:
        product_ids = list(dict.fromkeys(line.product_id for line in order.lines))
        # Independent idempotent writes, side by side: the order's stock waits for this handler (issue 12).
        await asyncio.gather(
            self.ledger.record_order(
                order.order_id, order.customer_id, order.session_id, product_ids, order.order_token_sha256
            ),
            *(
                self.products.record_interest(product_id, views=0, purchases=1, event_id=event_id)
                for product_id in product_ids
            ),
            *(
                self.signals.increment_pair(RelationKind.BOUGHT_TOGETHER, a, b, event_id)
                for a, b in permutations(product_ids[:MAX_PAIR_PRODUCTS], 2)
            ),
        )

    async def shipment_delivered(self, delivered: ShipmentDelivered) -> None:
        await self.ledger.mark_delivered(delivered.order_id, delivered.delivered_at)

    async def product_viewed(self, viewed: ProductViewed, event_id: str) -> None:
        # Pairs first, the session last: until the session records this view, a redelivery sees the
        # same previous views and (idempotently) the same pairs.
        previous = [pid for pid in await self.signals.recent_views(viewed.session_id) if pid != viewed.product_id]
        for other in previous[: self.window]:
            await self.signals.increment_pair(RelationKind.VIEWED_TOGETHER, viewed.product_id, other, event_id)
            await self.signals.increment_pair(RelationKind.VIEWED_TOGETHER, other, viewed.product_id, event_id)
        await self.products.record_interest(viewed.product_id, views=1, purchases=0, event_id=event_id)
        await self.signals.record_view(viewed.session_id, viewed.product_id, event_id, self.recent_views)
