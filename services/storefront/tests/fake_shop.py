"""The services behind the storefront, faked at the HTTP boundary for the checkout, payment and order
pages: a cart with VAT per rate, an order whose state a test sets, its invoices. Every request is kept."""

from __future__ import annotations

import json
from typing import Any

import httpx

ORDER_ID = "ord_1"
ORDER_TOKEN = "otok_secret_1"
CART_TOKEN = "ctok_secret_1"
CLIENT_SECRET = "pi_123_secret_abc"
PDF = b"%PDF-1.4 fake invoice"


def money(amount: int) -> dict[str, Any]:
    return {"amount": amount, "currency": "EUR"}


# 89.00 at 19 % (a knife) and 20.00 at 7 % (a book): VAT rounded per rate on its gross.
VAT = {
    "country": "DE",
    "export": False,
    "rates": [
        {
            "rate_basis_points": 1900,
            "goods_gross": money(8900),
            "discount": money(0),
            "shipping": money(0),
            "gross": money(8900),
            "net": money(7479),
            "vat": money(1421),
        },
        {
            "rate_basis_points": 700,
            "goods_gross": money(2000),
            "discount": money(0),
            "shipping": money(0),
            "gross": money(2000),
            "net": money(1869),
            "vat": money(131),
        },
    ],
    "net_total": money(9348),
    "vat_total": money(1552),
    "gross_total": money(10900),
}
LINES = [
    {
        "product_id": "prd_1",
        "sku": "KIT-1",
        "name": "Chef Knife",
        "category": "kitchen",
        "quantity": 1,
        "unit_price": money(8900),
        "line_total": money(8900),
        "discount": money(0),
        "discounted_total": money(8900),
        "tax_class": "standard",
        "vat_rate_basis_points": 1900,
    },
    {
        "product_id": "prd_2",
        "sku": "BOOK-1",
        "name": "Cook Book",
        "category": "books",
        "quantity": 1,
        "unit_price": money(2000),
        "line_total": money(2000),
        "discount": money(0),
        "discounted_total": money(2000),
        "tax_class": "reduced",
        "vat_rate_basis_points": 700,
    },
]
ADDRESS = {
    "name": "Erika Mustermann",
    "line1": "Hauptstraße 5",
    "postal_code": "10115",
    "city": "Berlin",
    "country": "DE",
}
OPTION = {
    "method_id": "standard",
    "name": "Standard",
    "carrier": "DHL",
    "price": money(0),
    "promised_from": "2026-12-09",
    "promised_to": "2026-12-10",
}
PRODUCT = {
    "product_id": "prd_1",
    "sku": "KIT-1",
    "slug": "chef-knife",
    "name": "Chef Knife",
    "category": "kitchen",
    "image": None,
    "images": [],
    "price": money(8900),
    "compare_at_price": None,
    "in_stock": True,
    "low_stock": False,
    "stock_available": 30,
    "rating": {"average": 0, "count": 0},
    "description": "Sharp.",
    "attributes": {},
    "active": True,
}
DOCUMENTS = [
    {
        "number": "RE-2026-000007",
        "kind": "invoice",
        "issued_on": "2026-12-06",
        "refers_to": None,
        "currency": "EUR",
        "net_total": 9348,
        "vat_total": 1552,
        "gross_total": 10900,
        "vat_rates": [],
    }
]


class FakeShop:
    """Catalog, cart, shipping and payment as the storefront sees them over HTTP."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.fail: set[str] = set()
        self.carts: dict[str, list[dict[str, Any]]] = {}
        self.sold_out: set[str] = set()
        self.checkout_started: set[str] = set()
        self.order: dict[str, Any] = self.new_order("stock_reserved")
        self.offered_coupon: str | None = None  # the cart's coupon offer (an experiment on cart_coupon)
        self.recommendations: list[dict[str, Any]] = []  # the catalog's answer for prd_1

    @staticmethod
    def new_order(status: str, **changes: Any) -> dict[str, Any]:
        order = {
            "order_id": ORDER_ID,
            "status": status,
            "placed_at": "2026-12-06T10:00:00+00:00",
            "email": "erika@example.com",
            "total": money(10900),
            "lines": LINES,
            "discounts": [],
            "shipping": {**OPTION},
            "shipping_address": ADDRESS,
            "subtotal": money(10900),
            "discount_total": money(0),
            "shipping_total": money(0),
            "vat": VAT,
            "price_note": "inkl. MwSt., zzgl. Versand",
            "cancellation_reason": None,
            "cancellation_refused": False,
            "payment_due_at": None,
            "refunded": money(0),
            "tracking": None,
            "timeline": [{"at": "2026-12-06T10:00:00+00:00", "status": "placed", "note": ""}],
            "client_secret": CLIENT_SECRET if status in ("placed", "stock_reserved") else None,
        }
        return {**order, **changes}

    def cart(self, cart_id: str) -> dict[str, Any]:
        lines = self.carts[cart_id]
        total = sum(line["line_total"]["amount"] for line in lines)
        return {
            "cart_id": cart_id,
            "status": "open",
            "session_id": "s",
            "customer_id": None,
            "item_count": sum(line["quantity"] for line in lines),
            "lines": [
                {**line, "price_changed": False, "previous_unit_price": None, "available": True} for line in lines
            ],
            "coupon_code": None,
            "offered_coupon": self.offered_coupon,
            "totals": {
                "subtotal": money(total),
                "discounts": [],
                "discount_total": money(0),
                "shipping_total": None,
                "total": money(total),
                "free_shipping": True,
                "coupon_notice": None,
                "vat": VAT,
                "price_note": "inkl. MwSt., zzgl. Versand",
            },
            "checkout_started": cart_id in self.checkout_started,
            "shipping": OPTION if cart_id in self.checkout_started else None,
            "order_id": None,
        }

    def calls(self, method: str, path: str) -> list[httpx.Request]:
        return [r for r in self.requests if r.method == method and r.url.path == path]

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        path, method = request.url.path, request.method
        if any(path.startswith(p) for p in self.fail):
            return httpx.Response(500, json={"title": "boom"})
        if path == "/v1/categories":
            return httpx.Response(200, json={"items": [{"category": "kitchen", "products": 1}]})
        if path == "/v1/products" and method == "GET":  # the listing: one product on sale, one not
            on_sale = {**PRODUCT, "product_id": "prd_2", "slug": "pan", "name": "Pan", "compare_at_price": money(9900)}
            return httpx.Response(200, json={"items": [on_sale, PRODUCT], "total": 2})
        if path == "/v1/products/prd_1":
            return httpx.Response(200, json=PRODUCT)
        if path == "/v1/products/prd_1/recommendations":
            return httpx.Response(200, json={"strategy": "blended", "items": self.recommendations})
        if path.startswith("/v1/products/prd_1/"):
            return httpx.Response(200, json={"items": [], "total": 0, "rating": {"average": 0, "count": 0}})
        if path == "/v1/shipping/quotes":
            return httpx.Response(200, json={"methods": []})
        if path == "/v1/carts" and method == "POST":
            cart_id = f"cart_{len(self.carts) + 1}"
            self.carts[cart_id] = []
            return httpx.Response(201, json={"cart_id": cart_id, "cart_token": CART_TOKEN, "cart": self.cart(cart_id)})
        if path.startswith("/v1/carts/"):
            return self._cart(request, path.split("/")[3], method, path)
        if path.startswith(f"/v1/orders/{ORDER_ID}"):
            if request.headers.get("X-Order-Token") != ORDER_TOKEN:
                return httpx.Response(404, json={"title": "Not found", "detail": "no order with this id and token"})
            if path == f"/v1/orders/{ORDER_ID}":
                return httpx.Response(200, json=self.order)
            if path == f"/v1/orders/{ORDER_ID}/invoices":
                return httpx.Response(200, json=DOCUMENTS)
            if path == f"/v1/orders/{ORDER_ID}/invoices/RE-2026-000007.pdf":
                return httpx.Response(200, content=PDF, headers={"Content-Type": "application/pdf"})
        if path.startswith("/v1/orders/") and path.endswith("/shipment"):
            return httpx.Response(404, json={"title": "Not found"})
        if path == "/v1/returns/policy":
            return httpx.Response(200, json={"window_days": 30})
        return httpx.Response(404, json={"title": "Not found", "detail": f"no fake for {method} {path}"})

    def _cart(self, request: httpx.Request, cart_id: str, method: str, path: str) -> httpx.Response:
        if cart_id not in self.carts or request.headers.get("X-Cart-Token") != CART_TOKEN:
            return httpx.Response(404, json={"title": "Not found"})
        if path.endswith("/items") and method == "POST":
            body = json.loads(request.content)
            if body["product_id"] in self.sold_out:
                return httpx.Response(409, json={"title": "Conflict", "detail": "not available", "available": 0})
            line = next(line for line in LINES if line["product_id"] == body["product_id"])
            self.carts[cart_id].append({**line, "quantity": body["quantity"]})
            return httpx.Response(200, json=self.cart(cart_id))
        if path.endswith("/shipping-options"):
            return httpx.Response(200, json=[OPTION])
        if path.endswith("/checkout"):
            self.checkout_started.add(cart_id)
            return httpx.Response(200, json=self.cart(cart_id))
        if path.endswith("/order"):
            body = {"order_id": ORDER_ID, "order_token": ORDER_TOKEN, "status": "placed", "total": money(10900)}
            return httpx.Response(201, json={**body, "replayed": False})
        return httpx.Response(200, json=self.cart(cart_id))
