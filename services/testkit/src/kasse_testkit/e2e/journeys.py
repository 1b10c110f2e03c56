"""A shopper's steps through the real HTTP APIs, as a storefront would call them."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx

ADDRESS = {
    "name": "Erika Mustermann",
    "line1": "Hauptstraße 5",
    "postal_code": "10115",
    "city": "Berlin",
    "country": "DE",
}


@dataclass
class Shopper:
    client: httpx.AsyncClient
    catalog: str
    cart_api: str
    session_id: str = field(default_factory=lambda: f"sess-{uuid.uuid4().hex[:12]}")
    email: str = "erika@example.com"
    cart_id: str | None = None
    cart_token: str | None = None
    order_id: str | None = None
    order_token: str | None = None

    @property
    def headers(self) -> dict[str, str]:
        return {"X-Session-Id": self.session_id}

    @property
    def cart_headers(self) -> dict[str, str]:
        return {**self.headers, "X-Cart-Token": self.cart_token or ""}

    async def search(self, query: str, **params: Any) -> list[dict[str, Any]]:
        r = await self.client.get(f"{self.catalog}/v1/products", params={"q": query, **params}, headers=self.headers)
        assert r.status_code == 200, r.text
        return list(r.json()["items"])

    async def view(self, product_id: str, channel: str = "search") -> dict[str, Any]:
        r = await self.client.get(
            f"{self.catalog}/v1/products/{product_id}", params={"channel": channel}, headers=self.headers
        )
        assert r.status_code == 200, r.text
        return dict(r.json())

    async def open_cart(self) -> None:
        r = await self.client.post(f"{self.cart_api}/v1/carts", json={}, headers=self.headers)
        assert r.status_code in (200, 201), r.text
        self.cart_id, self.cart_token = r.json()["cart_id"], r.json()["cart_token"]

    async def add(self, product_id: str, quantity: int = 1) -> httpx.Response:
        if self.cart_id is None:
            await self.open_cart()
        return await self.client.post(
            f"{self.cart_api}/v1/carts/{self.cart_id}/items",
            json={"product_id": product_id, "quantity": quantity},
            headers=self.cart_headers,
        )

    async def checkout(self, method: str = "standard", **overrides: Any) -> dict[str, Any]:
        body = {"email": self.email, "shipping_address": ADDRESS, "shipping_method_id": method, **overrides}
        r = await self.client.post(
            f"{self.cart_api}/v1/carts/{self.cart_id}/checkout", json=body, headers=self.cart_headers
        )
        assert r.status_code == 200, r.text
        return dict(r.json())

    async def place_order(self, idempotency_key: str | None = None) -> dict[str, Any]:
        r = await self.client.post(
            f"{self.cart_api}/v1/carts/{self.cart_id}/order",
            headers={**self.cart_headers, "Idempotency-Key": idempotency_key or uuid.uuid4().hex},
        )
        assert r.status_code in (200, 201), r.text
        body = dict(r.json())
        self.order_id, self.order_token = body["order_id"], body["order_token"]
        return body

    async def cancel(self) -> httpx.Response:
        return await self.client.post(
            f"{self.cart_api}/v1/orders/{self.order_id}/cancel", headers={"X-Order-Token": self.order_token or ""}
        )

    async def buy(self, product_id: str, quantity: int = 1, method: str = "standard") -> dict[str, Any]:
        """Search-to-order in one go: view, add, checkout, place."""
        await self.view(product_id)
        r = await self.add(product_id, quantity)
        assert r.status_code in (200, 201), r.text
        await self.checkout(method)
        return await self.place_order()
