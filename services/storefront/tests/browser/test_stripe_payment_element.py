"""Stripe's Payment Element in a real browser, offline: a stand-in for js.stripe.com served on 127.0.0.1
(the same calls the page makes of Stripe.js — Stripe(key), elements({clientSecret}), create("payment")
.mount(), confirmPayment({elements, confirmParams: {return_url}}) — with the card field in a frame of
the stand-in's origin, as Stripe's is). The storefront runs in-process with its services faked at the
HTTP boundary; the proof is that the card number reaches only the stand-in, never the shop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from playwright.async_api import Browser, expect

from kasse_storefront.main import create_app
from kasse_storefront.settings import StorefrontSettings
from kasse_testkit import served

from ..fake_shop import ADDRESS, CLIENT_SECRET, ORDER_ID, FakeShop
from .conftest import axe

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

DECLINED_CARD = "4000 0000 0000 0002"  # Stripe's test card numbers
GOOD_CARD = "4242 4242 4242 4242"

# What the page loads as Stripe.js: the API surface payment.js uses, talking to the frame it mounts.
STRIPE_JS = """
(function () {
  const ORIGIN = new URL(document.currentScript.src).origin;
  window.Stripe = function (publishableKey) {
    return {
      elements(options) {
        let frame = null;
        return {
          clientSecret: options.clientSecret,
          frame: () => frame,
          create(kind) {
            return {
              mount(selector) {
                frame = document.createElement("iframe");
                frame.src = ORIGIN + "/elements?kind=" + kind + "&key=" + encodeURIComponent(publishableKey);
                frame.title = "Secure payment input frame";
                frame.style.width = "100%";
                document.querySelector(selector).appendChild(frame);
              },
            };
          },
        };
      },
      confirmPayment({ elements, confirmParams }) {
        return new Promise((resolve) => {
          window.addEventListener("message", function answer(event) {
            if (event.origin !== ORIGIN) return;
            window.removeEventListener("message", answer);
            const r = event.data;
            if (r.error) { resolve({ error: { message: r.error } }); return; }
            const back = new URL(confirmParams.return_url);
            back.searchParams.set("payment_intent", r.id);
            back.searchParams.set("payment_intent_client_secret", elements.clientSecret);
            back.searchParams.set("redirect_status", r.status);
            window.location.href = back.href;
          });
          elements.frame().contentWindow.postMessage({ type: "confirm", clientSecret: elements.clientSecret }, ORIGIN);
        });
      },
    };
  };
})();
"""

# The Payment Element's frame: the card field lives here, on the stand-in's origin, and is sent here.
ELEMENT_FRAME = """<!doctype html><html lang="de"><head><meta charset="utf-8"><title>Karte</title></head><body>
<label for="card">Kartennummer</label> <input id="card" autocomplete="cc-number" inputmode="numeric">
<script src="/element.js"></script></body></html>"""
ELEMENT_JS = """
window.addEventListener("message", async (event) => {
  if (!event.data || event.data.type !== "confirm") return;
  const r = await fetch("/v1/payment_intents/confirm", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ client_secret: event.data.clientSecret, card: document.getElementById("card").value }),
  });
  event.source.postMessage(await r.json(), event.origin);
});
"""


@dataclass
class StandIn:
    """js.stripe.com and Stripe's API as far as the Payment Element goes; keeps what it was sent."""

    confirmations: list[dict[str, Any]] = field(default_factory=list)
    succeeded: asyncio.Event = field(default_factory=asyncio.Event)

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.get("/v3/")
        async def stripe_js() -> Response:
            return Response(STRIPE_JS, media_type="text/javascript")

        @app.get("/elements")
        async def element() -> HTMLResponse:
            return HTMLResponse(ELEMENT_FRAME)

        @app.get("/element.js")
        async def element_js() -> Response:
            return Response(ELEMENT_JS, media_type="text/javascript")

        @app.post("/v1/payment_intents/confirm")
        async def confirm(request: Request) -> JSONResponse:
            body = await request.json()
            self.confirmations.append(body)
            if body["client_secret"] != CLIENT_SECRET:
                return JSONResponse({"error": "No such payment_intent."})
            if body["card"].replace(" ", "") != GOOD_CARD.replace(" ", ""):
                return JSONResponse({"error": "Ihre Karte wurde abgelehnt."})
            self.succeeded.set()
            return JSONResponse({"id": "pi_123", "status": "succeeded"})

        return app


@pytest.fixture
async def stand_in() -> AsyncIterator[tuple[StandIn, str]]:
    fake = StandIn()
    async with served(fake.app()) as url:
        yield fake, url


@pytest.fixture
async def services() -> FakeShop:
    return FakeShop()


@pytest.fixture
async def shop_url(stand_in: tuple[StandIn, str], services: FakeShop) -> AsyncIterator[str]:
    settings = StorefrontSettings(
        profile="development", stripe_publishable_key="pk_test_standin", stripe_js_url=stand_in[1] + "/v3/"
    )
    async with served(create_app(settings, transport=httpx.MockTransport(services))) as url:
        yield url


async def test_the_payment_element_confirms_in_the_browser_and_the_card_never_reaches_the_shop(
    browser: Browser, stand_in: tuple[StandIn, str], services: FakeShop, shop_url: str
) -> None:
    fake_stripe, stripe_url = stand_in
    context = await browser.new_context(locale="de-DE")
    errors: list[str] = []
    context.on("weberror", lambda e: errors.append(str(e.error)))
    to_the_shop: list[str] = []  # every request the browser sent to the storefront, with its body

    def record(request: Any) -> None:
        if request.url.startswith(shop_url):
            to_the_shop.append(f"{request.method} {request.url} {request.post_data or ''}")

    context.on("request", record)
    try:
        page = await context.new_page()
        await page.goto(shop_url + "/p/prd_1")
        await page.get_by_role("button", name="In den Warenkorb").click()
        await page.goto(shop_url + "/checkout")
        await page.get_by_label("E-Mail").fill("erika@example.com")
        await page.get_by_label("Vor- und Nachname").fill(ADDRESS["name"])
        await page.get_by_label("Straße und Hausnummer").fill(ADDRESS["line1"])
        await page.get_by_label("PLZ").fill(ADDRESS["postal_code"])
        await page.get_by_label("Ort").fill(ADDRESS["city"])
        await page.get_by_role("button", name="zahlungspflichtig bestellen").click()
        await expect(page).to_have_url(f"{shop_url}/orders/{ORDER_ID}/pay")

        card = page.frame_locator("#payment-element iframe").get_by_label("Kartennummer")
        await expect(card).to_be_visible()
        assert await axe(page) == []
        await card.fill(DECLINED_CARD)
        await page.get_by_role("button", name="Jetzt bezahlen").click()
        await expect(page.locator("#payment-message")).to_have_text("Ihre Karte wurde abgelehnt.")
        await expect(page).to_have_url(f"{shop_url}/orders/{ORDER_ID}/pay")  # try another card, same order

        await card.fill(GOOD_CARD)
        await page.get_by_role("button", name="Jetzt bezahlen").click()
        # Stripe's redirect to the return URL; the shop shows the outcome and drops the secret from the URL.
        await expect(page).to_have_url(f"{shop_url}/orders/{ORDER_ID}")
        await expect(page.get_by_text("Vielen Dank! Ihre Zahlung ist eingegangen")).to_be_visible()
        await expect(page.get_by_text("Wir warten auf die Bestätigung der Zahlung")).to_be_visible()
        await expect(page.get_by_role("link", name="Jetzt bezahlen")).to_have_count(0)
        # Stripe's webhook reaches payment; the page, polling, shows the order paid.
        services.order = services.new_order("paid")
        await expect(page.locator('[data-status="paid"]')).to_be_visible(timeout=15_000)
    finally:
        await context.close()

    assert not errors, f"page errors: {errors}"
    assert fake_stripe.succeeded.is_set()
    cards = [c["card"] for c in fake_stripe.confirmations]
    assert cards == [DECLINED_CARD, GOOD_CARD]
    assert all(c["client_secret"] == CLIENT_SECRET for c in fake_stripe.confirmations)
    # Card data never touched Kasse: no request to the shop carried any part of either number.
    sent = "\n".join(to_the_shop)
    assert to_the_shop and stripe_url not in sent
    for number in (DECLINED_CARD, GOOD_CARD):
        for part in (number, number.replace(" ", ""), number.replace(" ", "+"), number.split()[-1]):
            assert part not in sent, f"{part!r} was sent to the shop"
