"""Exact refunds across services' rules: shipping prices a return, payment refunds it (their domains).

For any order (random lines, discounts, free shipping, country) and any sequence of partial returns,
optionally ending in a cancellation: the total refunded never exceeds what was captured; it equals
the capture when everything comes back under the full-refund policy (without payment's cap having to
cut anything), the capture less shipping under the keep-shipping policy, and the capture after a
final cancellation. A discounted order returned in three parts refunds exactly what was paid.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kasse_common.money.basket import BasketLine, price_basket
from kasse_common.money.refunds import ShippingRefundPolicy
from kasse_contracts.base import Money
from kasse_contracts.events import Address, ReturnReason, ReturnReceived
from kasse_contracts.events.common import TaxClass
from kasse_payment.domain.payment import OrderFacts, OrderLineFacts, Payment, PaymentStatus, Refunded, RefundLine
from kasse_shipping.domain.fulfilment import (
    Fulfilment,
    OrderInfo,
    OrderLine,
    RequestedLine,
    ReturnPolicy,
    Shipment,
    ShipmentStatus,
)

pytestmark = pytest.mark.unit

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


def eur(amount: int) -> Money:
    return Money(amount=amount, currency="EUR")


class Order:
    """One placed, captured and delivered order, as shipping and payment each record it."""

    def __init__(
        self,
        lines: list[tuple[int, int, TaxClass]],  # (unit price, quantity, class)
        *,
        item_discount: int,
        shipping_price: int,
        free_shipping: bool,
        country: str,
        policy: ShippingRefundPolicy,
    ) -> None:
        basket = price_basket(
            [BasketLine(price * qty, tax_class) for price, qty, tax_class in lines],
            item_discount=item_discount,
            shipping_price=shipping_price,
            shipping_discount=shipping_price if free_shipping else 0,
            country=country,
            on=NOW.date(),
        )
        self.captured = basket.total
        self.shipping_charged = basket.shipping_charged
        self.quantities = {f"p{i}": qty for i, (_, qty, _) in enumerate(lines)}
        order_lines = [
            OrderLine(
                product_id=f"p{i}",
                sku=f"SKU-{i}",
                name=f"Product {i}",
                quantity=qty,
                unit_price=eur(price),
                discounted_total=eur(priced.discounted_total),
            )
            for i, ((price, qty, _), priced) in enumerate(zip(lines, basket.lines, strict=True))
        ]
        self.policy = ReturnPolicy(window_days=30, conditions=[], refund_shipping=policy)
        self.fulfilment = Fulfilment(
            order_id="ord_1",
            order=OrderInfo(
                session_id="s",
                email="e@example.com",
                lines=order_lines,
                method_id="standard",
                method_name="Standard",
                carrier="SimPost",
                promised_from=date(2026, 12, 1),
                promised_to=date(2026, 12, 2),
                address=Address(name="E", line1="Str. 1", postal_code="10115", city="Berlin", country=country),
                placed_at=NOW - timedelta(days=5),
                shipping_charged=eur(basket.shipping_charged),
            ),
            shipment=Shipment(
                shipment_id="shp_1",
                method_id="standard",
                carrier="SimPost",
                tracking_number="T1",
                promised_delivery_date=date(2026, 12, 2),
                status=ShipmentStatus.DELIVERED,
                created_at=NOW - timedelta(days=4),
                delivered_at=NOW - timedelta(days=2),
            ),
        )
        self.payment = Payment(
            order_id="ord_1",
            status=PaymentStatus.CAPTURED,
            order=OrderFacts(
                amount=basket.total,
                currency="EUR",
                email="e@example.com",
                session_id="s",
                customer_id=None,
                client_ip=None,
                billing_country=None,
                shipping_country=country,
                lines=tuple(
                    OrderLineFacts(line.product_id, line.sku, line.quantity, line.paid()) for line in order_lines
                ),
            ),
        )
        self.asked = 0  # what shipping asked payment to refund, before payment's cap
        self.refunded_lines: list[RefundLine] = []
        self._returns = 0

    def return_units(self, units: dict[str, int]) -> int:
        """The customer returns `units`; the parcel arrives; payment refunds. Returns the amount refunded."""
        self._returns += 1
        events = self.fulfilment.request_return(
            return_id=f"ret_{self._returns}",
            label_reference="RL",
            lines=[RequestedLine(product_id=p, quantity=q) for p, q in units.items()],
            reason=ReturnReason.CHANGED_MIND,
            comment="",
            policy=self.policy,
            now=NOW,
            session_id="s",
        )
        assert events
        (received,) = self.fulfilment.receive_return(f"ret_{self._returns}", NOW)
        assert isinstance(received, ReturnReceived)
        self.asked += received.refund_amount.amount
        lines = tuple(RefundLine(li.product_id, li.sku, li.quantity, li.refund_amount.amount) for li in received.lines)
        shipping = received.shipping_refund.amount if received.shipping_refund else 0
        self.payment.request_return_refund(
            received.return_id, received.refund_amount.amount, "EUR", NOW, lines, shipping
        )
        return self._settle(f"return-{received.return_id}")

    def cancel(self) -> int:
        self.payment.cancel_order(NOW)
        # A paid cancellation is refunded once shipping has stopped what had not left (issue 12):
        # here shipping answers ShipmentCancelled, so the rest of the capture comes back.
        self.payment.shipment_cancelled(NOW)
        return self._settle("order-cancelled")

    def _settle(self, key: str) -> int:
        refund = next((r for r in self.payment.refunds if r.key == key), None)
        if refund is None:
            return 0  # nothing was left to refund
        (done,) = self.payment.refund_done(key, f"re_{key}", NOW)
        assert isinstance(done, Refunded)
        # PaymentRefunded says which lines: their amounts and the shipping make up the refund.
        assert sum(line.amount for line in done.lines) + done.shipping == done.amount
        self.refunded_lines += done.lines
        return done.amount

    def refunded_units(self) -> dict[str, int]:
        units: dict[str, int] = {}
        for line in self.refunded_lines:
            units[line.product_id] = units.get(line.product_id, 0) + line.quantity
        return units

    @property
    def refunded(self) -> int:
        return self.payment.refunded_total


line_strategy = st.tuples(st.integers(0, 30_000), st.integers(1, 6), st.sampled_from(list(TaxClass)))


@st.composite
def orders(draw: st.DrawFn, policy: ShippingRefundPolicy | None = None) -> Order:
    lines = draw(st.lists(line_strategy, min_size=1, max_size=5))
    subtotal = sum(p * q for p, q, _ in lines)
    kind = draw(st.sampled_from(["none", "percent", "fixed"]))
    discount = {
        "none": 0,
        "percent": subtotal * draw(st.integers(1, 100)) // 100,
        "fixed": min(draw(st.integers(1, 50_000)), subtotal),
    }[kind]
    return Order(
        lines,
        item_discount=discount,
        shipping_price=draw(st.integers(0, 1500)),
        free_shipping=draw(st.booleans()),
        country=draw(st.sampled_from(["DE", "AT", "FR", "NL", "SE", "US", "GB"])),
        policy=policy or draw(st.sampled_from(list(ShippingRefundPolicy))),
    )


@st.composite
def return_sequences(draw: st.DrawFn, quantities: dict[str, int], everything: bool) -> list[dict[str, int]]:
    """Partial returns in a random order; with `everything`, until every unit is back."""
    left = dict(quantities)
    parts: list[dict[str, int]] = []
    while any(left.values()):
        if not everything and draw(st.booleans()):
            break
        part = {}
        for pid, q in left.items():
            if q and draw(st.booleans()):
                part[pid] = draw(st.integers(1, q))
        if not part:
            pid = draw(st.sampled_from([p for p, q in left.items() if q]))
            part[pid] = draw(st.integers(1, left[pid]))
        for pid, q in part.items():
            left[pid] -= q
        parts.append(part)
    return parts


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_everything_returned_in_any_parts_refunds_exactly_what_was_captured(data: st.DataObject) -> None:
    order = data.draw(orders(ShippingRefundPolicy.WHEN_ALL_RETURNED))
    for part in data.draw(return_sequences(order.quantities, everything=True)):
        order.return_units(part)
        assert order.refunded <= order.captured
    assert order.refunded == order.captured
    assert order.asked == order.captured  # exact by the rules, not saved by payment's cap
    assert all(order.refunded_units()[p] <= q for p, q in order.quantities.items() if p in order.refunded_units())


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_any_returns_then_a_cancellation_never_refund_more_than_captured(data: st.DataObject) -> None:
    order = data.draw(orders())
    for part in data.draw(return_sequences(order.quantities, everything=False)):
        order.return_units(part)
        assert order.refunded <= order.captured
    order.cancel()
    assert order.refunded == order.captured
    units = order.refunded_units()
    assert all(units.get(p, 0) <= q for p, q in order.quantities.items())


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_keeping_the_shipping_refunds_the_goods_exactly(data: st.DataObject) -> None:
    order = data.draw(orders(ShippingRefundPolicy.NEVER))
    for part in data.draw(return_sequences(order.quantities, everything=True)):
        order.return_units(part)
    assert order.refunded == order.captured - order.shipping_charged


def test_a_discounted_order_returned_in_three_parts_refunds_exactly_what_was_paid() -> None:
    # 3 x 19.99 + 2 x 15.00 (book) = 89.97; 15 % off = 13.49 (rounded down); shipping 4.95.
    order = Order(
        [(1999, 3, TaxClass.STANDARD), (1500, 2, TaxClass.REDUCED)],
        item_discount=8997 * 15 // 100,
        shipping_price=495,
        free_shipping=False,
        country="DE",
        policy=ShippingRefundPolicy.WHEN_ALL_RETURNED,
    )
    assert order.captured == 8997 - 1349 + 495 == 8143
    # Discount shares: 1349 x 5997/8997 = 899.17 -> 899, x 3000/8997 = 449.82 -> 450 (largest remainder).
    # Paid: p0 5997 - 899 = 5098 for 3 units, p1 3000 - 450 = 2550 for 2 units.
    first = order.return_units({"p0": 1})  # floor(5098 / 3) = 1699
    second = order.return_units({"p0": 1, "p1": 1})  # floor(5098 * 2/3) - 1699 = 1699; 2550 / 2 = 1275
    third = order.return_units({"p0": 1, "p1": 1})  # the rest of both lines, and the shipping
    assert (first, second, third) == (1699, 1699 + 1275, 1700 + 1275 + 495)
    assert order.refunded == order.captured == 8143
    assert order.refunded_units() == {"p0": 3, "p1": 2}
    # The list price would have refunded 89.97 + 4.95 = 94.92 — more than was paid.
    assert order.refunded < 8997 + 495
