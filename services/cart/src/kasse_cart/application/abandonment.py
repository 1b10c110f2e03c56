"""Abandoned carts: a cart with items and no order for the idle time publishes CartAbandoned, once.

Replicas may run this at the same time: each claim is a conditional write on the cart's version, so
exactly one wins and the others see ConcurrencyError; the event id is derived from the cart as well.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from kasse_cart.application.ports import CartRepository, Clock, Encoder
from kasse_common.envelope import derived_event_id
from kasse_common.errors import ConcurrencyError
from kasse_contracts.base import Money
from kasse_contracts.events import CartAbandoned

log = logging.getLogger(__name__)


class AbandonmentJob:
    def __init__(
        self, *, carts: CartRepository, encode: Encoder, clock: Clock, idle: timedelta, batch_size: int = 100
    ) -> None:
        self.carts = carts
        self.encode = encode
        self.clock = clock
        self.idle = idle
        self.batch_size = batch_size
        self.rounds = 0  # completed rounds (observability, and tests wait on it)

    async def run_once(self) -> int:
        """Report the carts idle for longer than `idle`; returns how many this replica claimed."""
        now = self.clock()
        claimed = 0
        for cart in await self.carts.idle_since(now - self.idle, self.batch_size):
            if cart.abandoned_at is not None or not cart.lines:
                continue
            cart.abandoned_at = now
            event = CartAbandoned(
                occurred_at=now,
                session_id=cart.session_id,
                customer_id=cart.customer_id,
                cart_id=cart.cart_id,
                item_count=cart.item_count,
                subtotal=Money(amount=cart.subtotal, currency=cart.currency),
                last_activity_at=cart.last_activity_at,
            )
            try:
                await self.carts.save(cart, [self.encode(event, event_id=derived_event_id(cart.cart_id, "abandoned"))])
            except ConcurrencyError:
                continue  # another replica claimed it, or the shopper came back meanwhile
            claimed += 1
        self.rounds += 1
        if claimed:
            log.info("carts reported abandoned", extra={"count": claimed})
        return claimed
