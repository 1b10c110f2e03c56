"""The metrics service's KPIs equal the journeys actually run through the other four services."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from kasse_testkit import wait_until
from kasse_testkit.e2e.journeys import Shopper
from kasse_testkit.e2e.shop import Shop, running_shop
from kasse_testkit.infrastructure import Infrastructure

from .test_order_journeys import pay, ready_product

pytestmark = pytest.mark.e2e

STEPS = ["viewed", "added_to_cart", "checkout_started", "order_placed", "paid", "shipped", "delivered"]


@pytest.fixture(scope="module")
async def counted_shop(kasse_infra: Infrastructure, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Shop]:
    # A shop of its own: the funnel counts every session the metrics service ever saw.
    async with running_shop(kasse_infra, tmp_path_factory.mktemp("counted")) as shop:
        yield shop


async def test_the_funnel_and_revenue_equal_the_journeys_run(counted_shop: Shop) -> None:
    shop = counted_shop
    async with httpx.AsyncClient(timeout=30) as client:
        product_id = await ready_product(client, shop, "E2E-KPI", stock=20, price=2000)

        def shopper() -> Shopper:
            return Shopper(client, shop.url("catalog"), shop.url("cart"))

        async def to_checkout(s: Shopper, quantity: int = 1) -> None:
            await s.view(product_id)
            assert (await s.add(product_id, quantity)).status_code in (200, 201)
            await s.checkout()

        only_viewed = shopper()
        await only_viewed.view(product_id)
        left_cart = shopper()
        await left_cart.view(product_id)
        assert (await left_cart.add(product_id)).status_code in (200, 201)
        left_at_checkout = shopper()
        await to_checkout(left_at_checkout)

        paid_totals: list[int] = []
        delivered: list[tuple[str, str]] = []
        for quantity, succeed in ((1, True), (1, False), (3, True)):
            buyer = shopper()
            await to_checkout(buyer, quantity)
            placed = await buyer.place_order()
            await shop.wait_for_status(client, placed["order_id"], placed["order_token"], "stock_reserved")
            await pay(client, shop, placed["order_id"], succeed=succeed)
            if succeed:
                paid_totals.append(placed["total"]["amount"])
                delivered.append((placed["order_id"], placed["order_token"]))
            else:
                await shop.wait_for_status(client, placed["order_id"], placed["order_token"], "cancelled")
        for order_id, token in delivered:
            await shop.wait_for_status(client, order_id, token, "delivered", timeout=90)

        expected = dict(zip(STEPS, [6, 5, 4, 3, 2, 2, 2], strict=True))
        report: dict[str, Any] = {}

        async def funnel_matches() -> bool:
            nonlocal report
            report = (await client.get(shop.url("metrics") + "/v1/kpis")).json()
            # The metrics service ingests every partition on its own: the funnel can be complete while the
            # declined order's PaymentFailed (another partition) is still on its way. Wait for both.
            return (
                {step["step"]: step["sessions"] for step in report["funnel"]} == expected
                and report["payment_failure_rate"]["numerator"] >= 1
                and report["revenue"].get("EUR", {}).get("orders_paid", 0) >= 2
                and report["median_seconds_payment_to_shipment"] is not None
            )

        await wait_until(funnel_matches, timeout=60, message=lambda: f"funnel and rates {report}")

    assert report["conversion_rate"]["numerator"] == 2 and report["conversion_rate"]["denominator"] == 6
    eur = report["revenue"]["EUR"]
    assert eur["revenue"] == sum(paid_totals)
    assert eur["orders_paid"] == 2
    assert eur["average_order_value"] == (2 * sum(paid_totals) + 2) // 4  # half up, in cents
    assert report["payment_failure_rate"]["numerator"] == 1
    assert report["fraud_block_rate"]["numerator"] == 0
    assert report["refund_rate"]["numerator"] == 0
    assert report["median_seconds_payment_to_shipment"] is not None
