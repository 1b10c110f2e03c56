"""What each page needs, gathered from the services. Blocks that are not essential to a page
(reviews, recommendations, the delivery promise, tracking) degrade to `None` when their service fails:
the page still renders, without that block."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from kasse_storefront.adapters.backends import BackendRefused, Backends, BackendUnavailable, Shopper
from kasse_storefront.adapters.cache import ReadThrough
from kasse_storefront.domain.shop import free_shipping_progress, rating_distribution

log = logging.getLogger(__name__)
T = TypeVar("T")

# A single parcel of an average product, for the product page's promise (the cart quotes its real basket).
DEFAULT_WEIGHT_GRAMS = 500
REVIEWS_FOR_DISTRIBUTION = 100
RECOMMENDED_PER_BLOCK = 4  # products in each of the product page's two recommendation blocks


async def optional(call: Awaitable[T], block: str, on_degraded: Callable[[], None] | None = None) -> T | None:
    """The block's data, or None when its service is down, slow or refuses: the page goes on."""
    try:
        return await call
    except (BackendUnavailable, BackendRefused) as exc:
        log.warning("page block degraded", extra={"block": block, "reason": str(exc)})
        if on_degraded is not None:
            on_degraded()
        return None


@dataclass
class SearchQuery:
    q: str = ""
    category: str | None = None
    min_price: int | None = None
    max_price: int | None = None
    in_stock: bool | None = None
    min_rating: float | None = None
    sort: str = "relevance"
    page: int = 1

    def params(self, page_size: int) -> dict[str, Any]:
        return {
            "q": self.q,
            "category": self.category,
            "min_price": self.min_price,
            "max_price": self.max_price,
            "in_stock": "true" if self.in_stock else None,
            "min_rating": self.min_rating,
            "sort": self.sort,
            "page": self.page,
            "page_size": page_size,
        }


class Storefront:
    def __init__(
        self,
        backends: Backends,
        *,
        optional_timeout_s: float,
        country: str,
        page_size: int,
        cache_ttl_s: float = 0.0,
        cache_max_entries: int = 1024,
    ) -> None:
        self.b = backends
        self.optional_timeout_s = optional_timeout_s
        self.country = country
        self.page_size = page_size
        self.on_degraded: Callable[[], None] | None = None
        # Answers the same for every shopper, kept briefly (bounded): what most page views repeat.
        # Searches and product views are never cached — each one is the shopper's event (ProductSearched,
        # ProductViewed) that the catalog records — nor recommendations, which follow the session's
        # experiment variant. The home page's listing is not a search of the shopper's.
        ttl, size = cache_ttl_s, cache_max_entries
        self.listings: ReadThrough[dict[str, Any]] = ReadThrough(64, ttl)
        self.nav: ReadThrough[list[dict[str, Any]]] = ReadThrough(1, max(ttl, 60.0))
        self.reviews: ReadThrough[dict[str, Any]] = ReadThrough(size, ttl)
        self.quotes: ReadThrough[dict[str, Any]] = ReadThrough(size, ttl)
        # A product's slug never names another product: its id is kept longer, so a view asks the
        # catalog by id (its one-document lookup) instead of by slug (a scan on FerretDB).
        self.product_ids: ReadThrough[str] = ReadThrough(4 * size, 600.0)

    async def optional(self, call: Awaitable[T], block: str) -> T | None:
        return await optional(call, block, self.on_degraded)

    # -- browsing -------------------------------------------------------------------------------
    async def categories(self) -> list[dict[str, Any]]:
        async def load() -> list[dict[str, Any]]:
            found = await self.b.catalog.call("GET", "/v1/categories", timeout=self.optional_timeout_s)
            return list(found["items"])

        return await self.optional(self.nav.get("categories", load), "nav") or []

    async def home(self, shopper: Shopper, channel: dict[str, str]) -> dict[str, Any]:
        async def load() -> dict[str, Any]:
            return await self.b.catalog.call(  # type: ignore[no-any-return]
                "GET", "/v1/products", shopper, params={"sort": "popularity", "page_size": 24, **channel}
            )

        items = (await self.listings.get("popular", load))["items"]
        return {
            "campaigns": [p for p in items if p.get("compare_at_price")][:4],
            "top_sellers": items[:8],
        }

    async def search(self, shopper: Shopper, query: SearchQuery, channel: dict[str, str]) -> dict[str, Any]:
        found = await self.b.catalog.call(
            "GET", "/v1/products", shopper, params={**query.params(self.page_size), **channel}
        )
        pages = max(1, -(-found["total"] // self.page_size))
        return {**found, "pages": pages}

    async def product(
        self, shopper: Shopper, ref: str, channel: dict[str, str], referrer: str | None
    ) -> dict[str, Any]:
        headers = {"Referer": referrer} if referrer else None
        known_id = self.product_ids.peek(ref)

        async def view() -> dict[str, Any]:
            product = await self.b.catalog.call(
                "GET", f"/v1/products/{known_id or ref}", shopper, params=channel, headers=headers
            )
            self.product_ids.put(ref, product["product_id"])
            return product  # type: ignore[no-any-return]

        if known_id is None:
            # The first view of this slug: its id comes with the product, the blocks follow.
            product = await view()
            pid = product["product_id"]
            reviews, recommended, promise = await asyncio.gather(
                self.optional(self._reviews(pid), "reviews"),
                self.optional(self._recommendations(shopper, pid), "recommendations"),
                self.optional(self._promise(product), "delivery promise"),
            )
        else:
            # All at once: the view (recorded by the catalog, never cached) and the blocks. The promise
            # needs the price, which the view brings: it waits for the view, not for the other blocks.
            viewing = asyncio.ensure_future(view())
            try:
                reviews, recommended = await asyncio.gather(
                    self.optional(self._reviews(known_id), "reviews"),
                    self.optional(self._recommendations(shopper, known_id), "recommendations"),
                )
                product = await viewing
            finally:
                if not viewing.done():
                    viewing.cancel()
            promise = await self.optional(self._promise(product), "delivery promise")
        bought = viewed = None
        if recommended is not None:
            bought = [r["product"] for r in recommended if r["reason"] == "bought_together"][:RECOMMENDED_PER_BLOCK]
            viewed = [r["product"] for r in recommended if r["reason"] != "bought_together"][:RECOMMENDED_PER_BLOCK]
        return {"product": product, "reviews": reviews, "bought": bought, "viewed": viewed, "promise": promise}

    async def _reviews(self, pid: str) -> dict[str, Any]:
        async def load() -> dict[str, Any]:
            page = await self.b.catalog.call(
                "GET",
                f"/v1/products/{pid}/reviews",
                params={"page_size": REVIEWS_FOR_DISTRIBUTION},
                timeout=self.optional_timeout_s,
            )
            return {**page, "distribution": rating_distribution(r["rating"] for r in page["items"])}

        return await self.reviews.get(pid, load)

    async def _recommendations(self, shopper: Shopper, pid: str) -> list[dict[str, Any]]:
        """One call with the shopper's session and no `kind`: the catalog picks the relations by the
        session's recommendation strategy (an experiment on it assigns and exposes the session there).
        Co-purchases fill the "bought together" block, the rest (viewed together, popular) the other.
        Not cached: the answer (and the exposure the catalog records) belongs to the shopper's session."""
        found = await self.b.catalog.call(
            "GET",
            f"/v1/products/{pid}/recommendations",
            shopper,
            params={"limit": 2 * RECOMMENDED_PER_BLOCK},
            timeout=self.optional_timeout_s,
        )
        return list(found["items"])

    async def _promise(self, product: dict[str, Any]) -> dict[str, Any] | None:
        quote = await self.quote(product["price"], DEFAULT_WEIGHT_GRAMS, 1)
        return quote["methods"][0] if quote["methods"] else None

    async def quote(self, subtotal: dict[str, Any], weight: int, items: int) -> dict[str, Any]:
        body = {
            "country": self.country,
            "basket": {"subtotal": subtotal, "weight_grams": weight, "item_count": items},
        }

        async def load() -> dict[str, Any]:
            return await self.b.shipping.call(  # type: ignore[no-any-return]
                "POST", "/v1/shipping/quotes", json=body, timeout=self.optional_timeout_s
            )

        key = (self.country, subtotal["amount"], subtotal["currency"], weight, items)
        return await self.quotes.get(key, load)

    async def submit_review(
        self, shopper: Shopper, pid: str, review: dict[str, Any], order: tuple[str, str] | None = None
    ) -> dict[str, Any]:
        """`order` (order id, order token from the session) proves the purchase: a verified review."""
        body, headers = dict(review), None
        if order is not None:
            body["order_id"], headers = order[0], {"X-Order-Token": order[1]}
        submitted = await self.b.catalog.call(
            "POST", f"/v1/products/{pid}/reviews", shopper, json=body, headers=headers
        )
        # The shopper sees their own review at once (by whichever reference the page used).
        self.reviews.forget(pid)
        self.reviews.forget(self.product_ids.peek(pid))
        return submitted  # type: ignore[no-any-return]

    # -- cart -----------------------------------------------------------------------------------
    async def create_cart(self, shopper: Shopper) -> tuple[str, str]:
        created = await self.b.cart.call("POST", "/v1/carts", shopper, json={})
        return created["cart_id"], created["cart_token"]

    def _cart_headers(self, token: str) -> dict[str, str]:
        return {"X-Cart-Token": token}

    async def cart(self, shopper: Shopper, cart_id: str, token: str) -> dict[str, Any]:
        return await self.b.cart.call("GET", f"/v1/carts/{cart_id}", shopper, headers=self._cart_headers(token))  # type: ignore[no-any-return]

    async def cart_page(self, shopper: Shopper, cart_id: str, token: str) -> dict[str, Any]:
        # The cart and its delivery options at once; the free-shipping quote needs the subtotal.
        cart, options = await asyncio.gather(
            self.cart(shopper, cart_id, token),
            self.optional(self.shipping_options(shopper, cart_id, token), "delivery options"),
        )
        quote = await self.optional(
            self.quote(cart["totals"]["subtotal"], DEFAULT_WEIGHT_GRAMS, max(1, cart["item_count"])),
            "free shipping",
        )
        threshold = None
        if quote and quote["methods"] and quote["methods"][0].get("free_shipping_threshold"):
            threshold = quote["methods"][0]["free_shipping_threshold"]["amount"]
        progress = free_shipping_progress(cart["totals"]["subtotal"]["amount"], threshold) if cart["lines"] else None
        return {"cart": cart, "options": options, "free_shipping": progress}

    async def shipping_options(
        self, shopper: Shopper, cart_id: str, token: str, country: str | None = None
    ) -> list[dict[str, Any]]:
        return await self.b.cart.call(  # type: ignore[no-any-return]
            "GET",
            f"/v1/carts/{cart_id}/shipping-options",
            shopper,
            params={"country": country or self.country},
            headers=self._cart_headers(token),
            timeout=self.optional_timeout_s,
        )

    async def add_item(self, shopper: Shopper, cart_id: str, token: str, product_id: str, quantity: int) -> Any:
        body = {"product_id": product_id, "quantity": quantity}
        return await self.b.cart.call(
            "POST", f"/v1/carts/{cart_id}/items", shopper, json=body, headers=self._cart_headers(token)
        )

    async def set_quantity(self, shopper: Shopper, cart_id: str, token: str, product_id: str, quantity: int) -> Any:
        return await self.b.cart.call(
            "PUT",
            f"/v1/carts/{cart_id}/items/{product_id}",
            shopper,
            json={"quantity": quantity},
            headers=self._cart_headers(token),
        )

    async def remove_item(self, shopper: Shopper, cart_id: str, token: str, product_id: str) -> Any:
        return await self.b.cart.call(
            "DELETE", f"/v1/carts/{cart_id}/items/{product_id}", shopper, headers=self._cart_headers(token)
        )

    async def apply_coupon(self, shopper: Shopper, cart_id: str, token: str, code: str) -> Any:
        return await self.b.cart.call(
            "PUT", f"/v1/carts/{cart_id}/coupon", shopper, json={"code": code}, headers=self._cart_headers(token)
        )

    async def remove_coupon(self, shopper: Shopper, cart_id: str, token: str) -> Any:
        return await self.b.cart.call(
            "DELETE", f"/v1/carts/{cart_id}/coupon", shopper, headers=self._cart_headers(token)
        )

    async def begin_checkout(self, shopper: Shopper, cart_id: str, token: str, body: dict[str, Any]) -> Any:
        return await self.b.cart.call(
            "POST", f"/v1/carts/{cart_id}/checkout", shopper, json=body, headers=self._cart_headers(token)
        )

    async def place_order(self, shopper: Shopper, cart_id: str, token: str, idempotency_key: str) -> dict[str, Any]:
        return await self.b.cart.call(  # type: ignore[no-any-return]
            "POST",
            f"/v1/carts/{cart_id}/order",
            shopper,
            headers={**self._cart_headers(token), "Idempotency-Key": idempotency_key},
        )

    # -- orders ---------------------------------------------------------------------------------
    async def order(self, shopper: Shopper, order_id: str, token: str) -> dict[str, Any]:
        return await self.b.cart.call("GET", f"/v1/orders/{order_id}", shopper, headers={"X-Order-Token": token})  # type: ignore[no-any-return]

    async def order_page(self, shopper: Shopper, order_id: str, token: str) -> dict[str, Any]:
        order, tracking, policy, documents = await asyncio.gather(
            self.order(shopper, order_id, token),
            self.optional(
                self.b.shipping.call("GET", f"/v1/orders/{order_id}/shipment", timeout=self.optional_timeout_s),
                "tracking",
            ),
            self.optional(
                self.b.shipping.call("GET", "/v1/returns/policy", timeout=self.optional_timeout_s), "return policy"
            ),
            self.optional(self.documents(shopper, order_id, token), "invoices"),
        )
        return {"order": order, "tracking": tracking, "policy": policy, "documents": documents}

    async def documents(self, shopper: Shopper, order_id: str, token: str) -> list[dict[str, Any]]:
        """The order's invoice and credit notes (payment issues them; the cart serves them to the customer)."""
        return await self.b.cart.call(  # type: ignore[no-any-return]
            "GET",
            f"/v1/orders/{order_id}/invoices",
            shopper,
            headers={"X-Order-Token": token},
            timeout=self.optional_timeout_s,
        )

    async def document_pdf(self, shopper: Shopper, order_id: str, token: str, number: str) -> bytes:
        return await self.b.cart.download(
            f"/v1/orders/{order_id}/invoices/{number}.pdf", shopper, headers={"X-Order-Token": token}
        )

    async def order_again(self, shopper: Shopper, order: dict[str, Any]) -> tuple[str, str, list[str]]:
        """A new cart with the lines of an order that was not paid: (cart id, token, names not added)."""
        cart_id, token = await self.create_cart(shopper)
        missing = []
        for line in order["lines"]:
            try:
                await self.add_item(shopper, cart_id, token, line["product_id"], line["quantity"])
            except BackendRefused:
                missing.append(str(line.get("name") or line["product_id"]))
        return cart_id, token, missing

    async def cancel_order(self, shopper: Shopper, order_id: str, token: str) -> Any:
        return await self.b.cart.call(
            "POST", f"/v1/orders/{order_id}/cancel", shopper, headers={"X-Order-Token": token}
        )

    async def request_return(self, shopper: Shopper, order_id: str, body: dict[str, Any], idempotency_key: str) -> Any:
        return await self.b.shipping.call(
            "POST", f"/v1/orders/{order_id}/returns", shopper, json=body, headers={"Idempotency-Key": idempotency_key}
        )

    async def payment_intent(self, order_id: str, internal_token: str) -> str | None:
        found = await self.b.payment.call(
            "GET", f"/v1/payments/{order_id}", headers={"Authorization": f"Bearer {internal_token}"}
        )
        return found.get("payment_intent_id") if found.get("status") in ("requires_action", "processing") else None

    async def deliver_test_webhook(self, payload: str, signature: str) -> Any:
        return await self.b.payment.call(
            "POST",
            "/v1/webhooks/stripe",
            content=payload.encode(),
            headers={"Stripe-Signature": signature, "Content-Type": "application/json"},
        )
