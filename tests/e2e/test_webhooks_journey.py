"""End to end: an order placed through the shop reaches a registered local receiver as signed
webhooks for every step (Standard Webhooks, verified with the `standardwebhooks` library only)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
import pytest

from kasse_testkit import ServiceProcess, free_port, wait_until
from kasse_testkit.e2e.journeys import Shopper
from kasse_testkit.e2e.shop import Shop, executable
from kasse_testkit.receiver import Receiver

from .test_order_journeys import pay, ready_product

pytestmark = pytest.mark.e2e

ADMIN_TOKEN = "e2e-webhooks-admin"
STEPS = [
    "io.kasse.cart.OrderPlaced.v1",
    "io.kasse.catalog.StockReserved.v1",
    "io.kasse.payment.PaymentCaptured.v1",
    "io.kasse.shipping.ShipmentCreated.v1",
    "io.kasse.shipping.ShipmentDispatched.v1",
    "io.kasse.shipping.ShipmentDelivered.v1",
]


@pytest.fixture(scope="module")
async def webhooks(shop: Shop) -> AsyncIterator[str]:
    """The webhooks service as a real process next to the shop, in the shop's namespace."""
    port = free_port()
    env = {
        "KASSE_KAFKA_BOOTSTRAP": shop.infra.kafka_bootstrap,
        "KASSE_MONGO_URI": shop.infra.mongo_uri,
        "KASSE_PROFILE": "development",
        "KASSE_WEBHOOKS_TOPIC_PREFIX": shop.namespace.topic_prefix,
        "KASSE_WEBHOOKS_MONGO_DATABASE": shop.namespace.database("webhooks"),
        "KASSE_WEBHOOKS_HTTP_PORT": str(port),
        "KASSE_WEBHOOKS_ADMIN_TOKEN": ADMIN_TOKEN,
        "KASSE_WEBHOOKS_ALLOWED_NETWORKS": json.dumps(["127.0.0.1/32"]),
        "KASSE_WEBHOOKS_DISPATCH_POLL_INTERVAL_S": "0.2",
    }
    process = ServiceProcess([executable("webhooks")], env, port=port, log_path=shop.log_dir / "webhooks.log")
    await process.start(timeout=120)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await process.stop()


async def test_an_order_reaches_a_registered_receiver_as_signed_webhooks_for_every_step(
    shop: Shop, webhooks: str
) -> None:
    async with Receiver() as receiver, httpx.AsyncClient(timeout=30) as client:
        r = await client.post(
            webhooks + "/v1/admin/endpoints",
            json={
                "url": receiver.url,
                "event_types": [
                    "io.kasse.cart.Order*",
                    "io.kasse.catalog.Stock*",
                    "io.kasse.payment.Payment*",  # not the invoices: their order against shipping's is free
                    "io.kasse.shipping.*",
                ],
                "description": "the ERP",
            },
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        )
        assert r.status_code == 201, r.text
        receiver.secrets = [r.json()["secret"]]

        product_id = await ready_product(client, shop, "E2E-WEBHOOK", stock=3)
        shopper = Shopper(client, shop.url("catalog"), shop.url("cart"))
        placed = await shopper.buy(product_id)
        order_id, token = placed["order_id"], placed["order_token"]
        await shop.wait_for_status(client, order_id, token, "stock_reserved")
        await pay(client, shop, order_id)
        await shop.wait_for_status(client, order_id, token, "delivered", timeout=90)

        def for_order() -> list[str]:
            return [r.event["type"] for r in receiver.delivered() if r.event["subject"] == order_id]

        await wait_until(lambda: len(for_order()) >= len(STEPS), timeout=60, message=lambda: str(for_order()))
        assert for_order() == STEPS  # every step, in order
        mine = [r for r in receiver.delivered() if r.event["subject"] == order_id]
        assert all(r.verified for r in mine)  # standardwebhooks.Webhook(secret).verify on each
        assert mine[0].event["data"]["total"] == placed["total"]
        assert len({r.headers["webhook-id"] for r in mine}) == len(STEPS)
