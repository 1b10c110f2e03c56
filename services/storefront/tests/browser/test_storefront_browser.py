"""A shopper in a real browser: search → product → cart → coupon → checkout → test payment →
delivered → return; a declined payment; out of stock at checkout; keyboard only, in English, on a
phone. axe-core checks every page type on the way (0 serious or critical violations)."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, BrowserContext, Page, expect

from kasse_common.experiments import assign_variant
from kasse_testkit import wait_until
from kasse_testkit.e2e.shop import ADMIN, Shop

from .conftest import COUPON, axe

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

ADDRESS = {"name": "Erika Mustermann", "line1": "Hauptstraße 5", "postal_code": "10115", "city": "Berlin"}
A11Y: dict[str, list[dict[str, Any]]] = {}


@pytest.fixture
async def context(browser: Browser) -> AsyncIterator[BrowserContext]:
    ctx = await browser.new_context(locale="de-DE")
    errors: list[str] = []
    ctx.on("weberror", lambda e: errors.append(str(e.error)))
    yield ctx
    await ctx.close()
    assert not errors, f"page errors: {errors}"


async def check_a11y(page: Page, page_type: str) -> None:
    found = await axe(page)
    A11Y[page_type] = found
    assert found == [], f"axe on {page_type} ({page.url}): {found}"


async def wait_for_text(page: Page, text: str, timeout: float = 60) -> None:
    """Reload until the page shows the text (the order moves on in the background)."""

    async def shown() -> bool:
        await page.reload()
        return text in await page.content()

    await wait_until(shown, timeout=timeout, interval=0.5, message=lambda: f"{text!r} on {page.url}")


async def fill_checkout(page: Page, email: str = "erika@example.com") -> None:
    await page.get_by_label("E-Mail").fill(email)
    await page.get_by_label("Vor- und Nachname").fill(ADDRESS["name"])
    await page.get_by_label("Straße und Hausnummer").fill(ADDRESS["line1"])
    await page.get_by_label("PLZ").fill(ADDRESS["postal_code"])
    await page.get_by_label("Ort").fill(ADDRESS["city"])


async def pay(page: Page, outcome: str) -> str:
    await expect(page).to_have_url(re.compile(r"/orders/ord_\w+/pay$"))
    order_id = page.url.rsplit("/", 2)[-2]
    button = page.get_by_role("button", name=outcome)
    await wait_until(
        lambda: _visible_after_reload(page, button), timeout=60, interval=0.5, message="the test payment buttons"
    )
    await expect(page.get_by_text("TESTZAHLUNG (nur Entwicklung)")).to_be_visible()
    await button.click()
    await expect(page).to_have_url(re.compile(rf"/orders/{order_id}$"))
    return order_id


async def _visible_after_reload(page: Page, locator: Any) -> bool:
    if await locator.count():
        return True
    await page.reload()
    return bool(await locator.count())


async def test_search_product_cart_coupon_checkout_pay_delivered_return(
    storefront: Shop, context: BrowserContext
) -> None:
    page = await context.new_page()
    base = storefront.url("storefront")
    await page.goto(base + "/?utm_source=newsletter&utm_medium=email")
    await expect(page.get_by_role("heading", name="Bestseller")).to_be_visible()
    await check_a11y(page, "home")

    await page.get_by_role("searchbox", name="Produkte suchen").fill("knife")
    await page.get_by_role("button", name="Suchen").click()
    await expect(page.get_by_role("heading", name=re.compile("Ergebnisse für"))).to_be_visible()
    await page.get_by_label("Nur lieferbare").check()
    await page.get_by_label("Sortieren nach").select_option("price_desc")
    await page.get_by_role("button", name="Anwenden").click()
    await expect(page).to_have_url(re.compile(r"in_stock=1.*sort=price_desc"))
    await check_a11y(page, "search")

    await page.get_by_role("link", name="Damascus Chef's Knife 20 cm").first.click()
    await expect(page.get_by_role("heading", level=1)).to_have_text("Damascus Chef's Knife 20 cm")
    await expect(page.locator(".promise")).to_contain_text(re.compile(r"Geliefert bis \w+, \d+\. \w+"))
    await check_a11y(page, "product")
    await page.get_by_label("Menge").select_option("2")
    await page.get_by_role("button", name="In den Warenkorb").click()

    await expect(page).to_have_url(base + "/cart")
    await expect(page.get_by_text("In den Warenkorb gelegt.")).to_be_visible()
    await page.get_by_label("Gutscheincode").fill("GIBTSNICHT")
    await page.get_by_role("button", name="Anwenden").click()
    await expect(page.get_by_text("Diesen Gutscheincode gibt es nicht.")).to_be_visible()
    await page.get_by_label("Gutscheincode").fill(COUPON)
    await page.get_by_role("button", name="Anwenden").click()
    await expect(page.get_by_text(f"Gutschein {COUPON} eingelöst.")).to_be_visible()
    await expect(page.get_by_text("Ihre Bestellung wird kostenlos versandt.")).to_be_visible()
    await expect(page.locator(".summary dt", has_text="inkl. 19\xa0% MwSt.")).to_be_visible()
    await expect(page.get_by_text("inkl. MwSt., zzgl. Versand")).to_be_visible()
    await check_a11y(page, "cart")

    await page.get_by_role("link", name="Zur Kasse").click()
    await fill_checkout(page, email="kein-at-zeichen")
    await page.get_by_role("button", name="zahlungspflichtig bestellen").click()
    await expect(page.locator("#err-email")).to_have_text("Bitte eine gültige E-Mail-Adresse eingeben.")
    await expect(page.get_by_label("E-Mail")).to_have_attribute("aria-invalid", "true")
    await check_a11y(page, "checkout")
    await page.get_by_label("E-Mail").fill("erika@example.com")
    await page.get_by_role("button", name="zahlungspflichtig bestellen").click()

    await expect(page.get_by_role("heading", name="Zahlung", exact=True)).to_be_visible()
    await check_a11y(page, "payment")
    await pay(page, "Testzahlung: erfolgreich")
    await wait_for_text(page, 'data-status="delivered"')
    await expect(page.locator(".summary dt", has_text="inkl. 19\xa0% MwSt.")).to_be_visible()
    # The invoice payment issued on capture, downloaded through the shop (the order token stays in the cookie).
    await wait_for_text(page, "Rechnung RE-")
    invoice = page.get_by_role("link", name=re.compile(r"Rechnung RE-"))
    pdf = await page.request.get(base + str(await invoice.get_attribute("href")))
    assert pdf.status == 200 and (await pdf.body()).startswith(b"%PDF-")
    await check_a11y(page, "order")

    # The visit shows in metrics' funnel for its channel (it landed with utm_medium=email): every step
    # from the product view to the delivery, once (no other session of this shop came by e-mail).
    async def email_funnel() -> dict[str, Any] | None:
        async with httpx.AsyncClient(timeout=10) as client:
            r = await client.get(storefront.url("metrics") + "/v1/kpis/funnel", params={"channel": "email"})
        found: dict[str, Any] = r.json() if r.status_code == 200 else {}
        return found if found.get("steps") and all(s["sessions"] == 1 for s in found["steps"]) else None

    funnel = await wait_until(email_funnel, timeout=60, interval=0.5, message="the visit in the email funnel")
    assert [s["step"] for s in funnel["steps"]][-1] == "delivered"

    await page.get_by_label("Wie viele von Damascus Chef's Knife 20 cm zurücksenden?").select_option("1")
    await page.get_by_label("Grund").select_option("damaged")
    await page.get_by_role("button", name="Rücksendung anmelden").click()
    await expect(page.get_by_text("Rücksendung angemeldet.")).to_be_visible()
    await expect(page.get_by_text(re.compile(r"Rücksendung ret_\w+: angemeldet"))).to_be_visible()

    # Writing a review after delivery. (The verified-purchase badge needs a verified customer token
    # since issue 13; an anonymous session's review is shown without it.)
    await page.get_by_role("link", name="Bewertung schreiben").first.click()
    # The order's link opens the review form already (clicking its summary would close it again).
    await expect(page.locator("details:has(> summary)", has_text="Bewertung schreiben")).to_have_attribute("open", "")
    await page.get_by_label("5 Sterne").check()
    await page.get_by_label("Titel").fill("Scharf")
    await page.get_by_label("Ihre Bewertung").fill("Schneidet wie am ersten Tag.")
    await page.get_by_label("Ihr Name").fill("Erika")
    await page.get_by_role("button", name="Bewertung senden").click()
    await expect(page.get_by_text("Danke für Ihre Bewertung.")).to_be_visible()
    await expect(page.locator(".reviews li", has_text="Scharf")).to_contain_text("Schneidet wie am ersten Tag.")


async def add_to_cart(page: Page, base: str, slug: str) -> None:
    await page.goto(f"{base}/p/{slug}")
    await page.get_by_role("button", name="In den Warenkorb").click()
    await expect(page).to_have_url(base + "/cart")


async def test_declined_payment_cancels_the_order(storefront: Shop, context: BrowserContext) -> None:
    page = await context.new_page()
    base = storefront.url("storefront")
    await add_to_cart(page, base, "cast-iron-skillet-26-cm")
    await page.goto(base + "/checkout")
    await fill_checkout(page)
    await page.get_by_role("button", name="zahlungspflichtig bestellen").click()
    declined = await pay(page, "Testzahlung: ablehnen")
    await wait_for_text(page, 'data-status="cancelled"')
    await expect(page.get_by_text("Diese Bestellung wurde storniert. (Zahlung fehlgeschlagen)")).to_be_visible()
    await check_a11y(page, "order cancelled, pay again")

    # Pay again: the same items in a new order, the checkout filled in from the declined one.
    await page.get_by_role("button", name="Dieselben Artikel erneut bestellen").click()
    await expect(page).to_have_url(base + "/checkout")
    await expect(page.get_by_label("E-Mail")).to_have_value("erika@example.com")
    await expect(page.get_by_label("Straße und Hausnummer")).to_have_value(ADDRESS["line1"])
    await page.get_by_role("button", name="zahlungspflichtig bestellen").click()
    second = await pay(page, "Testzahlung: erfolgreich")
    assert second != declined
    paid = re.compile(r'data-status="(paid|shipped|delivered)"')

    async def is_paid() -> bool:
        await page.reload()
        return bool(paid.search(await page.content()))

    await wait_until(is_paid, timeout=60, interval=0.5, message="the second order paid")
    await expect(page.locator("#items-h + ul li", has_text="Cast Iron Skillet 26 cm")).to_be_visible()


async def test_out_of_stock_at_checkout_is_told_to_the_shopper(storefront: Shop, context: BrowserContext) -> None:
    page = await context.new_page()
    base = storefront.url("storefront")
    async with httpx.AsyncClient(timeout=30) as client:
        admin = {"Authorization": f"Bearer {ADMIN['catalog']}"}
        product = {
            "sku": "LAST-ONE-1",
            "name": "The Last One",
            "category": "home",
            "price": {"amount": 1500, "currency": "EUR"},
            "stock_on_hand": 1,
        }
        r = await client.post(storefront.url("catalog") + "/v1/admin/products", json=product, headers=admin)
        assert r.status_code == 201, r.text
        product_id, slug = r.json()["product_id"], r.json()["slug"]

        async def known_to_cart() -> bool:
            await page.goto(f"{base}/p/{slug}")
            await page.get_by_role("button", name="In den Warenkorb").click()
            await page.wait_for_url(base + "/cart")
            return "In den Warenkorb gelegt." in await page.content()

        await wait_until(known_to_cart, timeout=60, interval=0.5, message="the cart to know the new product")
        # Someone else buys the last one while this shopper is in the cart.
        r = await client.post(
            storefront.url("catalog") + f"/v1/admin/products/{product_id}/stock", json={"on_hand": 0}, headers=admin
        )
        assert r.status_code == 200, r.text
    await page.goto(base + "/checkout")
    await fill_checkout(page)
    await page.get_by_role("button", name="zahlungspflichtig bestellen").click()
    # Either the cart already knows (checkout refuses) or the catalog refuses the reservation.
    refused_at_checkout = page.get_by_text("Einige Artikel sind in dieser Menge nicht mehr vorrätig.")
    if await refused_at_checkout.count():
        await expect(page).to_have_url(base + "/checkout")
        await check_a11y(page, "checkout refused")
    else:
        await wait_for_text(page, "nicht mehr vorrätig")
        await expect(page.get_by_text("Diese Bestellung wurde storniert. (nicht mehr vorrätig)")).to_be_visible()


async def tab_to(page: Page, locator: Any, limit: int = 80) -> None:
    """Press Tab until the element has the focus, as a keyboard user would."""
    handle = await locator.element_handle()
    for _ in range(limit):
        await page.keyboard.press("Tab")
        if await page.evaluate("(el) => document.activeElement === el", handle):
            return
    raise AssertionError(f"{locator} never got the focus by Tab")


async def test_keyboard_only_checkout_in_english_on_a_phone(storefront: Shop, browser: Browser) -> None:
    context = await browser.new_context(
        locale="en-GB", viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True
    )
    try:
        page = await context.new_page()
        base = storefront.url("storefront")
        await page.goto(base + "/p/damascus-chef-s-knife-20-cm")
        await tab_to(page, page.get_by_role("link", name="English"))
        await page.keyboard.press("Enter")
        await expect(page.locator("html")).to_have_attribute("lang", "en")
        await expect(page.locator(".promise")).to_contain_text(re.compile(r"Delivered by \w+, \d+ \w+"))
        await expect(page.locator(".buy .price strong")).to_have_text("€89.00")
        await check_a11y(page, "product (en, mobile)")
        await tab_to(page, page.get_by_role("button", name="Add to cart"))
        await page.keyboard.press("Enter")
        await expect(page).to_have_url(base + "/cart")
        await expect(page.get_by_text("(1 item)")).to_be_visible()
        await tab_to(page, page.get_by_role("link", name="Go to checkout"))
        await page.keyboard.press("Enter")
        await expect(page.get_by_role("heading", name="Checkout")).to_be_visible()
        for label, value in [
            ("E-mail", "kim@example.com"),
            ("Full name", "Kim Example"),
            ("Street and number", "Hauptstraße 7"),
            ("Postal code", "10115"),
            ("City", "Berlin"),
        ]:
            await tab_to(page, page.get_by_label(label, exact=False).first)
            await page.keyboard.type(value)
        await tab_to(page, page.get_by_role("button", name="Place order and pay"))
        await page.keyboard.press("Enter")
        await expect(page.get_by_role("heading", name="Payment")).to_be_visible()
        succeed = page.get_by_role("button", name="Test payment: succeed")
        await wait_until(lambda: _visible_after_reload(page, succeed), timeout=60, interval=0.5, message="pay button")
        await tab_to(page, succeed)
        await page.keyboard.press("Enter")
        await expect(page).to_have_url(re.compile(r"/orders/ord_\w+$"))
        await wait_for_text(page, 'data-status="delivered"')
        await expect(page.get_by_text("Status: Delivered")).to_be_visible()
    finally:
        await context.close()


WEIGHTS = [("one_step", 1), ("two_step", 1)]


async def session_id(context: BrowserContext) -> str:
    """The session id in the shop's signed cookie (Starlette: base64 JSON, then the signature)."""
    cookie = next(c["value"] for c in await context.cookies() if c["name"] == "kasse_session")
    payload = cookie.split(".")[0]
    return str(json.loads(base64.b64decode(payload + "=" * (-len(payload) % 4)))["sid"])


async def test_a_checkout_layout_experiment_shows_the_sessions_variant_and_counts_one_exposure(
    storefront: Shop, context: BrowserContext
) -> None:
    """Issue 17 on the real stack: metrics defines and starts an experiment on the checkout layout; the
    storefront learns it from Kafka, shows this session the two-step checkout and records one exposure,
    however often the page is shown; metrics counts that session, and its payment, for the variant.
    (Last in this module: the other journeys expect the one-step checkout.)"""
    metrics, admin = storefront.url("metrics"), {"Authorization": f"Bearer {ADMIN['metrics']}"}
    experiment_id = "checkout-layout-e2e"
    definition = {
        "experiment_id": experiment_id,
        "name": "Two-step checkout",
        "hypothesis": "A review page before the order button converts better",
        "parameter": "checkout_layout",
        "variants": [{"name": name, "weight": 1, "value": name} for name in ("one_step", "two_step")],
        "baseline": 0.3,
    }
    async with httpx.AsyncClient(timeout=30) as client:
        r = await client.post(metrics + "/v1/admin/experiments", json=definition, headers=admin)
        assert r.status_code == 201, r.text
        r = await client.post(metrics + f"/v1/admin/experiments/{experiment_id}/start", headers=admin)
        assert r.status_code == 200, r.text
    try:
        page = await context.new_page()
        base = storefront.url("storefront")
        # A session the kit's rule puts into the two-step variant (half of them are; only the checkout
        # exposes a session, so the sessions passed over here are not counted).
        for _ in range(30):
            await context.clear_cookies()
            await page.goto(base + "/")  # the home page asks the catalog for the session: the id is set
            if assign_variant(experiment_id, await session_id(context), WEIGHTS) == "two_step":
                break
        else:
            raise AssertionError("no session in the two-step variant in 30 tries")
        await add_to_cart(page, base, "cast-iron-skillet-26-cm")
        details = page.get_by_role("button", name="Weiter zur Übersicht")

        async def two_step_shown() -> bool:
            await page.goto(base + "/checkout")
            return bool(await details.count())

        await wait_until(two_step_shown, timeout=60, interval=0.5, message="the storefront to run the experiment")
        await page.reload()  # shown again: still one exposure
        await fill_checkout(page, email="lena@example.com")
        await details.click()
        await expect(page).to_have_url(base + "/checkout/review")
        await expect(page.get_by_text(ADDRESS["line1"])).to_be_visible()
        await check_a11y(page, "checkout review (two-step variant)")
        await page.get_by_role("button", name="zahlungspflichtig bestellen").click()
        await pay(page, "Testzahlung: erfolgreich")

        async def counted() -> dict[str, Any] | None:
            async with httpx.AsyncClient(timeout=10) as client:
                r = await client.get(metrics + f"/v1/experiments/{experiment_id}")
            rows = {v["variant"]: v for v in r.json().get("variants", [])} if r.status_code == 200 else {}
            row = rows.get("two_step")
            paid = {f["step"]: f["sessions"] for f in row["funnel"]}.get("paid") if row else None
            return row if row and row["sessions"] == 1 and paid == 1 else None

        row = await wait_until(counted, timeout=60, interval=0.5, message="one exposed, paying session in metrics")
        assert row["value"] == "two_step"
    finally:
        async with httpx.AsyncClient(timeout=30) as client:
            await client.post(metrics + f"/v1/admin/experiments/{experiment_id}/stop", headers=admin)
