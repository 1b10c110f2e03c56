"""Discovery on the real stack: search, filters, sorting and pagination through the HTTP API, and the
ProductSearched / ProductViewed events on Kafka with the session and the channel."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from kasse_catalog.main import create_app
from kasse_catalog.settings import CatalogSettings
from kasse_contracts import topics
from kasse_contracts.events import ProductSearched, ProductViewed
from kasse_testkit import running_app, wait_until
from kasse_testkit.identity import TestIdentityProvider

pytestmark = pytest.mark.integration

ADMIN = {"Authorization": "Bearer integration-admin"}


def item(sku: str, name: str, category: str, price: int, stock: int, description: str = "") -> dict[str, Any]:
    return {
        "sku": sku,
        "name": name,
        "description": description,
        "category": category,
        "price": {"amount": price, "currency": "EUR"},
        "stock_on_hand": stock,
        "images": [{"url": f"https://img.example/{sku}.jpg", "alt": name}],
    }


PRODUCTS = [
    item("AUD-NC", "Wireless Noise-Cancelling Headphones", "audio", 24900, 5, "Over-ear, 35 hours of battery."),
    item("AUD-BUDS", "Wireless Earbuds", "audio", 14900, 0, "Tiny earbuds with a charging case."),
    item("AUD-SPEAKER", "Bluetooth Speaker", "audio", 6900, 3, "A wireless speaker for the garden."),
    item("KIT-KNIFE", "Chef's Knife", "kitchen", 8900, 9, "Damascus steel."),
    item("KIT-BOARD", "Cutting Board", "kitchen", 6900, 4, "End-grain oak."),
    item("AUD-STAND", "Headphone Stand", "audio", 2900, 12, "Holds wireless headphones on your desk."),
]


IDP = TestIdentityProvider()


@pytest.fixture
async def client(settings_for: Any) -> AsyncIterator[httpx.AsyncClient]:
    settings = settings_for(
        CatalogSettings, admin_token="integration-admin", identity_public_key=IDP.public_pem, identity_issuer=IDP.issuer
    )
    async with running_app(create_app(settings)) as c:
        r = await c.post("/v1/admin/products/import", json={"products": PRODUCTS}, headers=ADMIN)
        assert r.status_code == 200, r.text
        assert len(r.json()["created"]) == len(PRODUCTS)
        yield c


async def skus(client: httpx.AsyncClient, **params: Any) -> list[str]:
    r = await client.get("/v1/products", params=params)
    assert r.status_code == 200, r.text
    return [p["sku"] for p in r.json()["items"]]


async def test_search_filters_sorting_and_pagination_return_the_right_products_in_order(
    client: httpx.AsyncClient,
) -> None:
    # Free text: every word must match name or description, case-insensitive; the name ranks first.
    assert await skus(client, q="wireless headphones") == ["AUD-NC", "AUD-STAND"]
    assert await skus(client, q="headphone") == ["AUD-STAND", "AUD-NC"]
    assert await skus(client, q="headphones") == ["AUD-STAND", "AUD-NC"]  # the plural finds the singular
    assert await skus(client, q="WIRELESS") == ["AUD-BUDS", "AUD-NC", "AUD-SPEAKER", "AUD-STAND"]
    assert await skus(client, q="knife.*") == ["KIT-KNIFE"]  # the shopper's text is not a pattern
    assert await skus(client, q="chef's") == ["KIT-KNIFE"]  # an apostrophe inside a word is part of it
    # Punctuation only has no words: a plain browse of everything, not an error.
    assert len(await skus(client, q="(")) == len(PRODUCTS)
    assert (await client.get("/v1/products", params={"q": "[a-(\\"})).status_code == 200

    categories = (await client.get("/v1/categories")).json()["items"]
    assert categories == [{"category": "audio", "products": 4}, {"category": "kitchen", "products": 2}]

    # Filters.
    assert await skus(client, category="audio", sort="price_asc") == ["AUD-STAND", "AUD-SPEAKER", "AUD-BUDS", "AUD-NC"]
    assert await skus(client, category="audio", in_stock="true", sort="price_asc") == [
        "AUD-STAND",
        "AUD-SPEAKER",
        "AUD-NC",
    ]
    # Equal prices are ordered by sku: stable.
    assert await skus(client, min_price=6900, max_price=8900, sort="price_asc") == [
        "AUD-SPEAKER",
        "KIT-BOARD",
        "KIT-KNIFE",
    ]
    assert (await skus(client, sort="price_desc"))[:2] == ["AUD-NC", "AUD-BUDS"]
    assert await skus(client, sort="newest") == [p["sku"] for p in reversed(PRODUCTS)]

    # Pagination: pages of 4 put together are the whole ordered list, no gaps, no repeats.
    everything = await skus(client, sort="price_asc", page_size=100)
    page1 = await client.get("/v1/products", params={"sort": "price_asc", "page_size": 4})
    page2 = await client.get("/v1/products", params={"sort": "price_asc", "page_size": 4, "page": 2})
    assert page1.json()["total"] == page2.json()["total"] == 6
    assert [p["sku"] for p in page1.json()["items"] + page2.json()["items"]] == everything

    # Rating: reviews update it, then sorting and the min_rating filter follow.
    for sku, rating in (("KIT-KNIFE", 5), ("KIT-KNIFE", 4), ("KIT-BOARD", 3)):
        slug = next(
            p["slug"] for p in (await client.get("/v1/products", params={"q": sku.split("-")[1]})).json()["items"]
        )
        review = {"rating": rating, "title": "Review", "text": "Used it for a month.", "author_name": "Kim"}
        r = await client.post(f"/v1/products/{slug}/reviews", json=review)
        assert r.status_code == 201, r.text
    assert (await skus(client, sort="rating"))[:2] == ["KIT-KNIFE", "KIT-BOARD"]
    assert await skus(client, min_rating=4) == ["KIT-KNIFE"]

    # Popularity is learned from ProductViewed events consumed back from Kafka.
    speaker = (await client.get("/v1/products", params={"q": "speaker"})).json()["items"][0]["product_id"]
    stand = (await client.get("/v1/products", params={"q": "stand"})).json()["items"][0]["product_id"]
    for product_id in (speaker, speaker, stand):
        assert (await client.get(f"/v1/products/{product_id}")).status_code == 200

    async def popular_first() -> bool:
        return (await skus(client, sort="popularity"))[:2] == ["AUD-SPEAKER", "AUD-STAND"]

    await wait_until(popular_first, timeout=20, message="views counted into popularity")

    # Bad input is a 422 naming the field, never a 500.
    bad = await client.get("/v1/products", params={"min_price": 500, "max_price": 100})
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "min_price"
    bad = await client.get("/v1/products", params={"sort": "cheapest", "page_size": 1000})
    assert bad.status_code == 422
    assert {e["field"] for e in bad.json()["errors"]} == {"query.sort", "query.page_size"}
    assert bad.headers["content-type"].startswith("application/problem+json")


async def test_searches_and_views_publish_events_with_session_and_channel(
    client: httpx.AsyncClient, topic_reader: Any
) -> None:
    async with topic_reader(topics.STOREFRONT) as reader:
        r = await client.get(
            "/v1/products",
            params={
                "q": "wireless",
                "category": "audio",
                "in_stock": "true",
                "utm_source": "newsletter",
                "utm_medium": "email",
            },
            headers={"X-Session-Id": "sess-search-1", **IDP.bearer("cust-1")},  # a proven customer
        )
        assert r.status_code == 200 and r.headers["X-Session-Id"] == "sess-search-1"
        shown = [p["product_id"] for p in r.json()["items"]]
        product_id = shown[0]

        viewed = await client.get(
            f"/v1/products/{product_id}",
            params={"utm_source": "instagram", "utm_medium": "social", "utm_campaign": "spring-drop"},
            headers={"X-Session-Id": "sess-search-1", "Referer": "https://instagram.com/p/1"},
        )
        assert viewed.status_code == 200
        # No session sent: one is minted and returned, and the event carries it.
        anonymous = await client.get(f"/v1/products/{product_id}", params={"channel": "recommendation"})
        minted = anonymous.headers["X-Session-Id"]
        assert len(minted) == 32

        (searched,) = await reader.wait_for_events(ProductSearched)
        views = await reader.wait_for_events(ProductViewed, count=2)

    assert searched.session_id == "sess-search-1" and searched.customer_id == "cust-1"
    assert searched.channel == "email" and searched.query == "wireless"
    assert searched.filters.category == "audio" and searched.filters.in_stock is True
    assert searched.result_count == len(shown) and searched.product_ids == shown
    by_session = {v.session_id: v for v in views}
    social = by_session["sess-search-1"]
    assert social.channel == "campaign"  # a utm_campaign makes it a campaign visit
    assert social.campaign == "spring-drop" and social.referrer == "https://instagram.com/p/1"
    assert social.product_id == product_id and social.price.currency == "EUR"
    assert by_session[minted].channel == "recommendation"
    records = [r for r in reader.records if r.event_type == ProductViewed.event_type]
    assert {r.key for r in records} == {b"sess-search-1", minted.encode()}  # keyed by session
