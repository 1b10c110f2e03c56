from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
from pydantic import ValidationError

from kasse_common.errors import Unprocessable
from kasse_contracts.base import Money
from kasse_contracts.events.shipping import PriceBand, ShippingRate
from kasse_shipping.application.rates import RateTableService
from kasse_shipping.domain.rates import Basket, RateTable, price_for, quote

from ..fakes import InMemoryRateTableRepository
from .helpers import shipped_table

pytestmark = pytest.mark.unit

RATE = ShippingRate(
    zone="z",
    countries=["AT"],
    currency="EUR",
    price_bands=[PriceBand(min_subtotal=0, price=900), PriceBand(min_subtotal=5000, price=600)],
    per_kg=50,
    free_shipping_threshold=10000,
    min_business_days=2,
    max_business_days=4,
)


def basket(amount: int, grams: int = 0, items: int = 1, currency: str = "EUR") -> Basket:
    return Basket(subtotal=Money(amount=amount, currency=currency), weight_grams=grams, item_count=items)


@pytest.mark.parametrize(
    ("amount", "grams", "expected", "free"),
    [
        (4999, 0, 900, False),  # below the second band
        (5000, 0, 600, False),  # a band starts inclusive
        (5000, 1, 650, False),  # one gram is a started kilogram
        (5000, 2000, 700, False),
        (5000, 2001, 750, False),
        (10000, 30000, 0, True),  # the threshold makes it free, weight or not
    ],
)
def test_price_by_band_started_kilograms_and_threshold(amount: int, grams: int, expected: int, free: bool) -> None:
    assert price_for(RATE, basket(amount, grams)) == (Money(amount=expected, currency="EUR"), free)


def test_a_basket_in_another_currency_is_refused() -> None:
    with pytest.raises(Unprocessable, match="rates to z are in EUR; the basket is in SEK"):
        price_for(RATE, basket(1000, currency="SEK"))


def test_an_empty_basket_is_refused() -> None:
    with pytest.raises(Unprocessable, match="basket is empty"):
        basket(1000, items=0)


def test_quote_dates_follow_cutoff_in_berlin_and_skip_holidays() -> None:
    table = shipped_table()
    # Thursday 2026-12-24 16:00 UTC, after the cut-off; 25th and 26th are holidays, then Sunday.
    quotes = quote(
        table, country="DE", postal_code="10115", basket=basket(1000), ordered_at=datetime(2026, 12, 24, 16, tzinfo=UTC)
    )
    by_id = {q.method.method_id: q for q in quotes}
    assert by_id["standard"].dispatch_date == date(2026, 12, 28)
    assert (by_id["standard"].delivery_from, by_id["standard"].delivery_to) == (date(2026, 12, 29), date(2026, 12, 31))
    assert [q.price.amount for q in quotes] == sorted(q.price.amount for q in quotes)


def test_quote_refuses_unknown_destinations_methods_and_bad_postal_codes() -> None:
    table = shipped_table()
    at = datetime(2026, 11, 24, 9, tzinfo=UTC)
    with pytest.raises(Unprocessable, match="we do not ship to JP"):
        quote(table, country="JP", postal_code=None, basket=basket(1000), ordered_at=at)
    with pytest.raises(Unprocessable, match="unknown shipping method 'drone'"):
        quote(table, country="DE", postal_code=None, basket=basket(1000), ordered_at=at, method_id="drone")
    with pytest.raises(Unprocessable, match="does not deliver to GB"):
        quote(table, country="GB", postal_code=None, basket=basket(1000), ordered_at=at, method_id="pickup_point")
    with pytest.raises(Unprocessable, match="not valid for GB"):
        quote(table, country="GB", postal_code="123456", basket=basket(1000), ordered_at=at)
    assert quote(table, country="GB", postal_code="SW1A 1AA", basket=basket(1000), ordered_at=at)
    with pytest.raises(Unprocessable, match="time zone"):
        quote(table, country="DE", postal_code=None, basket=basket(1000), ordered_at=datetime(2026, 11, 24, 9))


def test_the_shipped_table_covers_the_required_destinations_and_german_holidays() -> None:
    table = shipped_table()
    assert {"DE", "AT", "FR", "NL", "SE", "GB", "US"} <= table.countries()
    assert {m.kind.value for m in table.methods} == {"standard", "express", "pickup_point"}
    assert date(2026, 4, 3) in table.holidays and date(2027, 5, 17) in table.holidays  # Good Friday, Whit Monday
    assert (table.origin_timezone, table.cutoff_local_time) == ("Europe/Berlin", "14:00")


def test_an_inconsistent_table_is_rejected_at_load() -> None:
    data = shipped_table().model_dump(mode="json")
    data["methods"][0]["rates"][0]["min_business_days"] = 9
    with pytest.raises(ValidationError, match="min_business_days > max_business_days"):
        RateTable.model_validate(data)
    data = shipped_table().model_dump(mode="json")
    data["origin_timezone"] = "Mars/Olympus"
    with pytest.raises(ValidationError, match="unknown time zone"):
        RateTable.model_validate(data)


async def test_revision_bumps_only_when_the_table_changes() -> None:
    repo = InMemoryRateTableRepository()
    table = shipped_table()
    assert await RateTableService(table, repo).publish() == 1
    assert await RateTableService(table, repo).publish() == 1  # a restart
    changed = table.model_copy(update={"cutoff_local_time": "15:00"})
    assert await RateTableService(changed, repo).publish() == 2
    revisions = [p.event.revision for p in repo.published]  # type: ignore[attr-defined]
    assert revisions == [1, 1, 2]
    # The repeat of revision 1 has the same event id: readers can drop it as a duplicate.
    assert repo.published[0].event_id == repo.published[1].event_id != repo.published[2].event_id


async def test_two_instances_publishing_a_changed_table_at_once_make_one_new_revision() -> None:
    """The second instance's write loses the race (stale version); the kit's retry looks again and
    finds the table already published under revision 2, so it re-announces that, not a revision 3."""
    repo = InMemoryRateTableRepository()
    table = shipped_table()
    await RateTableService(table, repo).publish()
    changed = table.model_copy(update={"cutoff_local_time": "15:00"})
    original_save = repo.save
    raced = False

    async def save_after_another_instance(*args, **kwargs):  # type: ignore[no-untyped-def]
        nonlocal raced
        if not raced:
            raced = True
            assert await RateTableService(changed, repo).publish() == 2  # lands first
        return await original_save(*args, **kwargs)

    repo.save = save_after_another_instance  # type: ignore[method-assign]
    assert await RateTableService(changed, repo).publish() == 2
    assert raced
    assert [p.event.revision for p in repo.published] == [1, 2, 2]  # type: ignore[attr-defined]
