"""Fixtures of the cart's integration tests: the service on the real stack and the other services'
events (catalog products, the shipping rate table) published into Kafka as those services would."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pymongo import AsyncMongoClient

from kasse_cart.main import create_app
from kasse_cart.settings import CartSettings
from kasse_contracts.base import Money
from kasse_contracts.events import (
    MethodKind,
    PriceBand,
    ProductChanged,
    ProductChangeKind,
    ShippingMethod,
    ShippingMethodsPublished,
    ShippingRate,
)
from kasse_testkit import Namespace, running_app, wait_until
from kasse_testkit.infrastructure import Infrastructure

ADMIN = {"Authorization": "Bearer test-admin-token"}
ADDRESS = {
    "name": "Erika Mustermann",
    "line1": "Hauptstraße 5",
    "postal_code": "10115",
    "city": "Berlin",
    "country": "DE",
}


def product(product_id: str, price: int, *, revision: int = 1, stock: int = 50, active: bool = True) -> ProductChanged:
    return ProductChanged(
        occurred_at=datetime.now(UTC),
        product_id=product_id,
        sku=f"SKU-{product_id}",
        name=f"Product {product_id}",
        category="kitchen",
        price=Money(amount=price, currency="EUR"),
        stock_available=stock,
        active=active,
        changes=[ProductChangeKind.CREATED if revision == 1 else ProductChangeKind.PRICE],
        revision=revision,
    )


def rate_table(revision: int = 1) -> ShippingMethodsPublished:
    return ShippingMethodsPublished(
        occurred_at=datetime.now(UTC),
        revision=revision,
        origin_country="DE",
        origin_timezone="Europe/Berlin",
        cutoff_local_time="14:00",
        methods=[
            ShippingMethod(
                method_id="standard",
                name="Standard",
                kind=MethodKind.STANDARD,
                carrier="SimPost",
                rates=[
                    ShippingRate(
                        zone="domestic",
                        countries=["DE"],
                        currency="EUR",
                        price_bands=[PriceBand(min_subtotal=0, price=495), PriceBand(min_subtotal=10000, price=295)],
                        min_business_days=1,
                        max_business_days=3,
                    )
                ],
            ),
            ShippingMethod(
                method_id="express",
                name="Express",
                kind=MethodKind.EXPRESS,
                carrier="SimExpress",
                rates=[
                    ShippingRate(
                        zone="domestic",
                        countries=["DE"],
                        currency="EUR",
                        price_bands=[PriceBand(min_subtotal=0, price=990)],
                        min_business_days=1,
                        max_business_days=1,
                    )
                ],
            ),
        ],
    )


@pytest.fixture
def cart_settings(settings_for: Callable[..., CartSettings]) -> Callable[..., CartSettings]:
    def build(**overrides: Any) -> CartSettings:
        values: dict[str, Any] = {
            "admin_token": "test-admin-token",
            "payment_base_url": None,
            "abandonment_check_interval_s": 0.2,
            "free_shipping_threshold": 5000,
        }
        values.update(overrides)
        return settings_for(CartSettings, **values)

    return build


@pytest.fixture
async def cart_db(kasse_infra: Infrastructure, namespace: Namespace) -> AsyncIterator[Any]:
    client: AsyncMongoClient[Any] = AsyncMongoClient(kasse_infra.mongo_uri, tz_aware=True)
    try:
        yield client[namespace.database("cart")]
    finally:
        await client.close()


@pytest.fixture
def cart_service(cart_settings: Callable[..., CartSettings]) -> Callable[..., Any]:
    """cart_service(**settings) -> async context manager yielding (app, client)."""

    @asynccontextmanager
    async def start(**overrides: Any) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
        app = create_app(cart_settings(**overrides))
        async with running_app(app) as client:
            yield app, client

    return start


@pytest.fixture
def seed(test_publisher: Any, cart_db: Any) -> Callable[..., Awaitable[None]]:
    """Publish products and the rate table as catalog and shipping would; wait until the cart knows them."""

    async def publish(*products: ProductChanged, table: ShippingMethodsPublished | None = None) -> None:
        for event in products:
            await test_publisher.publish(event)
        if table is not None:
            await test_publisher.publish(table)

        async def known() -> bool:
            for event in products:
                doc = await cart_db["products"].find_one({"_id": event.product_id})
                if doc is None or doc["revision"] < event.revision:
                    return False
            if table is not None:
                doc = await cart_db["rate_tables"].find_one({"_id": table.rate_table_id})
                if doc is None or doc["revision"] < table.revision:
                    return False
            return True

        await wait_until(known, message="the cart's read models caught up")

    return publish


async def new_cart(client: httpx.AsyncClient, session: str = "sess-1") -> tuple[str, dict[str, str]]:
    r = await client.post("/v1/carts", json={}, headers={"X-Session-Id": session})
    assert r.status_code == 201, r.text
    body = r.json()
    return body["cart_id"], {"X-Cart-Token": body["cart_token"]}


async def checked_out_order(
    client: httpx.AsyncClient, items: dict[str, int], *, key: str = "key-12345678", method: str = "standard"
) -> dict[str, Any]:
    """A cart with `items`, checked out and placed: the placed-order response."""
    cart_id, token = await new_cart(client)
    for product_id, quantity in items.items():
        r = await client.post(
            f"/v1/carts/{cart_id}/items", json={"product_id": product_id, "quantity": quantity}, headers=token
        )
        assert r.status_code == 200, r.text
    r = await client.post(
        f"/v1/carts/{cart_id}/checkout",
        json={"email": "erika@example.com", "shipping_address": ADDRESS, "shipping_method_id": method},
        headers=token,
    )
    assert r.status_code == 200, r.text
    r = await client.post(f"/v1/carts/{cart_id}/order", headers={**token, "Idempotency-Key": key})
    assert r.status_code == 201, r.text
    return {**r.json(), "cart_id": cart_id, "cart_token": token["X-Cart-Token"]}
