"""Unpaid orders expire: an order not paid by its `payment_due_at` is cancelled (reason payment_timeout).

The cart owns the order's life, so it owns the deadline; payment then cancels the PaymentIntent at
Stripe and refunds a success that arrives after the expiry, catalog releases the stock. Replicas may
run this job side by side: each expiry is a write conditional on the order's version, so exactly one
replica cancels and the others see a ConcurrencyError; the OrderCancelled id is derived from the order.

A payment held for fraud review is not the customer's delay: its deadline moves to the review's own
deadline (payment rejects a review nobody decided by then, which cancels the order with the same reason).
"""

from __future__ import annotations

import logging
from datetime import timedelta

from kasse_cart.application.orders import OrderLife
from kasse_cart.application.ports import Clock, OrderRepository, PaymentLookup
from kasse_cart.domain.order import CancellationNotice
from kasse_common.errors import ConcurrencyError

log = logging.getLogger(__name__)

# Orders one round expires at most. A round reads every candidate (its marker, then the order) before it
# expires the first; with 100 and the store answering in seconds (make chaos on a loaded machine: ~4 s per
# command) a round spent minutes reading, ran into the 600 s round limit, was cancelled and began reading
# again — no order expired for 5 minutes at a time. Small rounds expire steadily; the next round follows.
ROUND_SIZE = 20

# Payment states in which the money is already taken: the PaymentCaptured event is on its way.
PAID_AT_PAYMENT = ("captured", "partially_refunded", "refunded")


class PaymentDeadlineJob:
    def __init__(
        self,
        *,
        orders: OrderRepository,
        life: OrderLife,
        payments: PaymentLookup,
        clock: Clock,
        review_timeout: timedelta,
        recheck_after: timedelta,
        batch_size: int = ROUND_SIZE,
    ) -> None:
        self.orders = orders
        self.life = life
        self.payments = payments
        self.clock = clock
        self.review_timeout = review_timeout
        self.recheck_after = recheck_after
        self.batch_size = batch_size
        self.rounds = 0
        self.expired = 0

    async def run_once(self) -> int:
        """Expire the orders past their payment deadline; returns how many this replica cancelled."""
        now = self.clock()
        cancelled = 0
        for order in await self.orders.unpaid_past_deadline(now, self.batch_size):
            status = await self.payments.payment_status(order.order_id)
            notices: list[CancellationNotice] = []
            if status == "held_for_review" and now < order.placed_at + self.review_timeout:
                order.postpone_payment_deadline(
                    order.placed_at + self.review_timeout + self.recheck_after, now, "payment held for review"
                )
            elif status in PAID_AT_PAYMENT:
                order.postpone_payment_deadline(now + self.recheck_after, now, f"payment is {status}")
            else:
                notices = order.expire_unpaid(now)
            try:
                await self.orders.save(order, self.life.cancellations(order, notices))
            except ConcurrencyError:
                continue  # another replica, or an event for this order, got there first: next round
            if notices:
                cancelled += 1
                log.info("unpaid order expired", extra={"order_id": order.order_id})
        self.rounds += 1
        self.expired += cancelled
        return cancelled
