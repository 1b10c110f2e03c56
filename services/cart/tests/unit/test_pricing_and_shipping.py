"""Totals, coupons, price bands and addresses: the calculations in the domain."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from kasse_cart.domain.cart import Cart, CartLimits, ProductInfo
from kasse_cart.domain.promotions import Coupon, CouponKind, FreeShippingPromotion, compute_totals, normalise_code
from kasse_cart.domain.shipping import RateTable, validate_address
from kasse_common.errors import Unprocessable

pytestmark = pytest.mark.unit

NOW = datetime(2026, 11, 20, 16, 0, tzinfo=UTC)  # Friday 17:00 in Berlin, after the cut-off


def totals(subtotal: int, coupon: Coupon | None = None, shipping: int | None = None, rate_free: int | None = None):  # type: ignore[no-untyped-def]
    return compute_totals(
        subtotal=subtotal,
        currency="EUR",
        coupon=coupon,
        free_shipping=FreeShippingPromotion(5000, "EUR"),
        shipping_price=shipping,
        rate_free_threshold=rate_free,
        now=NOW,
    )


def test_percent_rounds_down_and_fixed_never_exceeds_the_basket() -> None:
    third = Coupon("THIRD", CouponKind.PERCENT, 33, "EUR")
    assert totals(1001, third).item_discount_total == 330
    big = Coupon("BIG", CouponKind.FIXED, 5000, "EUR")
    t = totals(1200, big, shipping=495)
    assert t.item_discount_total == 1200 and t.total == 495


def test_free_shipping_counts_the_basket_after_item_discounts() -> None:
    ten = Coupon("TEN", CouponKind.PERCENT, 10, "EUR")
    assert totals(5000, shipping=495).total == 5000  # exactly the threshold: free
    t = totals(5000, ten, shipping=495)
    assert not t.free_shipping and t.total == 4500 + 495
    assert totals(4999, shipping=495).total == 4999 + 495
    rate = totals(3000, shipping=495, rate_free=2500)  # the rate table's own threshold
    assert rate.free_shipping and rate.total == 3000 and rate.discounts[0].applies_to == "shipping"


def test_a_coupon_that_no_longer_applies_gives_nothing_and_says_why() -> None:
    t = totals(1000, Coupon("MIN", CouponKind.FIXED, 500, "EUR", min_subtotal=2000))
    assert t.discounts == () and t.coupon_notice is not None and "20.00 EUR" in t.coupon_notice


def test_codes_are_normalised_and_checked() -> None:
    assert normalise_code("  summer-24 ") == "SUMMER-24"
    for bad in ("", "a b", "x" * 41, "a.b"):
        with pytest.raises(Unprocessable):
            normalise_code(bad)


TABLE = RateTable(
    revision=1,
    origin_timezone="Europe/Berlin",
    cutoff_local_time="14:00",
    holidays=(),
    methods=(
        {"method_id": "std", "name": "Standard", "carrier": "SimPost", "rates": [
            {"countries": ["DE", "AT"], "currency": "EUR", "free_shipping_threshold": 9000,
             "price_bands": [{"min_subtotal": 2000, "price": 395}, {"min_subtotal": 0, "price": 595},
                             {"min_subtotal": 6000, "price": 0}],
             "min_business_days": 1, "max_business_days": 2}]},
    ),
)  # fmt: skip


@pytest.mark.parametrize(("subtotal", "price"), [(0, 595), (1999, 595), (2000, 395), (5999, 395), (6000, 0)])
def test_the_price_band_is_the_highest_one_reached(subtotal: int, price: int) -> None:
    assert TABLE.quote("std", "DE", "EUR", subtotal, NOW).price == price


def test_the_delivery_promise_follows_the_cutoff_and_weekends() -> None:
    quote = TABLE.quote("std", "AT", "EUR", 100, NOW)
    # After Friday's cut-off: dispatched Monday the 23rd, delivered 1-2 business days later.
    assert (quote.promised_from, quote.promised_to) == (date(2026, 11, 24), date(2026, 11, 25))
    assert quote.free_shipping_threshold == 9000


def test_unknown_methods_and_unserved_countries_are_refused() -> None:
    with pytest.raises(Unprocessable, match="available: std"):
        TABLE.quote("express", "DE", "EUR", 100, NOW)
    with pytest.raises(Unprocessable, match="does not deliver to FR"):
        TABLE.quote("std", "FR", "EUR", 100, NOW)
    assert [q.method_id for q in TABLE.options("DE", "EUR", 100, NOW)] == ["std"]
    assert TABLE.options("US", "EUR", 100, NOW) == []


@pytest.mark.parametrize(
    ("country", "postal", "ok"),
    [("DE", "10115", True), ("DE", "1011", False), ("NL", "1012 AB", True), ("GB", "SW1A 1AA", True),
     ("US", "12345-6789", True), ("PL", "00950", False), ("XX", "anything", True)],
)  # fmt: skip
def test_postal_codes_are_checked_per_country(country: str, postal: str, ok: bool) -> None:
    address = {"name": "E", "line1": "Street 1", "city": "Town", "postal_code": postal, "country": country}
    if ok:
        validate_address(address)
    else:
        with pytest.raises(Unprocessable, match="postal code"):
            validate_address(address)


def test_blank_address_fields_are_refused() -> None:
    with pytest.raises(Unprocessable, match="line1"):
        validate_address({"name": "E", "line1": "  ", "city": "T", "postal_code": "10115", "country": "DE"})


def test_a_repriced_line_is_flagged_until_the_shopper_touches_it() -> None:
    cart = Cart("c", "h", "s", "EUR", NOW, NOW)
    p = ProductInfo("p", "SKU", "P", "k", 1000, "EUR", 10, True, 1)
    cart.add(p, 1, CartLimits(), NOW)
    line = cart.reprice(ProductInfo("p", "SKU", "P", "k", 1200, "EUR", 10, True, 2))
    assert line is not None and line.price_changed and line.previous_unit_price == 1000
    assert cart.reprice(ProductInfo("p", "SKU", "P", "k", 1000, "EUR", 10, True, 3)) is not None
    assert not cart.lines[0].price_changed  # back to the price the shopper saw
    cart.reprice(ProductInfo("p", "SKU", "P", "k", 900, "EUR", 10, True, 4))
    cart.set_quantity("p", 2, ProductInfo("p", "SKU", "P", "k", 900, "EUR", 10, True, 4), CartLimits(), NOW)
    assert not cart.lines[0].price_changed and cart.subtotal == 1800
