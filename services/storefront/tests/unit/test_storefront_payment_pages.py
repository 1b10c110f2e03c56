"""Checkout, payment and order pages against the services faked at the HTTP boundary: VAT per rate,
Stripe's Payment Element page and its return URL, paying again after a failed payment, invoices."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from kasse_storefront.main import create_app
from kasse_storefront.settings import StorefrontSettings

from ..fake_shop import ADDRESS, CLIENT_SECRET, ORDER_ID, ORDER_TOKEN, PDF, FakeShop

pytestmark = pytest.mark.unit

STAND_IN = "http://127.0.0.1:9/v3/"  # a Stripe.js stand-in's address (nothing is fetched in these tests)


@pytest.fixture
def services() -> FakeShop:
    return FakeShop()


async def shop_client(services: FakeShop, **settings: Any) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(
        StorefrontSettings(**{"profile": "development", **settings}), transport=httpx.MockTransport(services)
    )
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://shop.test") as c,
    ):
        yield c


@pytest.fixture
async def client(services: FakeShop) -> AsyncIterator[httpx.AsyncClient]:
    async for c in shop_client(services, stripe_publishable_key="pk_test_123", stripe_js_url=STAND_IN):
        yield c


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, "no CSRF token on the page"
    return found.group(1)


async def fill_cart(client: httpx.AsyncClient) -> str:
    csrf = csrf_of((await client.get("/p/prd_1")).text)
    for product_id in ("prd_1", "prd_2"):
        r = await client.post("/cart/items", data={"csrf": csrf, "product_id": product_id, "quantity": "1"})
        assert r.status_code == 303
    return csrf


async def place_order(client: httpx.AsyncClient) -> str:
    csrf = await fill_cart(client)
    form = {"csrf": csrf, "email": "erika@example.com", "shipping_method_id": "standard", **ADDRESS}
    r = await client.post("/checkout", data=form)
    assert r.status_code == 303 and r.headers["location"] == f"/orders/{ORDER_ID}/pay"
    return csrf  # the session's token, the same on every form


async def test_cart_and_checkout_show_the_vat_per_rate(client: httpx.AsyncClient) -> None:
    await fill_cart(client)
    for path in ("/cart", "/checkout"):
        html = (await client.get(path)).text
        assert 'inkl. 19\xa0% MwSt.</dt><dd data-vat-rate="1900">14,21\xa0€' in html, path
        assert 'inkl. 7\xa0% MwSt.</dt><dd data-vat-rate="700">1,31\xa0€' in html, path
        assert "Netto</dt><dd>93,48\xa0€" in html, path
        assert "inkl. MwSt., zzgl. Versand" in html, path
    await client.get("/lang/en")
    html = (await client.get("/cart")).text
    assert "incl. 19% VAT" in html and "incl. 5.5% VAT" not in html and "incl. VAT, plus shipping" in html


async def test_the_payment_element_page_has_the_client_secret_only_for_the_sessions_order(
    client: httpx.AsyncClient, services: FakeShop
) -> None:
    await place_order(client)
    r = await client.get(f"/orders/{ORDER_ID}/pay")
    assert r.status_code == 200
    html = r.text
    assert f'data-client-secret="{CLIENT_SECRET}"' in html and 'data-stripe-key="pk_test_123"' in html
    assert f'<script src="{STAND_IN}"></script>' in html and 'src="/static/payment.js?v=' in html
    # Card data is typed into Stripe's frame: the shop's page has no field for it, and no token of ours.
    assert not re.search(r"<input[^>]+name=\"(card|number|cvc|exp)", html)
    assert ORDER_TOKEN not in html
    csp = r.headers["content-security-policy"]
    assert "script-src 'self' http://127.0.0.1:9;" in csp and "frame-src http://127.0.0.1:9 " in csp
    # Only the payment page lets Stripe in; the order page never shows the client secret.
    order_page = await client.get(f"/orders/{ORDER_ID}")
    assert "127.0.0.1:9" not in order_page.headers["content-security-policy"]
    assert CLIENT_SECRET not in order_page.text and f"/orders/{ORDER_ID}/pay" in order_page.text

    # Another visitor (another session) guessing the order id gets nothing, and the cart is not even asked.
    asked = len(services.calls("GET", f"/v1/orders/{ORDER_ID}"))
    async for stranger in shop_client(services, stripe_publishable_key="pk_test_123", stripe_js_url=STAND_IN):
        refused = await stranger.get(f"/orders/{ORDER_ID}/pay")
        assert refused.status_code == 404 and CLIENT_SECRET not in refused.text
    assert len(services.calls("GET", f"/v1/orders/{ORDER_ID}")) == asked


async def test_without_a_publishable_key_no_stripe_on_the_page(services: FakeShop) -> None:
    async for client in shop_client(services):
        await place_order(client)
        r = await client.get(f"/orders/{ORDER_ID}/pay")
        assert r.status_code == 200
        assert "stripe" not in r.headers["content-security-policy"] and "payment-element" not in r.text
        assert CLIENT_SECRET not in r.text


def test_stripe_js_must_be_https_in_production() -> None:
    with pytest.raises(ValueError, match="STRIPE_JS_URL"):
        StorefrontSettings(profile="production", session_secret="s" * 40, stripe_js_url="http://127.0.0.1:9/v3/")
    assert StorefrontSettings(profile="production", session_secret="s" * 40).stripe_js_origin == "https://js.stripe.com"


@pytest.mark.parametrize(
    ("redirect_status", "message"),
    [
        ("succeeded", "Vielen Dank! Ihre Zahlung ist eingegangen"),
        ("processing", "Ihre Zahlung wird bearbeitet"),
        ("failed", "Die Zahlung ist nicht durchgegangen"),
        ("requires_payment_method", "Die Zahlung ist nicht durchgegangen"),
    ],
)
async def test_stripes_return_url_shows_the_outcome_and_drops_the_secret_from_the_address(
    client: httpx.AsyncClient, services: FakeShop, redirect_status: str, message: str
) -> None:
    await place_order(client)
    back = (
        f"/orders/{ORDER_ID}?payment_intent=pi_123&payment_intent_client_secret={CLIENT_SECRET}"
        f"&redirect_status={redirect_status}"
    )
    r = await client.get(back)
    assert r.status_code == 303 and r.headers["location"] == f"/orders/{ORDER_ID}"
    page = await client.get(f"/orders/{ORDER_ID}")
    assert message in page.text
    # The order's state is what the services say (the webhook decides), not the URL.
    assert 'data-status="stock_reserved"' in page.text
    confirming = redirect_status in ("succeeded", "processing")
    assert ("Wir warten auf die Bestätigung der Zahlung" in page.text) is confirming
    assert (f'href="/orders/{ORDER_ID}/pay"' in page.text) is not confirming  # failed: pay again, same order
    pay = await client.get(f"/orders/{ORDER_ID}/pay")
    assert pay.status_code == (303 if confirming else 200)
    # Once the webhook was applied the page shows it, and the waiting is over.
    services.order = services.new_order("paid")
    page = await client.get(f"/orders/{ORDER_ID}")
    assert 'data-status="paid"' in page.text and "Wir warten" not in page.text


async def test_the_return_url_of_an_order_not_in_this_session_is_not_found(client: httpx.AsyncClient) -> None:
    r = await client.get(f"/orders/{ORDER_ID}?redirect_status=succeeded")
    assert r.status_code == 404


async def test_pay_again_after_a_declined_payment_orders_the_same_items_with_checkout_filled_in(
    client: httpx.AsyncClient, services: FakeShop
) -> None:
    await place_order(client)
    services.order = services.new_order("cancelled", cancellation_reason="payment_failed")
    page = await client.get(f"/orders/{ORDER_ID}")
    assert "Erneut bezahlen" in page.text and "abgebucht wurde nichts" in page.text
    carts_before = len(services.carts)
    r = await client.post(f"/orders/{ORDER_ID}/again", data={"csrf": csrf_of(page.text)})
    assert r.status_code == 303 and r.headers["location"] == "/checkout"
    assert len(services.carts) == carts_before + 1
    new_cart = services.carts[f"cart_{len(services.carts)}"]
    assert [(line["product_id"], line["quantity"]) for line in new_cart] == [("prd_1", 1), ("prd_2", 1)]
    checkout = (await client.get("/checkout")).text
    assert 'value="erika@example.com"' in checkout and 'value="Hauptstraße 5"' in checkout
    assert 'value="standard" checked' in checkout
    assert "(2 Artikel)" in checkout
    # Placing it is a new order through the same button; the prefill is gone afterwards.
    form = {"csrf": csrf_of(checkout), "email": "erika@example.com", "shipping_method_id": "standard", **ADDRESS}
    assert (await client.post("/checkout", data=form)).status_code == 303


async def test_pay_again_with_an_item_sold_out_meanwhile_goes_to_the_cart_and_says_so(
    client: httpx.AsyncClient, services: FakeShop
) -> None:
    await place_order(client)
    services.order = services.new_order("cancelled", cancellation_reason="payment_timeout")
    services.sold_out = {"prd_2"}
    page = await client.get(f"/orders/{ORDER_ID}")
    r = await client.post(f"/orders/{ORDER_ID}/again", data={"csrf": csrf_of(page.text)})
    assert r.headers["location"] == "/cart"
    cart = (await client.get("/cart")).text
    assert "Einige Artikel konnten nicht erneut in den Warenkorb gelegt werden" in cart and "Chef Knife" in cart


@pytest.mark.parametrize("reason", ["fraud_suspected", "customer_request", "stock_rejected"])
async def test_no_pay_again_for_other_cancellations(client: httpx.AsyncClient, services: FakeShop, reason: str) -> None:
    csrf = await place_order(client)
    services.order = services.new_order("cancelled", cancellation_reason=reason)
    page = await client.get(f"/orders/{ORDER_ID}")
    assert "Erneut bezahlen" not in page.text
    carts_before = len(services.carts)
    r = await client.post(f"/orders/{ORDER_ID}/again", data={"csrf": csrf})
    assert r.headers["location"] == f"/orders/{ORDER_ID}" and len(services.carts) == carts_before


async def test_the_order_page_shows_vat_and_the_invoice_to_download(
    client: httpx.AsyncClient, services: FakeShop
) -> None:
    await place_order(client)
    services.order = services.new_order("paid")
    html = (await client.get(f"/orders/{ORDER_ID}")).text
    assert "Chef Knife, 89,00\xa0€" in html and "inkl. 19\xa0% MwSt." in html and "inkl. 7\xa0% MwSt." in html
    assert 'data-vat-rate="1900">14,21\xa0€' in html and "Netto</dt><dd>93,48\xa0€" in html
    link = f"/orders/{ORDER_ID}/documents/RE-2026-000007.pdf"
    assert f'href="{link}"' in html and "Rechnung RE-2026-000007" in html
    pdf = await client.get(link)
    assert pdf.status_code == 200 and pdf.content == PDF and pdf.headers["content-type"] == "application/pdf"
    asked = services.calls("GET", f"/v1/orders/{ORDER_ID}/invoices/RE-2026-000007.pdf")[-1]
    assert asked.headers["X-Order-Token"] == ORDER_TOKEN  # from the session, never from the page
    assert (await client.get(f"/orders/{ORDER_ID}/documents/RE-2026-999999.pdf")).status_code == 404
    assert (await client.get(f"/orders/{ORDER_ID}/documents/..%2Fsecret.pdf")).status_code == 404

    services.fail = {f"/v1/orders/{ORDER_ID}/invoices"}
    degraded = await client.get(f"/orders/{ORDER_ID}")
    assert degraded.status_code == 200 and "Die Rechnungen können gerade nicht angezeigt werden." in degraded.text
