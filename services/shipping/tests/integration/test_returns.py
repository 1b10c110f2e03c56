"""Returns on the real stack: accepted inside the window, refused outside it and for undelivered
items, and the warehouse's receipt publishes ReturnReceived (payment refunds on it)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from kasse_contracts import topics
from kasse_contracts.events import ReturnReceived, ReturnRequested, ShipmentDelivered
from kasse_shipping.main import create_app
from kasse_shipping.settings import ShippingSettings
from kasse_testkit import TestPublisher, running_app, wait_until
from kasse_testkit.samples import line_item, order_placed

from .conftest import ADMIN_TOKEN, payment_for

pytestmark = pytest.mark.integration


async def test_returns_are_accepted_inside_the_window_and_refused_outside_it(
    shipping_settings: Callable[..., ShippingSettings], topic_reader: Any, test_publisher: TestPublisher
) -> None:
    settings = shipping_settings(carrier_dispatch_after_s=0.1, carrier_deliver_after_s=0.1)
    order = order_placed(lines=[line_item("prod_mug", quantity=2, unit_price=1250), line_item("prod_pan", 1, 4999)])
    unpaid = order_placed()
    async with topic_reader(topics.SHIPPING) as reader:
        async with running_app(create_app(settings)) as client:
            policy = (await client.get("/v1/returns/policy")).json()
            assert policy["window_days"] == 30 and policy["conditions"]

            await test_publisher.publish(order)
            await test_publisher.publish(payment_for(order))
            await test_publisher.publish(unpaid)
            await reader.wait_for(
                lambda r: r.event_type == ShipmentDelivered.event_type and r.key == order.order_id.encode()
            )

            async def ask(order_id: str, lines: list[dict[str, Any]], email: str = "erika@example.com") -> Any:
                return await client.post(
                    f"/v1/orders/{order_id}/returns",
                    json={"email": email, "lines": lines, "reason": "damaged", "comment": "cracked"},
                    headers={"X-Session-Id": "sess-returns"},
                )

            async def ask_once(key: str) -> Any:
                return await client.post(
                    f"/v1/orders/{order.order_id}/returns",
                    json={
                        "email": "erika@example.com",
                        "lines": [{"product_id": "prod_mug", "quantity": 1}],
                        "reason": "damaged",
                        "comment": "cracked",
                    },
                    headers={"X-Session-Id": "sess-returns", "Idempotency-Key": key},
                )

            accepted = await ask_once("key-1")
            assert accepted.status_code == 201, accepted.text
            body = accepted.json()
            assert (await ask_once("key-1")).json()["return_id"] == body["return_id"]  # a retry, not a new return
            assert body["label_reference"].startswith("RL-") and body["status"] == "requested"
            assert body["refund_amount"] == {"amount": 1250, "currency": "EUR"}

            refusals = [
                (await ask(order.order_id, [{"product_id": "prod_mug", "quantity": 2}]), 422, "only 1 can still"),
                (await ask(order.order_id, [{"product_id": "prod_lamp", "quantity": 1}]), 422, "was not delivered"),
                (await ask(unpaid.order_id, [{"product_id": "prod_1", "quantity": 1}]), 422, "only delivered items"),
                (await ask(order.order_id, [{"product_id": "prod_pan", "quantity": 1}], "x@y.de"), 404, "no order"),
                (await ask(order.order_id, []), 422, "lines"),
            ]
            for response, status, detail in refusals:
                assert response.status_code == status, response.text
                assert response.headers["content-type"] == "application/problem+json"
                assert detail in response.json()["detail"]

            (requested,) = await reader.wait_for_events(ReturnRequested)
            assert requested.return_id == body["return_id"] and requested.session_id == "sess-returns"
            assert [(line.product_id, line.quantity) for line in requested.lines] == [("prod_mug", 1)]
            assert requested.label_reference == body["label_reference"]

            # The warehouse records the arrival: guarded, idempotent, and it publishes ReturnReceived.
            url = f"/v1/admin/returns/{body['return_id']}/received"
            assert (await client.post(url)).status_code == 401
            assert (await client.post(url, headers={"Authorization": "Bearer wrong"})).status_code == 403
            admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
            received = await client.post(url, headers=admin)
            assert received.status_code == 200 and received.json()["status"] == "received"
            assert (await client.post(url, headers=admin)).json()["received_at"] == received.json()["received_at"]
            assert (await client.post("/v1/admin/returns/ret_nope/received", headers=admin)).status_code == 404
            (arrived,) = await reader.wait_for_events(ReturnReceived)
            assert arrived.refund_amount.amount == 1250 and arrived.return_id == body["return_id"]

        # The same delivered order under a policy whose window has closed: refused with the reason.
        closed = settings.model_copy(update={"return_window_days": 0})
        async with running_app(create_app(closed)) as client:
            late = await client.post(
                f"/v1/orders/{order.order_id}/returns",
                json={
                    "email": "erika@example.com",
                    "lines": [{"product_id": "prod_pan", "quantity": 1}],
                    "reason": "changed_mind",
                },
            )
            assert late.status_code == 422
            assert late.json()["reason"] == "window_closed" and "return window ended" in late.json()["detail"]

    await wait_until(lambda: len(reader.events(ReturnRequested)) == 1, timeout=1)
