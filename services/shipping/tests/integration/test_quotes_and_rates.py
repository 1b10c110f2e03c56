"""Quotes with delivery dates (cut-off, weekend, holiday), bad input, and publishing the rate table."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from kasse_contracts import topics
from kasse_contracts.events import ShippingMethodsPublished
from kasse_shipping.main import create_app
from kasse_shipping.settings import ShippingSettings
from kasse_testkit import running_app

pytestmark = pytest.mark.integration

BASKET = {"subtotal": {"amount": 3000, "currency": "EUR"}, "weight_grams": 1200, "item_count": 2}


async def test_quotes_give_prices_and_delivery_dates_across_cutoff_weekend_and_holidays(
    shipping_settings: Callable[..., ShippingSettings],
) -> None:
    async with running_app(create_app(shipping_settings())) as client:

        async def quote(ordered_at: str, country: str = "DE", **extra: Any) -> dict[str, Any]:
            r = await client.post(
                "/v1/shipping/quotes", json={"country": country, "basket": BASKET, "ordered_at": ordered_at, **extra}
            )
            assert r.status_code == 200, r.text
            return {m["method_id"]: m for m in r.json()["methods"]}

        # Tuesday 11:00 Berlin (10:00 UTC), before the 14:00 cut-off: leaves today.
        before = await quote("2026-11-24T10:00:00Z", postal_code="10115")
        std = before["standard"]
        assert (std["dispatch_date"], std["delivery_from"], std["delivery_to"]) == (
            "2026-11-24",
            "2026-11-25",
            "2026-11-27",
        )
        # Prices: band from 25 EUR (3.95), express 9.95 + 2 started kg x 1.00, pickup free from 30 EUR.
        assert std["price"] == {"amount": 395, "currency": "EUR"} and not std["free_shipping"]
        assert before["express"]["price"]["amount"] == 995 + 2 * 100
        assert before["pickup_point"]["price"]["amount"] == 0 and before["pickup_point"]["free_shipping"]

        # 14:30 Berlin is after the cut-off although it is 13:30 UTC: leaves Wednesday; +3 skips the weekend.
        after = (await quote("2026-11-24T13:30:00Z"))["standard"]
        assert (after["dispatch_date"], after["delivery_from"], after["delivery_to"]) == (
            "2026-11-25",
            "2026-11-26",
            "2026-11-30",
        )
        # Friday after the cut-off: dispatched Monday.
        friday = (await quote("2026-11-27T16:00:00Z"))["standard"]
        assert (friday["dispatch_date"], friday["delivery_from"], friday["delivery_to"]) == (
            "2026-11-30",
            "2026-12-01",
            "2026-12-03",
        )
        # Christmas Eve after the cut-off: 25th/26th are holidays (26th a Saturday), then Sunday.
        xmas = (await quote("2026-12-24T16:00:00Z"))["express"]
        assert (xmas["dispatch_date"], xmas["delivery_from"], xmas["delivery_to"]) == (
            "2026-12-28",
            "2026-12-29",
            "2026-12-29",
        )
        # Easter 2027: Good Friday and Easter Monday are no dispatch days either.
        easter = (await quote("2027-03-25T15:30:00Z"))["standard"]
        assert (easter["dispatch_date"], easter["delivery_from"]) == ("2027-03-30", "2027-03-31")

        # Abroad: per-kg surcharge, no pickup to the US, cheapest first.
        us = await client.post(
            "/v1/shipping/quotes", json={"country": "us", "basket": BASKET, "ordered_at": "2026-11-24T10:00:00Z"}
        )
        assert [m["method_id"] for m in us.json()["methods"]] == ["standard", "express"]
        assert us.json()["methods"][0]["price"]["amount"] == 2495 + 2 * 300

        # Free shipping from the threshold.
        rich = {**BASKET, "subtotal": {"amount": 5000, "currency": "EUR"}}
        r = await client.post("/v1/shipping/quotes", json={"country": "DE", "basket": rich, "method_id": "standard"})
        assert [(m["method_id"], m["price"]["amount"], m["free_shipping"]) for m in r.json()["methods"]] == [
            ("standard", 0, True)
        ]


@pytest.mark.parametrize(
    ("change", "expected_in_detail"),
    [
        ({"country": "JP"}, "we do not ship to JP"),
        ({"country": "Germany"}, "country"),
        ({"method_id": "teleport"}, "unknown shipping method 'teleport'"),
        ({"country": "US", "method_id": "pickup_point"}, "does not deliver to US"),
        ({"basket": {**BASKET, "item_count": 0}}, "basket.item_count"),  # an empty basket: the schema says so
        ({"basket": {**BASKET, "subtotal": {"amount": 3000, "currency": "USD"}}}, "the basket is in USD"),
        ({"basket": {**BASKET, "subtotal": {"amount": 30.5, "currency": "EUR"}}}, "basket.subtotal.amount"),
        ({"basket": {**BASKET, "weight_grams": -1}}, "basket.weight_grams"),
        ({"postal_code": "1011"}, "postal code '1011' is not valid for DE"),
        ({"country": "NL", "postal_code": "ABCD"}, "not valid for NL"),
        ({"ordered_at": "2026-11-24T10:00:00"}, "ordered_at"),
        ({"ordered_at": "9999-12-31T23:59:59Z"}, "between 2000 and 2100"),  # was a 500 (date overflow)
        ({"basket": None}, "basket"),
    ],
)
async def test_bad_quote_requests_are_refused_with_reasons(
    shipping_settings: Callable[..., ShippingSettings], change: dict[str, Any], expected_in_detail: str
) -> None:
    # No lifespan needed: quotes are computed from the loaded table without I/O.
    app = create_app(shipping_settings())
    import httpx

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as client:
        r = await client.post("/v1/shipping/quotes", json={"country": "DE", "basket": BASKET, **change})
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert expected_in_detail in r.json()["detail"]


async def test_rate_table_is_published_at_start_and_its_revision_bumps_only_when_it_changes(
    shipping_settings: Callable[..., ShippingSettings], topic_reader: Any, tmp_path: Path
) -> None:
    settings = shipping_settings()
    async with topic_reader(topics.SHIPPING_METHODS) as reader:
        async with running_app(create_app(settings)) as client:
            (first,) = await reader.wait_for_events(ShippingMethodsPublished)
            assert first.revision == 1
            assert {m.method_id for m in first.methods} == {"standard", "express", "pickup_point"}
            assert first.cutoff_local_time == "14:00" and first.origin_timezone == "Europe/Berlin"
            assert (await client.get("/v1/shipping/methods")).json()["revision"] == 1

        # Restart with the same table: published again, same revision.
        async with running_app(create_app(settings)):
            events = await reader.wait_for_events(ShippingMethodsPublished, count=2)
            assert [e.revision for e in events] == [1, 1]

        # Restart with a changed table: a new revision.
        table = json.loads(
            (Path(__file__).parents[2] / "src/kasse_shipping/data/rate_table.json").read_text(encoding="utf-8")
        )
        table["methods"][0]["rates"][0]["price_bands"][0]["price"] = 599
        changed = tmp_path / "rates.json"
        changed.write_text(json.dumps(table), encoding="utf-8")
        async with running_app(create_app(settings.model_copy(update={"rate_table_path": changed}))) as client:
            events = await reader.wait_for_events(ShippingMethodsPublished, count=3)
            assert events[-1].revision == 2
            assert events[-1].methods[0].rates[0].price_bands[0].price == 599
            assert (await client.get("/v1/shipping/methods")).json()["revision"] == 2
