"""End to end: the five services as real processes on real Kafka, FerretDB and stripe-mock."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from kasse_contracts.events import (
    OrderPlaced,
    PaymentCaptured,
    ShipmentCreated,
    ShipmentDelivered,
    ShipmentDispatched,
    StockReserved,
)
from kasse_testkit import wait_until
from kasse_testkit.e2e.journeys import Shopper
from kasse_testkit.e2e.shop import ADMIN, Shop
from kasse_testkit.e2e.subscriber import OrderEventsSubscriber

pytestmark = pytest.mark.e2e


async def seed_product(client: httpx.AsyncClient, shop: Shop, sku: str, stock: int, price: int = 2500) -> str:
    body = {
        "sku": sku,
        "name": f"E2E {sku}",
        "description": "A product made for the end-to-end test",
        "category": "e2e",
        "price": {"amount": price, "currency": "EUR"},
        "stock_on_hand": stock,
        "images": [{"url": "https://example.com/p.jpg", "alt": "product"}],
    }
    r = await client.post(
        shop.url("catalog") + "/v1/admin/products", json=body, headers={"Authorization": f"Bearer {ADMIN['catalog']}"}
    )
    assert r.status_code in (200, 201), r.text
    return str(r.json()["product_id"])


async def cart_knows(client: httpx.AsyncClient, shop: Shop, product_id: str) -> bool:
    """The cart prices from its read model of ProductChanged: wait until the product reached it."""
    probe = Shopper(client, shop.url("catalog"), shop.url("cart"))
    r = await probe.add(product_id, 1)
    return r.status_code in (200, 201)


async def pay(client: httpx.AsyncClient, shop: Shop, order_id: str, *, succeed: bool = True) -> None:
    """Play the customer's bank: Stripe tells Kasse the outcome through a signed webhook."""
    payment: dict[str, Any] = {}

    async def intent_created() -> bool:
        nonlocal payment
        payment = await shop.payment(client, order_id)
        return bool(payment.get("payment_intent_id")) and payment.get("status") == "requires_action"

    await wait_until(intent_created, timeout=60, message=lambda: f"payment intent for {order_id}: {payment}")
    obj: dict[str, Any] = {
        "id": payment["payment_intent_id"],
        "object": "payment_intent",
        "metadata": {"order_id": order_id},
        "amount": payment["amount"]["amount"],
        "currency": payment["amount"]["currency"].lower(),
    }
    if succeed:
        obj.update(status="succeeded", amount_received=payment["amount"]["amount"])
        r = await shop.stripe_webhook(client, "payment_intent.succeeded", obj)
    else:
        obj.update(
            status="requires_payment_method",
            last_payment_error={
                "code": "card_declined",
                "decline_code": "insufficient_funds",
                "message": "Your card has insufficient funds.",
            },
        )
        r = await shop.stripe_webhook(client, "payment_intent.payment_failed", obj)
    assert r.status_code == 200, r.text


async def test_happy_path_from_search_to_delivered(shop: Shop, order_events: OrderEventsSubscriber) -> None:
    async with httpx.AsyncClient(timeout=30) as client:
        product_id = await seed_product(client, shop, "E2E-HAPPY", stock=5)
        await wait_until(lambda: cart_knows(client, shop, product_id), timeout=30)
        shopper = Shopper(client, shop.url("catalog"), shop.url("cart"))
        found = await shopper.search("E2E HAPPY")
        assert product_id in [p["product_id"] for p in found]
        placed = await shopper.buy(product_id, quantity=2)
        assert placed["status"] == "placed"
        order_id, token = placed["order_id"], placed["order_token"]

        await shop.wait_for_status(client, order_id, token, "stock_reserved")
        await pay(client, shop, order_id)
        delivered = await shop.wait_for_status(client, order_id, token, "delivered", timeout=90)
        assert [step["status"] for step in delivered["timeline"]][:2] == ["placed", "stock_reserved"]
        assert delivered["tracking"] is not None

    expected = [OrderPlaced, StockReserved, PaymentCaptured, ShipmentCreated, ShipmentDispatched, ShipmentDelivered]
    await wait_until(
        lambda: len(order_events.for_order(order_id)) >= len(expected),
        timeout=30,
        message=lambda: f"events of {order_id}: {order_events.types(order_id)}",
    )
    assert order_events.types(order_id) == [e.__name__ for e in expected]
    seen = order_events.for_order(order_id)
    placed_event = seen[0].event
    assert placed_event.total.amount == placed["total"]["amount"]
    assert all(s.event.session_id == shopper.session_id for s in seen)
    # Per topic, the events of one order are on one partition, in offset order.
    for topic in {s.topic for s in seen}:
        on_topic = [s for s in seen if s.topic == topic]
        assert len({s.partition for s in on_topic}) == 1
        assert [s.offset for s in on_topic] == sorted(s.offset for s in on_topic)
