"""The shop's pages and forms. Every form posts with a CSRF token and answers with a redirect (303) or
the same page with its messages; everything works without JavaScript."""

from __future__ import annotations

import hashlib
import json
import logging
import re
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, Response

from kasse_common.stripe_signing import intent_object, sign, stripe_event
from kasse_contracts.events import ExperimentParameter
from kasse_storefront.adapters.backends import BackendRefused, BackendUnavailable
from kasse_storefront.adapters.experiments import Layouts
from kasse_storefront.adapters.i18n import LOCALES
from kasse_storefront.application.storefront import SearchQuery, Storefront
from kasse_storefront.domain.images import KEY, WIDTHS, placeholder_svg
from kasse_storefront.domain.shop import can_cancel, can_return, timeline_steps
from kasse_storefront.entrypoints.web import Renderer, Visit, checked_form, redirect, safe_next
from kasse_storefront.settings import StorefrontSettings

log = logging.getLogger(__name__)

SORTS = ("relevance", "popularity", "price_asc", "price_desc", "rating", "newest")
COUNTRIES = ("DE", "AT", "NL", "FR", "BE", "DK", "PL", "CH")
RETURN_REASONS = ("changed_mind", "damaged", "wrong_item", "not_as_described", "other")
# Orders are private (and reached only with the session's token). The cart and checkout are not kept
# from crawlers: without a shopper's cookie they are an empty cart, harmless to index, and a robots.txt
# block would count against them in search engines' (and Lighthouse's) checks.
ROBOTS = "User-agent: *\nDisallow: /orders/\n"
FIELD_MESSAGES = {
    "email": "Enter a valid e-mail address.",
    "name": "Enter the recipient's name.",
    "line1": "Enter the street and number.",
    "postal_code": "Enter the postal code.",
    "city": "Enter the city.",
    "country": "Choose a country we deliver to.",
    "shipping_method_id": "Choose a delivery method.",
}
ADDRESS_FIELDS = ("name", "line1", "line2", "postal_code", "city", "country")
AWAITING_PAYMENT = ("placed", "stock_reserved")
# The checkout layouts an experiment on `checkout_layout` chooses between (any other value: one step).
ONE_STEP, TWO_STEP = "one_step", "two_step"
# The home page templates an experiment on `storefront_template` chooses between (any other value:
# standard — campaigns first, then top sellers).
STANDARD_HOME, TOP_SELLERS_FIRST = "standard", "top_sellers_first"
# A cancelled order the shopper may simply order again: the payment failed or came too late (not fraud).
PAY_AGAIN_REASONS = ("payment_failed", "payment_timeout")
DOCUMENT_NUMBER = re.compile(r"[A-Z0-9][A-Z0-9-]{2,40}")  # RE-2026-000001, GS-…
# Stripe's redirect_status on the return URL → the message shown once.
RETURN_MESSAGES = {
    "succeeded": ("ok", "Thank you! Your payment was received; the order shows as paid as soon as it is confirmed."),
    "processing": ("ok", "Your payment is being processed; the order shows as paid as soon as it is confirmed."),
    "failed": ("error", "The payment did not go through. Please try again with another payment method."),
}


def _cents(value: str | None) -> int | None:
    """A price typed in euros ("12", "12,50") as minor units; None when empty or not a number."""
    if not value or not value.strip():
        return None
    try:
        euros = float(value.strip().replace(",", "."))
    except ValueError:
        return None
    return round(euros * 100) if 0 <= euros <= 10_000_000 else None


def _quantity(value: str | None) -> int:
    try:
        q = int(value or "1")
    except ValueError:
        raise HTTPException(422, "quantity must be a whole number") from None
    if not 1 <= q <= 99:
        raise HTTPException(422, "quantity must be between 1 and 99")
    return q


def visit(request: Request) -> Visit:
    return Visit(request)


# Module level: FastAPI resolves the (postponed) annotations of routes in this module's globals.
V = Annotated[Visit, Depends(visit)]
Form = Annotated[dict[str, str], Depends(checked_form)]


def build_router(settings: StorefrontSettings, shop: Storefront, render: Renderer, layouts: Layouts) -> APIRouter:
    router = APIRouter()

    async def page(v: Visit, template: str, status: int = 200, **context: Any) -> HTMLResponse:
        return render.page(v, template, status, categories=await shop.categories(), **context)

    async def unavailable(v: Visit, exc: BackendUnavailable) -> HTMLResponse:
        log.warning("page unavailable", extra={"reason": str(exc)})
        return await page(v, "error.html", 503, reason="unavailable")

    # -- browsing -------------------------------------------------------------------------------
    @router.get("/", response_class=HTMLResponse)
    async def home(v: V) -> HTMLResponse:
        try:
            data = await shop.home(v.shopper, v.channel())
        except BackendUnavailable as exc:
            return await unavailable(v, exc)
        template = await layouts.value(ExperimentParameter.STOREFRONT_TEMPLATE, v.session_id, STANDARD_HOME)
        return await page(v, "home.html", top_sellers_first=template == TOP_SELLERS_FIRST, **data)

    async def _search(v: Visit, query: SearchQuery, title: str | None = None) -> HTMLResponse:
        try:
            found = await shop.search(v.shopper, query, v.channel())
        except BackendUnavailable as exc:
            return await unavailable(v, exc)
        except BackendRefused as exc:
            return await page(
                v, "search.html", 422, query=query, found=None, problem=exc.detail, sorts=SORTS, title=title
            )
        return await page(v, "search.html", query=query, found=found, problem=None, sorts=SORTS, title=title)

    @router.get("/search", response_class=HTMLResponse)
    async def search(
        v: V,
        q: Annotated[str, Query(max_length=200)] = "",
        category: Annotated[str, Query(max_length=50)] = "",
        min_price: Annotated[str, Query(max_length=20)] = "",
        max_price: Annotated[str, Query(max_length=20)] = "",
        in_stock: Annotated[str, Query(max_length=5)] = "",
        min_rating: Annotated[str, Query(max_length=3)] = "",
        sort: Annotated[str, Query(max_length=20)] = "relevance",
        page: Annotated[int, Query(ge=1, le=10_000)] = 1,
    ) -> HTMLResponse:
        rating = float(min_rating) if min_rating in ("1", "2", "3", "4", "5") else None
        query = SearchQuery(
            q=q.strip(),
            category=category or None,
            min_price=_cents(min_price),
            max_price=_cents(max_price),
            in_stock=True if in_stock else None,
            min_rating=rating,
            sort=sort if sort in SORTS else "relevance",
            page=page,
        )
        return await _search(v, query)

    @router.get("/c/{category}", response_class=HTMLResponse)
    async def category_page(
        v: V,
        category: str,
        sort: Annotated[str, Query(max_length=20)] = "popularity",
        page: Annotated[int, Query(ge=1, le=10_000)] = 1,
    ) -> HTMLResponse:
        query = SearchQuery(category=category, sort=sort if sort in SORTS else "popularity", page=page)
        return await _search(v, query, title=category)

    @router.get("/p/{ref}", response_class=HTMLResponse)
    async def product(
        v: V,
        ref: str,
        order: Annotated[str | None, Query(max_length=200, description="review this order's item")] = None,
    ) -> HTMLResponse:
        # From the order page's "Write a review": the session holds that order's token, so the review
        # is sent with it and the catalog marks it a verified purchase.
        review_order = v.known_order(order)
        try:
            data = await shop.product(v.shopper, ref, v.channel(), v.request.headers.get("referer"))
        except BackendUnavailable as exc:
            return await unavailable(v, exc)
        except BackendRefused as exc:
            if exc.status in (404, 422):
                return await page(v, "error.html", 404, reason="not_found")
            raise
        return await page(
            v, "product.html", **data, review_errors=None, review_form={}, review_order=review_order and review_order[0]
        )

    @router.post("/p/{ref}/reviews", response_class=HTMLResponse)
    async def write_review(v: V, ref: str, form: Form) -> Response:
        try:
            rating = int(form.get("rating", "0"))
        except ValueError:
            rating = 0
        review = {
            "rating": rating,
            "title": form.get("title", "").strip(),
            "text": form.get("text", "").strip(),
            "author_name": form.get("author_name", "").strip(),
        }
        order = v.known_order(form.get("order_id"))  # only an order this session placed: it holds the token
        errors: dict[str, str] = {}
        if not 1 <= rating <= 5:
            errors["rating"] = "Choose 1 to 5 stars."
        for name in ("title", "text", "author_name"):
            if not review[name]:
                errors[name] = "Please fill in this field."
        if not errors:
            try:
                await shop.submit_review(v.shopper, ref, review, order)
            except BackendUnavailable as exc:
                return await unavailable(v, exc)
            except BackendRefused as exc:
                errors = exc.field_errors or {"text": exc.detail}
            else:
                v.flash("ok", "Thank you for your review.")
                return redirect(f"/p/{ref}#reviews")
        try:
            data = await shop.product(v.shopper, ref, v.channel(), None)
        except BackendUnavailable as exc:
            return await unavailable(v, exc)
        return await page(
            v,
            "product.html",
            422,
            **data,
            review_errors=errors,
            review_form=review,
            review_order=order and order[0],
        )

    # -- cart -----------------------------------------------------------------------------------
    async def ensure_cart(v: Visit) -> tuple[str, str]:
        if v.cart is None:
            cart_id, token = await shop.create_cart(v.shopper)
            v.set_cart(cart_id, token)
        assert v.cart is not None
        return v.cart

    def counted(v: Visit, cart: Any) -> None:
        if isinstance(cart, dict) and "item_count" in cart:
            v.session["n"] = cart["item_count"]

    @router.get("/cart", response_class=HTMLResponse)
    async def cart_page(v: V) -> HTMLResponse:
        if v.cart is None:
            return await page(v, "cart.html", cart=None, options=None, free_shipping=None)
        try:
            data = await shop.cart_page(v.shopper, *v.cart)
        except BackendUnavailable as exc:
            return await unavailable(v, exc)
        except BackendRefused:
            v.forget_cart()  # gone or ordered: start a new one
            return await page(v, "cart.html", cart=None, options=None, free_shipping=None)
        if data["cart"]["status"] != "open":
            v.forget_cart()
            return await page(v, "cart.html", cart=None, options=None, free_shipping=None)
        counted(v, data["cart"])
        return await page(v, "cart.html", **data, coupon_refusal=v.session.pop("coupon_refusal", None))

    async def cart_change(v: Visit, change: Any, ok: str | None = None) -> Response:
        try:
            cart = await change
        except BackendUnavailable as exc:
            return await unavailable(v, exc)
        except BackendRefused as exc:
            v.flash("error", exc.detail or "That did not work.")
            return redirect("/cart")
        counted(v, cart)
        if ok:
            v.flash("ok", ok)
        return redirect("/cart")

    @router.post("/cart/items")
    async def add_to_cart(v: V, form: Form) -> Response:
        product_id = form.get("product_id", "")
        if not product_id:
            raise HTTPException(422, "product_id is required")
        try:
            cart_id, token = await ensure_cart(v)
        except BackendUnavailable as exc:
            return await unavailable(v, exc)
        return await cart_change(
            v,
            shop.add_item(v.shopper, cart_id, token, product_id, _quantity(form.get("quantity"))),
            "Added to your cart.",
        )

    @router.post("/cart/items/{product_id}")
    async def set_quantity(v: V, product_id: str, form: Form) -> Response:
        if v.cart is None:
            return redirect("/cart")
        return await cart_change(v, shop.set_quantity(v.shopper, *v.cart, product_id, _quantity(form.get("quantity"))))

    @router.post("/cart/items/{product_id}/remove")
    async def remove(v: V, product_id: str, form: Form) -> Response:
        if v.cart is None:
            return redirect("/cart")
        return await cart_change(v, shop.remove_item(v.shopper, *v.cart, product_id), "Removed from your cart.")

    @router.post("/cart/coupon")
    async def coupon(v: V, form: Form) -> Response:
        if v.cart is None:
            return redirect("/cart")
        code = form.get("code", "").strip()
        if not code:
            v.flash("error", "Enter a coupon code.")
            return redirect("/cart")
        try:
            cart = await shop.apply_coupon(v.shopper, *v.cart, code)
        except BackendUnavailable as exc:
            return await unavailable(v, exc)
        except BackendRefused as exc:
            v.session["coupon_refusal"] = [exc.problem.get("reason") or "refused", exc.detail]
            return redirect("/cart")
        counted(v, cart)
        v.flash("ok", "Coupon applied.")
        return redirect("/cart")

    @router.post("/cart/coupon/remove")
    async def remove_coupon(v: V, form: Form) -> Response:
        if v.cart is None:
            return redirect("/cart")
        return await cart_change(v, shop.remove_coupon(v.shopper, *v.cart), "Coupon removed.")

    # -- checkout -------------------------------------------------------------------------------
    async def open_cart(v: Visit) -> dict[str, Any] | Response:
        """The cart page's data when the session has an open cart with lines; else the answer to give:
        back to the cart (none, gone, ordered or empty) or the unavailable page."""
        if v.cart is None:
            return redirect("/cart")
        try:
            data = await shop.cart_page(v.shopper, *v.cart)
        except BackendUnavailable as exc:
            return await unavailable(v, exc)
        except BackendRefused:
            v.forget_cart()
            return redirect("/cart")
        if not data["cart"]["lines"] or data["cart"]["status"] != "open":
            return redirect("/cart")
        return data

    async def checkout_page(
        v: Visit,
        status: int = 200,
        form: dict[str, str] | None = None,
        errors: dict[str, str] | None = None,
        problem: str | None = None,
    ) -> Response:
        data = await open_cart(v)
        if isinstance(data, Response):
            return data
        cart = data["cart"]
        filled = form or dict(v.session.get("prefill") or {}) or {"country": settings.default_country}
        if cart.get("shipping"):
            filled.setdefault("shipping_method_id", cart["shipping"]["method_id"])
        if data["options"] and "shipping_method_id" not in filled:
            filled["shipping_method_id"] = data["options"][0]["method_id"]
        return await page(
            v,
            "checkout.html",
            status,
            **data,
            form=filled,
            errors=errors or {},
            problem=problem,
            countries=COUNTRIES,
            two_step=await two_step(v),
        )

    @router.get("/checkout", response_class=HTMLResponse)
    async def checkout(v: V) -> Response:
        return await checkout_page(v)

    @router.post("/checkout", response_class=HTMLResponse)
    async def place(v: V, form: Form) -> Response:
        if v.cart is None:
            return redirect("/cart")
        address = {name: form.get(name, "").strip() for name in ADDRESS_FIELDS}
        if not address["line2"]:
            address.pop("line2")
        body = {
            "email": form.get("email", "").strip(),
            "shipping_address": address,
            "shipping_method_id": form.get("shipping_method_id", ""),
        }
        # Two-step layout: this form only gives the details; the order is placed on the review page.
        details_only = form.get("step") == "details" and await two_step(v)
        try:
            await shop.begin_checkout(v.shopper, *v.cart, body)
            if details_only:
                v.session["checkout_form"] = {"email": body["email"], **address}
                return redirect("/checkout/review")
            placed = await shop.place_order(v.shopper, *v.cart, v.session.get("order_key") or v.csrf)
        except BackendUnavailable as exc:
            return await unavailable(v, exc)
        except BackendRefused as exc:
            return await refused_checkout(v, exc, form)
        return placed_order(v, placed)

    async def refused_checkout(v: Visit, exc: BackendRefused, form: dict[str, str] | None) -> Response:
        # The cart's 422 names the fields; the shopper reads what to do about each, in their language.
        errors = {
            field: FIELD_MESSAGES.get(field, "Please check this field.")
            for field in (name.rsplit(".", 1)[-1] for name in exc.field_errors)
        }
        problem = "out_of_stock" if "available" in exc.problem else exc.detail
        return await checkout_page(v, 422, form=form, errors=errors, problem=None if errors else problem)

    def placed_order(v: Visit, placed: dict[str, Any]) -> Response:
        v.remember_order(placed["order_id"], placed["order_token"])
        v.forget_cart()
        v.session.pop("prefill", None)
        v.session.pop("checkout_form", None)
        return redirect(f"/orders/{placed['order_id']}/pay")

    async def two_step(v: Visit) -> bool:
        """The checkout layout of this session's variant (experiment on `checkout_layout`; one step else)."""
        return await layouts.value(ExperimentParameter.CHECKOUT_LAYOUT, v.session_id, ONE_STEP) == TWO_STEP

    @router.get("/checkout/review", response_class=HTMLResponse)
    async def review(v: V) -> Response:
        """Step two of the two-step layout: everything at a glance, and the button that places the order."""
        data = await open_cart(v)
        if isinstance(data, Response):
            return data
        if not data["cart"]["checkout_started"]:
            return redirect("/checkout")  # the details step comes first
        return await page(v, "checkout_review.html", **data, details=v.session.get("checkout_form") or {})

    @router.post("/checkout/place", response_class=HTMLResponse)
    async def place_reviewed(v: V, form: Form) -> Response:
        if v.cart is None:
            return redirect("/cart")
        try:
            placed = await shop.place_order(v.shopper, *v.cart, v.session.get("order_key") or v.csrf)
        except BackendUnavailable as exc:
            return await unavailable(v, exc)
        except BackendRefused as exc:
            return await refused_checkout(v, exc, dict(v.session.get("checkout_form") or {}) or None)
        return placed_order(v, placed)

    # -- payment --------------------------------------------------------------------------------
    @router.get("/orders/{order_id}/pay", response_class=HTMLResponse)
    async def pay(v: V, order_id: str) -> Response:
        token = v.order_token(order_id)
        try:
            order = await shop.order(v.shopper, order_id, token)
        except BackendUnavailable as exc:
            return await unavailable(v, exc)
        if order["status"] not in AWAITING_PAYMENT or v.session.get("confirming") == order_id:
            return redirect(f"/orders/{order_id}")  # paid, cancelled, or paid in the browser and confirming
        stripe_key = settings.stripe_publishable_key
        if stripe_key and order.get("client_secret"):
            v.request.state.stripe = True  # the CSP lets Stripe.js in on this response only
        return await page(
            v,
            "pay.html",
            order=order,
            ready=bool(order.get("client_secret")),
            stripe_key=stripe_key,
            stripe_js=settings.stripe_js_url,
        )

    @router.post("/orders/{order_id}/test-payment")
    async def test_payment(v: V, order_id: str, form: Form) -> Response:
        secret, internal = settings.test_payment_webhook_secret, settings.test_payment_internal_token
        if not settings.test_payments or secret is None or internal is None:
            raise HTTPException(404, "Not found")
        token = v.order_token(order_id)
        try:
            order = await shop.order(v.shopper, order_id, token)
            intent = await shop.payment_intent(order_id, internal.get_secret_value())
        except BackendUnavailable as exc:
            return await unavailable(v, exc)
        except BackendRefused:
            intent = None
        if intent is None:
            v.flash("error", "The payment is not ready yet; try again in a moment.")
            return redirect(f"/orders/{order_id}/pay")
        amount = order["total"]["amount"]
        if form.get("outcome") == "decline":
            error = {"code": "card_declined", "decline_code": "insufficient_funds", "message": "Insufficient funds."}
            event = stripe_event(
                "payment_intent.payment_failed",
                intent_object(intent, order_id, amount, "requires_payment_method", last_payment_error=error),
            )
        else:
            event = stripe_event("payment_intent.succeeded", intent_object(intent, order_id, amount, "succeeded"))
        try:
            await shop.deliver_test_webhook(event, sign(event, secret.get_secret_value()))
        except (BackendUnavailable, BackendRefused) as exc:
            log.warning("test payment failed", extra={"reason": str(exc)})
            v.flash("error", "The test payment could not be delivered.")
            return redirect(f"/orders/{order_id}/pay")
        return redirect(f"/orders/{order_id}")

    # -- orders ---------------------------------------------------------------------------------
    @router.get("/orders/{order_id}", response_class=HTMLResponse)
    async def order_page(v: V, order_id: str, redirect_status: Annotated[str, Query(max_length=40)] = "") -> Response:
        token = v.order_token(order_id)
        if redirect_status:
            # Stripe's return URL (…?payment_intent=…&payment_intent_client_secret=…&redirect_status=…).
            # Only a message: the order's state comes from the services (the webhook), never from this
            # URL, and the redirect drops the client secret from the address bar and history.
            if redirect_status in ("succeeded", "processing"):
                v.session["confirming"] = order_id
            v.flash(*RETURN_MESSAGES.get(redirect_status, RETURN_MESSAGES["failed"]))
            return redirect(f"/orders/{order_id}")
        try:
            data = await shop.order_page(v.shopper, order_id, token)
        except BackendUnavailable as exc:
            return await unavailable(v, exc)
        order, tracking = data["order"], data["tracking"]
        awaiting = order["status"] in AWAITING_PAYMENT
        if not awaiting and v.session.get("confirming") == order_id:
            v.session.pop("confirming")
        confirming = awaiting and v.session.get("confirming") == order_id
        if confirming:
            # Paid in the browser: no second "Pay now" while the webhook is on its way.
            order = data["order"] = {**order, "client_secret": None}
        deadline = (
            datetime.fromisoformat(tracking["return_deadline"])
            if tracking and tracking.get("return_deadline")
            else None
        )
        delivered = bool(tracking and tracking.get("delivered_at"))
        returned: dict[str, int] = {}
        for case in (tracking or {}).get("returns", []):
            for line in case["lines"]:
                returned[line["product_id"]] = returned.get(line["product_id"], 0) + line["quantity"]
        return await page(
            v,
            "order.html",
            **data,
            steps=timeline_steps(order["status"]),
            cancellable=can_cancel(order["status"]),
            returnable=can_return(delivered, deadline, datetime.now(UTC)) and order["status"] != "cancelled",
            delivered=delivered,
            deadline=deadline,
            returned=returned,
            reasons=RETURN_REASONS,
            awaiting_payment=confirming or (awaiting and not order.get("client_secret")),
            pay_again=order["status"] == "cancelled" and order.get("cancellation_reason") in PAY_AGAIN_REASONS,
        )

    @router.post("/orders/{order_id}/again")
    async def order_again(v: V, order_id: str, form: Form) -> Response:
        """Pay again after a failed payment: payment treats a decline as final (the cart cancels the order
        and releases its stock), so a new attempt is a new order of the same items, checkout filled in."""
        token = v.order_token(order_id)
        try:
            order = await shop.order(v.shopper, order_id, token)
            if order["status"] != "cancelled" or order.get("cancellation_reason") not in PAY_AGAIN_REASONS:
                return redirect(f"/orders/{order_id}")
            cart_id, cart_token, missing = await shop.order_again(v.shopper, order)
        except BackendUnavailable as exc:
            return await unavailable(v, exc)
        v.set_cart(cart_id, cart_token)
        address = order.get("shipping_address") or {}
        prefill = {name: str(address[name]) for name in ADDRESS_FIELDS if address.get(name)}
        prefill["email"] = order.get("email", "")
        if order.get("shipping"):
            prefill["shipping_method_id"] = order["shipping"]["method_id"]
        v.session["prefill"] = prefill
        v.session["n"] = sum(line["quantity"] for line in order["lines"] if str(line.get("name")) not in missing)
        if missing:
            v.flash("error", "Some items could not be added again: they are not available in this quantity.")
            return redirect("/cart")
        return redirect("/checkout")

    @router.get("/orders/{order_id}/documents/{number}.pdf")
    async def document(v: V, order_id: str, number: str) -> Response:
        """An invoice or credit note, fetched with the order token from the session (never in the page)."""
        if not DOCUMENT_NUMBER.fullmatch(number):
            raise HTTPException(404, "no such document")
        token = v.order_token(order_id)
        try:
            pdf = await shop.document_pdf(v.shopper, order_id, token, number)
        except BackendUnavailable as exc:
            return await unavailable(v, exc)
        except BackendRefused:
            raise HTTPException(404, "no such document") from None
        return Response(
            pdf,
            media_type="application/pdf",
            headers={"Content-Disposition": f'attachment; filename="{number}.pdf"', "Cache-Control": "no-store"},
        )

    @router.post("/orders/{order_id}/cancel")
    async def cancel(v: V, order_id: str, form: Form) -> Response:
        token = v.order_token(order_id)
        try:
            await shop.cancel_order(v.shopper, order_id, token)
        except BackendUnavailable as exc:
            return await unavailable(v, exc)
        except BackendRefused as exc:
            v.flash("error", exc.detail or "The order can no longer be cancelled.")
            return redirect(f"/orders/{order_id}")
        v.flash("ok", "Your order was cancelled.")
        return redirect(f"/orders/{order_id}")

    @router.post("/orders/{order_id}/returns")
    async def request_return(v: V, order_id: str, form: Form) -> Response:
        token = v.order_token(order_id)
        try:
            order = await shop.order(v.shopper, order_id, token)
        except BackendUnavailable as exc:
            return await unavailable(v, exc)
        lines = []
        for line in order["lines"]:
            raw = form.get(f"qty_{line['product_id']}", "0")
            qty = int(raw) if raw.isdigit() else 0
            if qty > 0:
                lines.append({"product_id": line["product_id"], "quantity": min(qty, line["quantity"])})
        reason = form.get("reason", "")
        if not lines or reason not in RETURN_REASONS:
            v.flash("error", "Choose at least one item and a reason.")
            return redirect(f"/orders/{order_id}#return")
        body = {"email": order["email"], "lines": lines, "reason": reason, "comment": form.get("comment", "")[:2000]}
        try:
            # The same form sent twice (a double click, a reload) asks for the same return once.
            key = hashlib.sha256(json.dumps([order_id, lines, reason], sort_keys=True).encode()).hexdigest()[:40]
            case = await shop.request_return(v.shopper, order_id, body, f"ret-{key}")
        except BackendUnavailable as exc:
            return await unavailable(v, exc)
        except BackendRefused as exc:
            v.flash("error", exc.detail or "The return was refused.")
            return redirect(f"/orders/{order_id}#return")
        log.info("return requested", extra={"order_id": order_id, "return_id": case.get("return_id")})
        v.flash("ok", "Return requested.")
        return redirect(f"/orders/{order_id}")

    # -- language, images, health ----------------------------------------------------------------
    @router.get("/lang/{lang}")
    async def switch_language(v: V, lang: str, next: Annotated[str, Query(max_length=2000)] = "/") -> Response:
        if lang not in LOCALES:
            raise HTTPException(404, "unknown language")
        v.session["lang"] = lang
        return redirect(safe_next(next))

    @router.get("/images/products/{width}/{key}.svg")
    async def product_image(width: int, key: str) -> Response:
        if width not in WIDTHS or not KEY.fullmatch(key):
            raise HTTPException(404, "no such image")
        return Response(
            placeholder_svg(key, width),
            media_type="image/svg+xml",
            headers={"Cache-Control": "public, max-age=31536000, immutable"},
        )

    @router.get("/robots.txt", include_in_schema=False)
    async def robots() -> Response:
        return Response(ROBOTS, media_type="text/plain")

    @router.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @router.get("/readyz", include_in_schema=False)
    async def readyz() -> Response:
        try:
            await shop.b.catalog.call("GET", "/healthz", timeout=1.0)
            await shop.b.cart.call("GET", "/healthz", timeout=1.0)
        except (BackendUnavailable, BackendRefused) as exc:
            return Response(
                f'{{"status": "unavailable", "reason": "{type(exc).__name__}"}}', 503, media_type="application/json"
            )
        return Response('{"status": "ready"}', media_type="application/json")

    return router
