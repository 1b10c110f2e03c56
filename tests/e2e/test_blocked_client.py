"""A client blocked by fraud screening stays blocked when it changes X-Forwarded-For (issue 13).

Through the real chain: cart (no proxy trusted, as by default) -> OrderPlaced.client_ip -> payment's
per-IP velocity rule. Before issue 13 the header chose the IP fraud screening saw, so a client blocked
after N orders got the next one through by sending another X-Forwarded-For. Here the shop trusts no
proxy (the journeys' shop trusts 127.0.0.1, standing in for the storefront): the identity is the socket's.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from kasse_testkit import wait_until
from kasse_testkit.e2e.journeys import Shopper
from kasse_testkit.e2e.shop import ADMIN, Shop, running_shop
from kasse_testkit.infrastructure import Infrastructure

from .test_order_journeys import ready_product

pytestmark = pytest.mark.e2e

MAX_ORDERS_PER_IP = 2


@pytest.fixture(scope="module")
async def shop(kasse_infra: Infrastructure, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Shop]:
    async with running_shop(
        kasse_infra,
        tmp_path_factory.mktemp("shop"),
        settings={
            "KASSE_CART_TRUSTED_PROXIES": "",  # the default of a deployment: no proxy configured
            "KASSE_PAYMENT_FRAUD_MAX_ORDERS_PER_IP": str(MAX_ORDERS_PER_IP),
        },
    ) as running:
        yield running


async def test_a_client_blocked_after_n_orders_stays_blocked_whatever_x_forwarded_for_says(shop: Shop) -> None:
    async with httpx.AsyncClient(timeout=30) as admin:
        product_id = await ready_product(admin, shop, "E2E-BLOCKED", stock=10)
        placed: list[dict[str, str]] = []
        for n in range(MAX_ORDERS_PER_IP + 1):
            # Each order claims another client (and another e-mail, so only the IP can link them).
            forged = {"X-Forwarded-For": f"203.0.113.{n + 10}"}
            async with httpx.AsyncClient(timeout=30, headers=forged) as client:
                shopper = Shopper(client, shop.url("catalog"), shop.url("cart"), email=f"client{n}@example.com")
                order = await shopper.buy(product_id)
            placed.append(order)
            # Screened one after another, as a script placing orders back to back would be.
            await wait_until(
                lambda o=order["order_id"]: _screened(admin, shop, o), timeout=60, message="fraud screening"
            )

        *allowed, last = placed
        for order in allowed:
            assert (await shop.payment(admin, order["order_id"]))["fraud"]["outcome"] == "allow"
        view = await shop.wait_for_status(admin, last["order_id"], last["order_token"], "cancelled")
        assert view["cancellation_reason"] == "fraud_suspected"

        r = await admin.get(
            shop.url("payment") + "/v1/admin/fraud-decisions",
            params={"outcome": "block"},
            headers={"Authorization": f"Bearer {ADMIN['payment']}"},
        )
        assert r.status_code == 200, r.text
        (decision,) = r.json()
        assert decision["order_id"] == last["order_id"]
        (velocity,) = [reason for reason in decision["reasons"] if reason["rule"] == "velocity_ip"]
        # The socket's address, never one of the forged ones.
        assert "IP 127.0.0.1 " in velocity["detail"] and "203.0.113." not in velocity["detail"], velocity


async def _screened(client: httpx.AsyncClient, shop: Shop, order_id: str) -> bool:
    payment = await shop.payment(client, order_id)
    return bool(payment.get("fraud") and payment["fraud"].get("outcome"))
