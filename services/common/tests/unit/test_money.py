"""The money rules: allocation, VAT rates with validity dates, basket breakdowns. Property tests."""

from __future__ import annotations

from datetime import date

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kasse_common.errors import Unprocessable
from kasse_common.money.allocation import allocate, cumulative_share
from kasse_common.money.basket import BasketLine, price_basket
from kasse_common.money.vat import VatTable, default_vat_table, vat_in_gross
from kasse_contracts.events.common import TaxClass

pytestmark = pytest.mark.unit

TODAY = date(2026, 12, 6)
COUNTRIES = ["DE", "AT", "FR", "NL", "SE", "GB", "US", "CH"]


# -- allocation -------------------------------------------------------------------------------
@given(st.lists(st.integers(0, 10**7), min_size=1, max_size=30), st.data())
def test_allocation_adds_up_and_never_exceeds_a_weight(weights: list[int], data: st.DataObject) -> None:
    total = sum(weights)
    amount = data.draw(st.integers(0, total)) if total else 0
    shares = allocate(amount, weights)
    assert sum(shares) == amount
    assert all(0 <= s <= w for s, w in zip(shares, weights, strict=True))
    # Proportional within one cent of the exact share.
    if total:
        assert all(abs(s * total - amount * w) < total for s, w in zip(shares, weights, strict=True))


def test_allocation_remainders_go_to_the_largest_then_the_earlier() -> None:
    assert allocate(100, [1, 1, 1]) == [34, 33, 33]
    assert allocate(10, [3, 3, 4]) == [3, 3, 4]
    assert allocate(2, [1, 2, 2]) == [0, 1, 1]
    assert allocate(1, [2, 2]) == [1, 0]


@given(st.integers(0, 10**6), st.integers(1, 20), st.data())
def test_cumulative_shares_of_any_sequence_of_parts_add_up(amount: int, units: int, data: st.DataObject) -> None:
    taken = 0
    paid = 0
    while taken < units:
        part = data.draw(st.integers(1, units - taken))
        paid += cumulative_share(amount, taken + part, units) - cumulative_share(amount, taken, units)
        taken += part
        assert paid <= amount
    assert paid == amount


# -- rates ------------------------------------------------------------------------------------
def test_rates_follow_country_class_and_date() -> None:
    table = default_vat_table()
    assert table.rate("DE", TaxClass.STANDARD, TODAY) == 1900
    assert table.rate("DE", TaxClass.REDUCED, TODAY) == 700
    assert table.rate("DE", TaxClass.STANDARD, date(2020, 9, 1)) == 1600  # the 2020 reduction
    assert table.rate("DE", TaxClass.STANDARD, date(2021, 1, 1)) == 1900
    assert table.rate("AT", TaxClass.STANDARD, TODAY) == 2000
    assert table.rate("AT", TaxClass.REDUCED, TODAY) == 1000
    assert table.rate("FR", TaxClass.REDUCED, TODAY) == 550
    assert table.rate("US", TaxClass.STANDARD, TODAY) == 0  # export
    assert table.rate("GB", TaxClass.REDUCED, TODAY) == 0
    assert table.rate("DE", TaxClass.ZERO, TODAY) == 0
    with pytest.raises(Unprocessable, match="no VAT rate"):
        table.rate("IT", TaxClass.STANDARD, TODAY)  # an EU member without rates is refused, not 0


def test_the_table_refuses_overlapping_periods() -> None:
    rate = {"country": "DE", "tax_class": "standard", "basis_points": 1900, "valid_until": None}
    data = {
        "table_id": "t",
        "origin_country": "DE",
        "eu_members": ["DE"],
        "rates": [{**rate, "valid_from": "2020-01-01"}, {**rate, "valid_from": "2021-01-01"}],
    }
    with pytest.raises(ValueError, match="overlap"):
        VatTable.from_dict(data)


def test_vat_in_gross_rounds_half_up() -> None:
    assert vat_in_gross(119, 1900) == 19
    assert vat_in_gross(100, 1900) == 16  # 15.97
    assert vat_in_gross(107, 700) == 7
    assert vat_in_gross(0, 1900) == 0
    assert vat_in_gross(999, 0) == 0


# -- baskets ----------------------------------------------------------------------------------
lines_strategy = st.lists(
    st.builds(BasketLine, st.integers(0, 500_000), st.sampled_from(list(TaxClass))), min_size=0, max_size=12
)


@settings(max_examples=300)
@given(lines_strategy, st.data(), st.sampled_from(COUNTRIES[:-1]), st.integers(0, 5000), st.booleans())
def test_a_basket_breakdown_adds_up_to_the_total_to_the_cent(
    lines: list[BasketLine], data: st.DataObject, country: str, shipping: int, free_shipping: bool
) -> None:
    subtotal = sum(line.line_total for line in lines)
    kind = data.draw(st.sampled_from(["none", "percent", "fixed"]))
    if kind == "percent":
        item_discount = subtotal * data.draw(st.integers(1, 100)) // 100
    elif kind == "fixed":
        item_discount = min(data.draw(st.integers(1, 100_000)), subtotal)
    else:
        item_discount = 0
    basket = price_basket(
        lines,
        item_discount=item_discount,
        shipping_price=shipping,
        shipping_discount=shipping if free_shipping else 0,
        country=country,
        on=TODAY,
    )
    total = subtotal - item_discount + (0 if free_shipping else shipping)
    assert basket.total == total
    assert basket.vat.gross == total
    assert basket.vat.net + basket.vat.vat == total
    assert sum(line.discount for line in basket.lines) == item_discount
    assert all(0 <= line.discounted_total <= line.line_total for line in basket.lines)
    assert sum(r.shipping for r in basket.vat.rates) == basket.shipping_charged
    assert sum(r.discount for r in basket.vat.rates) == item_discount
    for rate in basket.vat.rates:
        assert rate.net + rate.vat == rate.gross >= 0
        # Each rate's VAT is within half a cent of the exact VAT in its gross.
        assert abs(rate.vat * (10000 + rate.basis_points) - rate.gross * rate.basis_points) * 2 <= (
            10000 + rate.basis_points
        )
    if country in ("US", "GB"):
        assert basket.vat.export and basket.vat.vat == 0


def test_shipping_follows_the_baskets_rates_in_proportion() -> None:
    # 119.00 at 19 % and 107.00 at 7 %, shipping 4.90 split 119:107 -> 2.58 / 2.32.
    basket = price_basket(
        [BasketLine(11900, TaxClass.STANDARD), BasketLine(10700, TaxClass.REDUCED)],
        item_discount=0,
        shipping_price=490,
        shipping_discount=0,
        country="DE",
        on=TODAY,
    )
    by_rate = {r.basis_points: r for r in basket.vat.rates}
    assert by_rate[1900].shipping == 258 and by_rate[700].shipping == 232
    assert by_rate[1900].vat == vat_in_gross(11900 + 258, 1900) == 1941
    assert by_rate[700].vat == vat_in_gross(10700 + 232, 700) == 715
    assert basket.vat.gross == 11900 + 10700 + 490


def test_an_item_discount_is_spread_over_the_lines_in_proportion() -> None:
    basket = price_basket(
        [BasketLine(1000, TaxClass.STANDARD), BasketLine(1000, TaxClass.STANDARD), BasketLine(1000, TaxClass.REDUCED)],
        item_discount=100,
        shipping_price=0,
        shipping_discount=0,
        country="AT",
        on=TODAY,
    )
    assert [line.discount for line in basket.lines] == [34, 33, 33]
    assert [line.basis_points for line in basket.lines] == [2000, 2000, 1000]


def test_shipping_alone_is_taxed_at_the_standard_rate() -> None:
    basket = price_basket([], item_discount=0, shipping_price=490, shipping_discount=0, country="DE", on=TODAY)
    assert [(r.basis_points, r.gross, r.vat) for r in basket.vat.rates] == [(1900, 490, 78)]
