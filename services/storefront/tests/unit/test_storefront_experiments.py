"""The storefront's part in the cart's coupon-offer and the catalog's recommendation-strategy
experiments (issue 17): it shows the coupon the cart offers the session, and asks the catalog for
recommendations with the shopper's session and no `kind`, so the catalog's strategy (the session's
variant) decides them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from kasse_storefront.main import create_app
from kasse_storefront.settings import StorefrontSettings

from ..fake_shop import PRODUCT, FakeShop

pytestmark = pytest.mark.unit


@pytest.fixture
def services() -> FakeShop:
    return FakeShop()


@pytest.fixture
async def client(services: FakeShop) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(StorefrontSettings(profile="development"), transport=httpx.MockTransport(services))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://shop.test") as c,
    ):
        yield c


def recommended(name: str, reason: str) -> dict[str, Any]:
    product = {**PRODUCT, "product_id": f"prd_{name}", "slug": name, "name": name.title()}
    return {"product": product, "reason": reason, "score": 1}


async def test_the_cart_page_shows_the_coupon_the_cart_offers_this_session(
    client: httpx.AsyncClient, services: FakeShop
) -> None:
    page = (await client.get("/p/prd_1")).text
    csrf = page.split('name="csrf" value="')[1].split('"')[0]
    assert (await client.post("/cart/items", data={"csrf": csrf, "product_id": "prd_1"})).status_code == 303
    assert "Ihr Gutschein für diese Bestellung" not in (await client.get("/cart")).text
    services.offered_coupon = "WELCOME10"
    html = (await client.get("/cart")).text
    assert "Ihr Gutschein für diese Bestellung: WELCOME10" in html
    assert 'name="code" maxlength="40" autocomplete="off" value="WELCOME10"' in html  # ready to apply


async def test_recommendations_are_asked_with_the_session_and_no_kind_and_split_by_reason(
    client: httpx.AsyncClient, services: FakeShop
) -> None:
    services.recommendations = [
        recommended("oil", "bought_together"),
        recommended("apron", "viewed_together"),
        recommended("pan", "popular_in_category"),
    ]
    html = (await client.get("/p/prd_1")).text
    (view,) = services.calls("GET", "/v1/products/prd_1")
    (asked,) = services.calls("GET", "/v1/products/prd_1/recommendations")
    assert "kind" not in asked.url.params  # the catalog's strategy for the session decides
    assert asked.headers["x-session-id"] == view.headers["x-session-id"]
    bought = html.split('id="bought"')[1].split("</section>")[0]
    viewed = html.split('id="viewed"')[1].split("</section>")[0]
    assert "Oil" in bought and "Apron" not in bought and "Pan" not in bought
    assert "Apron" in viewed and "Pan" in viewed and "Oil" not in viewed
