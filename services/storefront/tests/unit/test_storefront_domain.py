from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from kasse_storefront.adapters.i18n import Formats, negotiate
from kasse_storefront.domain.attribution import attribution
from kasse_storefront.domain.images import placeholder_svg, sized
from kasse_storefront.domain.shop import can_return, free_shipping_progress, rating_distribution, timeline_steps

pytestmark = pytest.mark.unit


def test_utm_parameters_win_over_the_referrer() -> None:
    query = {"utm_source": "newsletter", "utm_medium": "email", "other": "x"}
    assert attribution(query, "https://www.google.com/", "shop.example") == {
        "utm_source": "newsletter",
        "utm_medium": "email",
    }


@pytest.mark.parametrize(
    ("referrer", "channel"),
    [
        ("https://www.google.de/search?q=knife", "search"),
        ("https://duckduckgo.com/", "search"),
        ("https://www.instagram.com/p/1", "social"),
        ("https://shop.example/p/knife", "direct"),  # our own pages
        ("https://blog.example.org/", "direct"),
        (None, "direct"),
    ],
)
def test_the_referrer_names_the_channel_without_utm(referrer: str | None, channel: str) -> None:
    assert attribution({}, referrer, "shop.example:443") == {"channel": channel}


def test_free_shipping_progress() -> None:
    half = free_shipping_progress(2500, 5000)
    assert half is not None and (half.remaining, half.percent, half.reached) == (2500, 50, False)
    done = free_shipping_progress(7000, 5000)
    assert done is not None and (done.remaining, done.percent, done.reached) == (0, 100, True)
    assert free_shipping_progress(100, None) is None


def test_rating_distribution_counts_each_star_from_five_down() -> None:
    assert rating_distribution([5, 5, 4, 1]) == [(5, 2, 50), (4, 1, 25), (3, 0, 0), (2, 0, 0), (1, 1, 25)]
    assert rating_distribution([]) == [(s, 0, 0) for s in range(5, 0, -1)]


def test_timeline_and_return_window() -> None:
    assert timeline_steps("paid") == [("placed", True), ("paid", True), ("shipped", False), ("delivered", False)]
    now = datetime(2026, 12, 3, tzinfo=UTC)
    assert can_return(True, now + timedelta(days=1), now)
    assert not can_return(True, now - timedelta(seconds=1), now)
    assert not can_return(False, None, now)


def test_shop_images_come_in_several_widths_and_outside_urls_stay() -> None:
    assert sized("/images/products/knife.svg", 320) == "/images/products/320/knife.svg"
    assert sized("https://img.example/a.jpg", 320) == "https://img.example/a.jpg"
    svg = placeholder_svg("knife-detail", 160)
    assert svg.startswith("<svg") and 'width="160"' in svg and "knife" in svg
    assert placeholder_svg("knife", 160) == placeholder_svg("knife", 160)  # cacheable: deterministic


def test_money_dates_and_language_per_locale() -> None:
    de, en = Formats("de"), Formats("en")
    assert de.money(8900, "EUR") == "89,00\xa0€"
    assert en.money(8900, "EUR") == "€89.00"
    assert de.day("2026-12-03") == "Donnerstag, 3. Dezember"
    assert en.day("2026-12-03") == "Thursday, 3 December"
    assert negotiate("en-GB,en;q=0.9") == "en" and negotiate("fr") == "de" and negotiate(None) == "de"
