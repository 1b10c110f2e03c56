"""The storefront against the services faked at the HTTP boundary (httpx.MockTransport)."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Callable
from typing import Any

import httpx
import itsdangerous
import pytest
from pydantic import ValidationError

from kasse_storefront.main import create_app
from kasse_storefront.settings import StorefrontSettings

pytestmark = pytest.mark.unit

PRODUCT = {
    "product_id": "prd_1",
    "sku": "KIT-1",
    "slug": "chef-knife",
    "name": "Chef Knife",
    "category": "kitchen",
    "image": {"url": "/images/products/chef-knife.svg", "alt": "A knife"},
    "images": [{"url": "/images/products/chef-knife.svg", "alt": "A knife"}],
    "price": {"amount": 8900, "currency": "EUR"},
    "compare_at_price": {"amount": 9900, "currency": "EUR"},
    "in_stock": True,
    "low_stock": False,
    "stock_available": 30,
    "rating": {"average": 4.5, "count": 2},
    "description": "Sharp.",
    "attributes": {"material": "steel"},
    "active": True,
}
QUOTE = {
    "methods": [
        {
            "method_id": "standard",
            "name": "Standard",
            "price": {"amount": 490, "currency": "EUR"},
            "free_shipping": False,
            "free_shipping_threshold": {"amount": 5000, "currency": "EUR"},
            "delivery_from": "2026-12-02",
            "delivery_to": "2026-12-03",
        }
    ]
}
REVIEWS = {
    "items": [
        {
            "review_id": "r1",
            "product_id": "prd_1",
            "rating": 5,
            "title": "Great",
            "text": "Very sharp",
            "author_name": "Erika",
            "verified_purchase": True,
            "created_at": "2026-11-30T10:00:00+00:00",
        }
    ],
    "total": 1,
    "rating": {"average": 5.0, "count": 1},
}

Handler = Callable[[httpx.Request], httpx.Response]


class FakeServices:
    """Answers like the services do; `fail` makes a path answer 500; every request is kept."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.fail: set[str] = set()
        self.answers: dict[str, Any] = {}  # path -> JSON a test adds

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        path = request.url.path
        if any(path.startswith(p) for p in self.fail):
            return httpx.Response(500, json={"title": "boom"})
        if path in self.answers:
            return httpx.Response(200, json=self.answers[path])
        if path == "/v1/categories":
            return httpx.Response(200, json={"items": [{"category": "kitchen", "products": 1}]})
        if path == "/v1/products":
            return httpx.Response(200, json={"items": [PRODUCT], "total": 1, "page": 1, "page_size": 12})
        if path.endswith("/reviews"):
            return httpx.Response(200, json=REVIEWS)
        if path.endswith("/recommendations"):
            return httpx.Response(200, json={"items": []})
        if path.startswith("/v1/products/"):
            return httpx.Response(200, json=PRODUCT)
        if path == "/v1/shipping/quotes":
            return httpx.Response(200, json=QUOTE)
        return httpx.Response(404, json={"title": "Not found", "detail": f"no fake for {path}"})


def settings(**overrides: Any) -> StorefrontSettings:
    return StorefrontSettings(**{"profile": "development", **overrides})


@pytest.fixture
def services() -> FakeServices:
    return FakeServices()


@pytest.fixture
async def client(services: FakeServices) -> Any:
    app = create_app(settings(), transport=httpx.MockTransport(services))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://shop.test") as c,
    ):
        yield c


async def test_product_page_shows_price_promise_reviews_in_german(client: httpx.AsyncClient) -> None:
    r = await client.get("/p/chef-knife", headers={"referer": "https://www.google.com/"})
    assert r.status_code == 200
    html = r.text
    assert '<html lang="de">' in html
    assert "89,00\xa0€" in html and "<s>99,00\xa0€</s>" in html
    assert "Geliefert bis Donnerstag, 3. Dezember" in html
    assert "Verifizierter Kauf" in html
    assert 'loading="lazy"' in html or 'fetchpriority="high"' in html
    assert 'width="640" height="640"' in html


async def test_the_shoppers_session_ip_and_channel_reach_the_catalog(
    client: httpx.AsyncClient, services: FakeServices
) -> None:
    await client.get("/p/chef-knife", headers={"referer": "https://www.google.com/"})
    view = next(r for r in services.requests if r.url.path == "/v1/products/chef-knife")
    assert view.url.params["channel"] == "search"
    assert view.headers["X-Session-Id"] and view.headers["X-Forwarded-For"] == "127.0.0.1"
    await client.get("/?utm_source=newsletter&utm_medium=email")
    home = [r for r in services.requests if r.url.path == "/v1/products"][-1]
    assert home.url.params["utm_source"] == "newsletter" and "channel" not in home.url.params
    assert home.headers["X-Session-Id"] == view.headers["X-Session-Id"]  # one session across pages


async def test_failing_blocks_degrade_not_the_page(client: httpx.AsyncClient, services: FakeServices) -> None:
    services.fail = {"/v1/products/prd_1/reviews", "/v1/products/prd_1/recommendations", "/v1/shipping"}
    r = await client.get("/p/chef-knife")
    assert r.status_code == 200
    assert "Chef Knife" in r.text and "89,00" in r.text
    assert "Die Bewertungen können gerade nicht angezeigt werden." in r.text
    assert "Geliefert bis" not in r.text


async def test_the_product_failing_is_a_clear_503_page(client: httpx.AsyncClient, services: FakeServices) -> None:
    services.fail = {"/v1/products/chef-knife"}
    r = await client.get("/p/chef-knife")
    assert r.status_code == 503
    assert "Gerade nicht erreichbar" in r.text


async def test_english_formats_money_dates_and_plurals(client: httpx.AsyncClient) -> None:
    r = await client.get("/lang/en?next=/p/chef-knife", follow_redirects=True)
    assert '<html lang="en">' in r.text
    assert "€89.00" in r.text and "Delivered by Thursday, 3 December" in r.text
    assert "(0 items)" in r.text
    r = await client.get("/lang/de?next=//evil.example")
    assert r.headers["location"] == "/"  # no open redirect


async def test_forms_without_the_csrf_token_are_refused(client: httpx.AsyncClient, services: FakeServices) -> None:
    await client.get("/p/chef-knife")
    r = await client.post("/cart/items", data={"product_id": "prd_1", "quantity": "1", "csrf": "forged"})
    assert r.status_code == 403
    assert not [q for q in services.requests if q.url.path.startswith("/v1/carts")]


async def test_security_headers_and_cookie(client: httpx.AsyncClient) -> None:
    r = await client.get("/")
    csp = r.headers["content-security-policy"]
    assert "script-src 'self';" in csp and "unsafe-inline" not in csp and "stripe" not in csp
    assert r.headers["x-content-type-options"] == "nosniff"
    assert "strict-transport-security" not in r.headers  # plain HTTP in development
    cookie = r.headers["set-cookie"]
    assert "httponly" in cookie.lower() and "samesite=lax" in cookie.lower()
    assert not re.search(r"<script>[^<]", r.text)  # no inline script


async def test_test_payments_are_off_unless_configured(client: httpx.AsyncClient) -> None:
    page = await client.get("/p/chef-knife")
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert csrf is not None
    r = await client.post("/orders/ord_1/test-payment", data={"csrf": csrf.group(1), "outcome": "succeed"})
    assert r.status_code == 404
    assert "TESTZAHLUNG" not in page.text


def test_production_refuses_to_start_without_a_session_secret_or_with_test_payments() -> None:
    with pytest.raises(ValidationError, match="SESSION_SECRET"):
        StorefrontSettings(profile="production")
    with pytest.raises(ValidationError, match="only in the development profile"):
        StorefrontSettings(profile="production", session_secret="s" * 40, test_payment_webhook_secret="whsec_x")
    ok = StorefrontSettings(profile="production", session_secret="s" * 40)
    assert ok.behind_tls and not ok.test_payments


async def test_production_sends_hsts_and_secure_cookies(services: FakeServices) -> None:
    app = create_app(
        StorefrontSettings(profile="production", session_secret="s" * 40), transport=httpx.MockTransport(services)
    )
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="https://shop.test") as c:
        r = await c.get("/")
    assert r.headers["strict-transport-security"].startswith("max-age=")
    assert "secure" in r.headers["set-cookie"].lower()


async def test_images_are_served_by_the_shop(client: httpx.AsyncClient) -> None:
    r = await client.get("/images/products/320/chef-knife.svg")
    assert r.status_code == 200 and r.headers["content-type"].startswith("image/svg+xml")
    assert "immutable" in r.headers["cache-control"]
    assert (await client.get("/images/products/999/chef-knife.svg")).status_code == 404


async def test_metrics_are_for_the_cluster_not_through_the_public_host(client: httpx.AsyncClient) -> None:
    await client.get("/")
    scraped = await client.get("/metrics")
    assert scraped.status_code == 200
    assert 'kasse_storefront_responses_total{route="/",status="2xx"}' in scraped.text
    assert (await client.get("/metrics", headers={"X-Forwarded-For": "203.0.113.9"})).status_code == 404


def session_cookie(values: dict[str, Any]) -> str:
    """The signed session cookie Starlette's SessionMiddleware would set for these values."""
    signer = itsdangerous.TimestampSigner(settings().effective_session_secret)
    return signer.sign(base64.b64encode(json.dumps(values).encode())).decode()


async def test_a_review_from_the_order_page_is_sent_with_the_sessions_order_token(
    client: httpx.AsyncClient, services: FakeServices
) -> None:
    """Issue 13: the shopper holds the order token in the session; the review goes with it, so the catalog
    can mark it a verified purchase. An order the session did not place sends no proof."""
    client.cookies.set(
        "kasse_session", session_cookie({"sid": "s1", "csrf": "c1", "orders": {"ord_1": "order-token-1"}})
    )
    page = await client.get("/p/prd_1", params={"order": "ord_1"})
    assert page.status_code == 200
    assert '<input type="hidden" name="order_id" value="ord_1">' in page.text
    assert "ord_1" in page.text and "order-token-1" not in page.text, "the token never reaches the page"
    assert 'name="order_id"' not in (await client.get("/p/prd_1", params={"order": "ord_other"})).text

    review = {"csrf": "c1", "rating": "5", "title": "Sharp", "text": "Cuts well.", "author_name": "Ana"}
    sent = await client.post("/p/prd_1/reviews", data={**review, "order_id": "ord_1"})
    assert sent.status_code == 303, sent.text
    (posted,) = [r for r in services.requests if r.method == "POST" and r.url.path == "/v1/products/prd_1/reviews"]
    assert posted.headers["X-Order-Token"] == "order-token-1"
    assert json.loads(posted.content)["order_id"] == "ord_1"

    services.requests.clear()
    await client.post("/p/prd_1/reviews", data={**review, "order_id": "ord_someone_elses"})
    (unproven,) = [r for r in services.requests if r.method == "POST"]
    assert "X-Order-Token" not in unproven.headers and "order_id" not in json.loads(unproven.content)


async def test_the_order_page_links_delivered_items_to_a_review_of_that_order(
    client: httpx.AsyncClient, services: FakeServices
) -> None:
    order = {
        "order_id": "ord_1",
        "status": "delivered",
        "email": "erika@example.com",
        "lines": [{"product_id": "prd_1", "name": "Chef Knife", "quantity": 1}],
        "total": {"amount": 8900, "currency": "EUR"},
        "refunded": {"amount": 0, "currency": "EUR"},
        "timeline": [],
    }
    tracking = {
        "carrier": "SimPost",
        "tracking_number": "T1",
        "delivered_at": "2026-12-01T10:00:00+00:00",
        "returns": [],
    }
    services.answers = {"/v1/orders/ord_1": order, "/v1/orders/ord_1/shipment": tracking}
    client.cookies.set("kasse_session", session_cookie({"sid": "s1", "csrf": "c1", "orders": {"ord_1": "tok"}}))
    page = await client.get("/orders/ord_1")
    assert page.status_code == 200, page.text
    assert 'href="/p/prd_1?order=ord_1#reviews"' in page.text


async def test_a_product_seen_before_is_viewed_by_id_with_its_blocks_from_the_cache(
    client: httpx.AsyncClient, services: FakeServices
) -> None:
    first = await client.get("/p/chef-knife")
    services.requests.clear()
    again = await client.get("/p/chef-knife")
    assert again.status_code == 200 and "Geliefert bis" in again.text and "Verifizierter Kauf" in again.text
    # Every view still reaches the catalog (it records ProductViewed), by id: its one-document lookup;
    # recommendations follow the session (its experiment variant). Reviews and the quote are kept.
    assert sorted(r.url.path for r in services.requests) == ["/v1/products/prd_1", "/v1/products/prd_1/recommendations"]
    assert first.text.count("Verifizierter Kauf") == again.text.count("Verifizierter Kauf")


async def test_a_failed_block_is_not_kept_it_comes_back_with_its_service(
    client: httpx.AsyncClient, services: FakeServices
) -> None:
    services.fail = {"/v1/products/prd_1/reviews"}
    assert "Die Bewertungen können gerade nicht angezeigt werden." in (await client.get("/p/chef-knife")).text
    services.fail = set()
    assert "Verifizierter Kauf" in (await client.get("/p/chef-knife")).text


async def test_searches_are_never_cached_the_home_listing_is(client: httpx.AsyncClient, services: FakeServices) -> None:
    for _ in range(2):
        await client.get("/")
        await client.get("/search?q=knife")
    listed = [r for r in services.requests if r.url.path == "/v1/products"]
    assert [r.url.params.get("q") for r in listed] == [None, "knife", "knife"]


async def test_style_inline_by_hash_static_fingerprinted_pages_compressed(client: httpx.AsyncClient) -> None:
    r = await client.get("/", headers={"accept-encoding": "gzip"})
    assert r.headers["content-encoding"] == "gzip"
    css = re.search(r"<style>(.*?)</style>", r.text, re.S)
    assert css
    digest = base64.b64encode(hashlib.sha256(css[1].encode()).digest()).decode()
    assert f"style-src 'self' 'sha256-{digest}';" in r.headers["content-security-policy"]
    script = re.search(r'<script src="(/static/shop\.js\?v=[0-9a-f]{12})" defer>', r.text)
    assert script
    assert (await client.get(script[1])).headers["cache-control"] == "public, max-age=31536000, immutable"
    assert (await client.get("/static/shop.js?v=old")).headers["cache-control"] == "public, max-age=300"
