"""Every order finishes (issue 12): deadlines and compensations, with the five services as real processes.

This module runs its own shop with a short payment deadline (10 s) and a carrier that dispatches after
2 s, so expiry and cancel-after-dispatch happen within the test; Stripe's verdicts are signed webhooks.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from kasse_testkit import wait_until
from kasse_testkit.e2e.journeys import Shopper
from kasse_testkit.e2e.shop import ADMIN, Shop, running_shop
from kasse_testkit.e2e.subscriber import OrderEventsSubscriber
from kasse_testkit.infrastructure import Infrastructure

from .test_order_journeys import pay, ready_product, stock_of

pytestmark = pytest.mark.e2e

PAYMENT_DEADLINE_S = 10


@pytest.fixture(scope="module")
async def shop(kasse_infra: Infrastructure, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Shop]:
    async with running_shop(
        kasse_infra,
        tmp_path_factory.mktemp("deadline-shop"),
        settings={
            "KASSE_CART_UNPAID_ORDER_TIMEOUT_S": str(PAYMENT_DEADLINE_S),
            "KASSE_CART_UNPAID_CHECK_INTERVAL_S": "0.5",
            "KASSE_SHIPPING_CARRIER_DISPATCH_AFTER_S": "2",
            "KASSE_SHIPPING_CARRIER_DELIVER_AFTER_S": "600",
        },
    ) as running:
        yield running  # conftest's order_events subscribes to this shop's topics


def consumer(shop: Shop, service: str, action: str) -> tuple[str, dict[str, str]]:
    return shop.url(service) + f"/v1/admin/consumer/{action}", {"Authorization": f"Bearer {ADMIN[service]}"}


async def payment_detail(client: httpx.AsyncClient, shop: Shop, order_id: str) -> dict[str, Any]:
    return await shop.payment(client, order_id)


async def test_an_unpaid_order_expires_and_a_late_success_is_refunded(
    shop: Shop, order_events: OrderEventsSubscriber
) -> None:
    async with httpx.AsyncClient(timeout=30) as client:
        product_id = await ready_product(client, shop, "E2E-EXPIRE", stock=3)
        shopper = Shopper(client, shop.url("catalog"), shop.url("cart"))
        placed = await shopper.buy(product_id, quantity=2)
        order_id, token = placed["order_id"], placed["order_token"]
        reserved = await shop.wait_for_status(client, order_id, token, "stock_reserved")
        assert reserved["payment_due_at"] is not None

        # Nobody pays: after the deadline the order is cancelled, the intent cancelled, the stock released.
        view = await shop.wait_for_status(client, order_id, token, "cancelled", timeout=60)
        assert view["cancellation_reason"] == "payment_timeout" and view["payment_due_at"] is None
        intent: dict[str, Any] = {}

        async def intent_cancelled() -> bool:
            nonlocal intent
            intent = await payment_detail(client, shop, order_id)
            return intent.get("status") == "cancelled" and any(
                "canceled at Stripe" in h["note"] for h in intent.get("history", [])
            )

        await wait_until(intent_cancelled, timeout=30, message=lambda: f"intent cancelled: {intent}")
        await wait_until(lambda: _stock_is(client, shop, product_id, on_hand=3, reserved=0), timeout=30)

        # The customer's bank says yes after all: the money goes back, the order stays cancelled.
        total = intent["amount"]["amount"]
        r = await shop.stripe_webhook(
            client,
            "payment_intent.succeeded",
            {
                "id": intent["payment_intent_id"],
                "object": "payment_intent",
                "metadata": {"order_id": order_id},
                "amount": total,
                "amount_received": total,
                "currency": "eur",
                "status": "succeeded",
            },
        )
        assert r.status_code == 200, r.text

        async def refunded() -> bool:
            nonlocal view
            view = await shop.order(client, order_id, token)
            return bool(view["refunded"]["amount"] == total)

        await wait_until(refunded, timeout=60, message=lambda: f"late success refunded: {view}")
        assert view["status"] == "cancelled" and view["cancellation_reason"] == "payment_timeout"
        detail = await payment_detail(client, shop, order_id)
        assert [(x["key"], x["state"], x["amount"]) for x in detail["refunds"]] == [("late-capture", "done", total)]
        await wait_until(lambda: _stock_is(client, shop, product_id, on_hand=3, reserved=0), timeout=30)
    # The cart's view shows the refund once the cart consumed PaymentRefunded; this subscriber reads the
    # same topic on its own and may get it later: wait for it here before counting.
    await wait_until(
        lambda: "PaymentRefunded" in order_events.types(order_id),
        timeout=30,
        message=lambda: f"PaymentRefunded seen by the subscriber: {order_events.types(order_id)}",
    )
    types = order_events.types(order_id)
    assert "PaymentCaptured" not in types, "a success after expiry is never reported as a capture"
    assert types.count("PaymentRefunded") == 1
    cancels = [s.event for s in order_events.for_order(order_id) if type(s.event).__name__ == "OrderCancelled"]
    assert {c.reason.value for c in cancels} == {"payment_timeout"}


async def test_a_cancellation_after_dispatch_is_refused_and_nothing_is_refunded(
    shop: Shop, order_events: OrderEventsSubscriber
) -> None:
    async with httpx.AsyncClient(timeout=30) as client:
        product_id = await ready_product(client, shop, "E2E-LATE-CANCEL", stock=4)
        shopper = Shopper(client, shop.url("catalog"), shop.url("cart"))
        placed = await shopper.buy(product_id, quantity=1)
        order_id, token = placed["order_id"], placed["order_token"]
        await shop.wait_for_status(client, order_id, token, "stock_reserved")
        # The cart stops hearing about the parcel (a lagging consumer), so it still thinks it can cancel.
        url, admin = consumer(shop, "cart", "pause")
        assert (await client.post(url, headers=admin)).status_code == 200
        try:
            await pay(client, shop, order_id)
            await wait_until(lambda: _dispatched(client, shop, order_id), timeout=60)
            r = await shopper.cancel()
            assert r.status_code in (200, 202), r.text  # accepted by the cart: shipping has the last word
        finally:
            url, admin = consumer(shop, "cart", "resume")
            assert (await client.post(url, headers=admin)).status_code == 200
        await wait_until(lambda: "CancellationRefused" in order_events.types(order_id), timeout=60)
        view = await shop.wait_for_status(client, order_id, token, "shipped", timeout=60)
        assert view["cancellation_refused"] is True and view["cancellation_reason"] is None
        # Goods left, so the money stays: no refund, and the unit is out of stock for good.
        detail = await payment_detail(client, shop, order_id)
        assert detail["status"] == "captured" and detail["refunds"] == []
        await wait_until(lambda: _stock_is(client, shop, product_id, on_hand=3, reserved=0), timeout=30)
        assert (await shopper.cancel()).status_code == 409  # return it instead
    assert "PaymentRefunded" not in order_events.types(order_id)
    assert "ShipmentCancelled" not in order_events.types(order_id)


async def test_a_return_received_restocks_the_resellable_items_once(
    shop: Shop, order_events: OrderEventsSubscriber
) -> None:
    async with httpx.AsyncClient(timeout=30) as client:
        product_id = await ready_product(client, shop, "E2E-RESTOCK", stock=5, price=1500)
        # This shop's carrier keeps parcels on the road (for the test above); this parcel is delivered fast.
        await _carrier(client, shop, deliver_after_s=1)
        try:
            shopper = Shopper(client, shop.url("catalog"), shop.url("cart"))
            placed = await shopper.buy(product_id, quantity=2)
            order_id, token = placed["order_id"], placed["order_token"]
            await shop.wait_for_status(client, order_id, token, "stock_reserved")
            await pay(client, shop, order_id)
            await shop.wait_for_status(client, order_id, token, "delivered", timeout=90)
        finally:
            await _carrier(client, shop, deliver_after_s=600)
        await wait_until(lambda: _stock_is(client, shop, product_id, on_hand=3, reserved=0), timeout=30)

        r = await client.post(
            shop.url("shipping") + f"/v1/orders/{order_id}/returns",
            json={"email": shopper.email, "lines": [{"product_id": product_id, "quantity": 2}], "reason": "other"},
            headers=shopper.headers,
        )
        assert r.status_code in (200, 201), r.text
        return_id = r.json()["return_id"]
        received = shop.url("shipping") + f"/v1/admin/returns/{return_id}/received"
        bad = await client.post(
            received,
            json={"conditions": {product_id: "scratched"}},
            headers={"Authorization": f"Bearer {ADMIN['shipping']}"},
        )
        assert bad.status_code == 422, bad.text
        for _ in range(2):  # the warehouse scans it twice: one arrival
            r = await client.post(
                received,
                json={"conditions": {product_id: "resellable"}},
                headers={"Authorization": f"Bearer {ADMIN['shipping']}"},
            )
            assert r.status_code == 200, r.text
            assert [line["condition"] for line in r.json()["lines"]] == ["resellable"]
        await wait_until(lambda: _stock_is(client, shop, product_id, on_hand=5, reserved=0), timeout=30)
        view: dict[str, Any] = {}

        async def refunded() -> bool:
            nonlocal view
            view = await shop.order(client, order_id, token)  # refunded or partially (the shipping rule is 15's)
            return view["status"] in ("refunded", "partially_refunded") and view["refunded"]["amount"] >= 3000

        await wait_until(refunded, timeout=60, message=lambda: f"return refunded: {view}")
        assert await _stock_is(client, shop, product_id, on_hand=5, reserved=0)


async def _stock_is(client: httpx.AsyncClient, shop: Shop, product_id: str, *, on_hand: int, reserved: int) -> bool:
    stock = await stock_of(client, shop, product_id)
    return (stock["stock_on_hand"], stock["stock_reserved"]) == (on_hand, reserved)


async def _carrier(client: httpx.AsyncClient, shop: Shop, *, deliver_after_s: float) -> None:
    r = await client.put(
        shop.url("shipping") + "/v1/admin/carrier",
        json={"dispatch_after_s": 2, "deliver_after_s": deliver_after_s},
        headers={"Authorization": f"Bearer {ADMIN['shipping']}"},
    )
    assert r.status_code == 200, r.text


async def _dispatched(client: httpx.AsyncClient, shop: Shop, order_id: str) -> bool:
    r = await client.get(shop.url("shipping") + f"/v1/orders/{order_id}/shipment")
    return r.status_code == 200 and r.json()["status"] in ("dispatched", "delivered")
