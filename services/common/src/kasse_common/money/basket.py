"""A basket's money: item discounts spread over its lines, shipping over its VAT rates, VAT per rate.

The rules (also in services/common/README.md, "Money"):
- Item discounts (percentage or fixed coupons) are spread over the lines in proportion to their
  totals, by largest remainder with ties to the earlier line (`allocation.allocate`). A line's
  `discounted_total` is what the customer pays for it; a refund of its units pays back a share of that.
- A free-shipping promotion discounts the shipping only: `shipping_charged = price - its discount`.
- The shipping charged follows the basket's VAT rates in proportion to the lines' discounted totals
  per rate (largest remainder, ties to the rate seen first); when those are all zero, in proportion
  to the undiscounted totals; with no priced goods at all, at the destination's standard rate.
- VAT is then computed once per rate on that rate's gross total (`vat.vat_in_gross`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

from kasse_common.errors import Unprocessable
from kasse_common.money.allocation import allocate
from kasse_common.money.vat import Breakdown, VatTable, default_vat_table, group_by_rate
from kasse_contracts.events.common import TaxClass


@dataclass(frozen=True)
class BasketLine:
    line_total: int  # gross, before discounts
    tax_class: TaxClass


@dataclass(frozen=True)
class PricedLine:
    line_total: int
    discount: int
    basis_points: int

    @property
    def discounted_total(self) -> int:
        return self.line_total - self.discount


@dataclass(frozen=True)
class PricedBasket:
    lines: tuple[PricedLine, ...]
    shipping_charged: int
    vat: Breakdown

    @property
    def total(self) -> int:
        return sum(line.discounted_total for line in self.lines) + self.shipping_charged


def price_basket(
    lines: Sequence[BasketLine],
    *,
    item_discount: int,
    shipping_price: int,
    shipping_discount: int,
    country: str,
    on: date,
    table: VatTable | None = None,
) -> PricedBasket:
    table = table or default_vat_table()
    subtotal = sum(line.line_total for line in lines)
    if any(line.line_total < 0 for line in lines) or shipping_price < 0:
        raise Unprocessable("amounts must not be negative")
    if not 0 <= item_discount <= subtotal:
        raise Unprocessable(f"an item discount of {item_discount} on goods worth {subtotal}")
    if not 0 <= shipping_discount <= shipping_price:
        raise Unprocessable(f"a shipping discount of {shipping_discount} on shipping of {shipping_price}")
    rates = [table.rate(country, line.tax_class, on) for line in lines]
    discounts = allocate(item_discount, [line.line_total for line in lines]) if lines else []
    priced = tuple(
        PricedLine(line.line_total, discount, bp) for line, discount, bp in zip(lines, discounts, rates, strict=True)
    )
    shipping_charged = shipping_price - shipping_discount

    # Rates in order of first appearance, each with its discounted and undiscounted goods.
    order: list[int] = []
    paid: dict[int, int] = {}
    listed: dict[int, int] = {}
    for line in priced:
        if line.basis_points not in paid:
            order.append(line.basis_points)
            paid[line.basis_points] = 0
            listed[line.basis_points] = 0
        paid[line.basis_points] += line.discounted_total
        listed[line.basis_points] += line.line_total
    shipping_by_rate: dict[int, int] = {}
    if shipping_charged:
        weights = [paid[bp] for bp in order]
        if sum(weights) == 0:
            weights = [listed[bp] for bp in order]
        if sum(weights) == 0:
            standard = table.rate(country, TaxClass.STANDARD, on)
            shipping_by_rate = {standard: shipping_charged}
        else:
            shipping_by_rate = dict(zip(order, allocate(shipping_charged, weights), strict=True))

    parts = [(line.basis_points, line.line_total, line.discount, 0) for line in priced]
    parts += [(bp, 0, 0, amount) for bp, amount in shipping_by_rate.items()]
    breakdown = group_by_rate(parts, country, table.is_export(country))
    return PricedBasket(priced, shipping_charged, breakdown)
