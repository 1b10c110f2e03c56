"""The catalog's rules, without any infrastructure."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from kasse_catalog.domain.channel import resolve_channel
from kasse_catalog.domain.product import (
    InsufficientStock,
    Product,
    ProductDetails,
    product_id_for_sku,
    slugify,
)
from kasse_catalog.domain.reservation import Reservation, ReservationStatus
from kasse_catalog.domain.review import Review
from kasse_catalog.domain.search import relevance, stem, tokenize
from kasse_common.errors import Conflict, Unprocessable
from kasse_contracts.base import Channel, Money
from kasse_contracts.events import ProductChangeKind

pytestmark = pytest.mark.unit

NOW = datetime(2026, 11, 2, 12, 0, tzinfo=UTC)


def eur(amount: int) -> Money:
    return Money(amount=amount, currency="EUR")


def product(**kw: object) -> Product:
    values: dict[str, object] = {
        "sku": "KIT-KNIFE",
        "name": "Chef's Knife",
        "description": "A sharp knife",
        "category": "kitchen",
        "price": eur(5000),
        "stock_on_hand": 10,
    }
    values.update(kw)
    return Product.create(ProductDetails(**values), NOW)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("explicit", "source", "medium", "campaign", "expected"),
    [
        (Channel.SOCIAL, "newsletter", "email", None, Channel.SOCIAL),  # explicit wins
        (None, "newsletter", "email", "winter-sale", Channel.EMAIL),
        (None, "google", "cpc", None, Channel.CAMPAIGN),
        (None, "instagram", "social", None, Channel.SOCIAL),
        (None, "facebook", None, None, Channel.SOCIAL),
        (None, "google", "organic", None, Channel.SEARCH),
        (None, "bing", None, None, Channel.SEARCH),
        (None, None, "recommendation", None, Channel.RECOMMENDATION),
        (None, "partner-blog", None, "spring", Channel.CAMPAIGN),
        (None, None, None, None, Channel.DIRECT),
        (None, "  ", "", "", Channel.DIRECT),
    ],
)
def test_channel_comes_from_the_explicit_parameter_or_the_utm_fields(
    explicit: Channel | None, source: str | None, medium: str | None, campaign: str | None, expected: Channel
) -> None:
    assert resolve_channel(explicit, source, medium, campaign) is expected


def test_product_ids_are_derived_from_the_sku_and_slugs_from_the_name() -> None:
    assert product_id_for_sku("KIT-KNIFE") == product_id_for_sku("kit-knife") != product_id_for_sku("KIT-FORK")
    assert slugify("Crème Brûlée Torch — 2 Pack!") == "creme-brulee-torch-2-pack"
    assert product().slug == "chef-s-knife"


def test_a_sale_price_must_be_above_the_price_and_in_the_same_currency() -> None:
    with pytest.raises(Unprocessable, match="higher than price"):
        product(compare_at_price=eur(5000))
    with pytest.raises(Unprocessable, match="USD"):
        product(compare_at_price=Money(amount=9000, currency="USD"))
    assert product(compare_at_price=eur(6000)).compare_at_price == eur(6000)


def test_update_reports_the_kinds_of_change_and_nothing_for_no_change() -> None:
    p = product()
    assert p.update(NOW, name="Chef's Knife", price=eur(5000)) == []
    assert p.update(NOW, price=eur(4500)) == [ProductChangeKind.PRICE]
    assert p.update(NOW, stock_on_hand=12, active=False, name="Gyuto") == [
        ProductChangeKind.STOCK,
        ProductChangeKind.AVAILABILITY,
        ProductChangeKind.DETAILS,
    ]
    assert (p.stock_on_hand, p.active, p.name) == (12, False, "Gyuto")
    with pytest.raises(Unprocessable):
        p.update(NOW, sku="OTHER")


def test_reserving_takes_from_available_and_never_oversells() -> None:
    p = product(stock_on_hand=3)
    p.reserve(2, NOW)
    assert (p.stock_available, p.stock_reserved) == (1, 2)
    with pytest.raises(InsufficientStock) as short:
        p.reserve(2, NOW)
    assert (short.value.requested, short.value.available) == (2, 1)
    p.release(2, NOW)
    assert p.stock_available == 3


def test_stock_on_hand_cannot_drop_below_what_orders_hold() -> None:
    p = product(stock_on_hand=5)
    p.reserve(4, NOW)
    with pytest.raises(Conflict, match="4 units are reserved"):
        p.adjust_stock(-2, NOW)
    assert p.adjust_stock(-1, NOW) == [ProductChangeKind.STOCK]
    assert p.stock_available == 0


def test_an_inactive_product_cannot_be_reserved() -> None:
    p = product(active=False)
    with pytest.raises(InsufficientStock) as short:
        p.reserve(1, NOW)
    assert short.value.available == 0


def test_rating_average_follows_the_ratings() -> None:
    p = product()
    for r in (5, 4, 4):
        p.add_rating(r)
    assert (p.rating_count, p.rating_average) == (3, 4.33)
    with pytest.raises(Unprocessable):
        p.add_rating(6)


def test_relevance_prefers_the_name_whole_words_and_the_phrase() -> None:
    tokens = tokenize("Wireless Headphones wireless")
    assert tokens == ["wireless", "headphones"]
    in_name = relevance(tokens, "Wireless Noise-Cancelling Headphones", "Over-ear.")
    in_description = relevance(tokens, "Earbuds", "wireless headphones for running")
    phrase = relevance(tokens, "Wireless Headphones", "")
    assert phrase > in_name > in_description > 0
    assert relevance(tokens, "Kettle", "boils water") == 0


def status_of(r: Reservation) -> ReservationStatus:
    return r.status  # read through a call: mypy would keep the narrowing across release()


def test_a_reservation_merges_lines_of_the_same_product() -> None:
    r = Reservation.start("ord_1", "sess", None, [("p1", "S1", 1), ("p2", "S2", 2), ("p1", "S1", 3)])
    assert [(line.product_id, line.quantity) for line in r.lines] == [("p1", 4), ("p2", 2)]
    with pytest.raises(ValueError):
        r.confirm()
    for line in r.lines:
        line.taken = True
    r.confirm()
    assert r.holds_stock and status_of(r) is ReservationStatus.RESERVED
    r.release("order_cancelled")
    assert not r.holds_stock and status_of(r) is ReservationStatus.RELEASED


def test_a_review_names_every_invalid_field() -> None:
    with pytest.raises(Unprocessable) as bad:
        Review("r", "p", 0, " ", "x" * 5001, "Ann", False, NOW)
    fields = [e["field"] for e in bad.value.extra["errors"]]
    assert fields == ["rating", "title", "text"]


def test_plurals_match_their_singular_and_a_name_with_every_word_ranks_first() -> None:
    assert [stem(w) for w in ("headphones", "glass", "bus", "knives", "pan")] == [
        "headphone",
        "glass",
        "bus",
        "knive",
        "pan",
    ]
    stand = ("Headphone Stand", "Holds wireless headphones on your desk.")
    over_ear = ("Wireless Noise-Cancelling Headphones", "Over-ear, 35 hours of battery.")
    both = tokenize("wireless headphones")
    assert relevance(both, *over_ear) > relevance(both, *stand) > 0
    assert relevance(["headphones"], *stand) == relevance(["headphone"], *stand) > 0
