"""The simulated shoppers (deploy/shoppers) drive real journeys through the real services, and the
decline-rate fault switch changes what happens to new orders.

Locust runs as a subprocess, autostarted and bounded (a few users, --run-time), its web UI (with the
fault switches) on a free port of 127.0.0.1; everything it calls is the e2e shop on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from kasse_catalog.seed import sample_catalog
from kasse_testkit import free_port, wait_until
from kasse_testkit.e2e.shop import ADMIN, INTERNAL_TOKEN, SERVICES, WEBHOOK_SECRET, Shop

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
SHOPPERS = REPO / "deploy" / "shoppers"
RUN_TIME_S = 100  # Locust stops by itself after this, whatever happens to the test (which stops it sooner)

# A funnel that converts quickly, so a short run shows every kind of journey, with few product views:
# the catalog consumes every ProductViewed on the consumer that also reserves stock.
FAST_MIX = {
    "views_max": 2,
    "p_follow_recommendation": 0.1,
    "p_next_page": 0.0,
    "p_add_to_cart": 0.8,
    "p_checkout": 0.75,
    "p_place_order": 0.95,
    "p_fraudster": 0.0,
    "p_cancel_before_paying": 0.0,
    "p_returning": 0.0,
    "p_storefront": 0.0,  # this shop runs no storefront: every visit uses the JSON APIs
    "p_review": 0.6,
    "p_return": 0.3,
    "return_received_after_s": 1.0,
    "decline_rate": 0.0,
    "think_min_s": 0.05,
    "think_max_s": 0.2,
    "visit_gap_min_s": 0.2,
    "visit_gap_max_s": 1.0,
    "pay_timeout_s": 20.0,
}


def shoppers_env(shop: Shop, mix_file: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KASSE_")}
    for name in SERVICES:
        env[f"KASSE_SHOPPERS_{name.upper()}_URL"] = shop.url(name)
        env[f"KASSE_{name.upper()}_ADMIN_TOKEN"] = ADMIN[name]
    env["KASSE_PAYMENT_INTERNAL_TOKEN"] = INTERNAL_TOKEN
    env["KASSE_PAYMENT_STRIPE_WEBHOOK_SECRET"] = WEBHOOK_SECRET
    env["KASSE_SHOPPERS_MIX_FILE"] = str(mix_file)
    return env


@pytest.fixture
async def catalogue(shop: Shop) -> None:
    async with httpx.AsyncClient(timeout=60) as client:
        await load_catalogue(client, shop)


@pytest.fixture
def locust(shop: Shop, catalogue: None, tmp_path: Path) -> Iterator[str]:
    """Locust with 3 users against the e2e shop; yields its web UI's URL."""
    mix_file = tmp_path / "mix.json"
    mix_file.write_text(json.dumps(FAST_MIX))
    port = free_port()
    log = open(tmp_path / "locust.log", "wb")
    command = [
        *(sys.executable, "-m", "locust", "-f", str(SHOPPERS / "locustfile.py")),
        *("--host", shop.url("catalog"), "--web-host", "127.0.0.1", "--web-port", str(port)),
        *("--autostart", "--autoquit", "0", "--users", "3", "--spawn-rate", "3"),
        *("--run-time", f"{RUN_TIME_S}s", "--only-summary"),
    ]
    process = subprocess.Popen(
        command, env=shoppers_env(shop, mix_file), cwd=REPO, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
        log.close()
        print((tmp_path / "locust.log").read_text(errors="replace")[-3000:])


async def load_catalogue(client: httpx.AsyncClient, shop: Shop) -> None:
    data = sample_catalog()
    per_category: dict[str, int] = {}
    products = []
    for product in data["products"]:  # three of each category: enough to browse, quick to import
        per_category[product["category"]] = per_category.get(product["category"], 0) + 1
        if per_category[product["category"]] <= 3:
            products.append({**product, "stock_on_hand": 500})  # journeys, not selling out, are tested here
    data = {"products": products}
    r = await client.post(
        shop.url("catalog") + "/v1/admin/products/import",
        json=data,
        headers={"Authorization": f"Bearer {ADMIN['catalog']}"},
    )
    assert r.status_code == 200, r.text
    r = await client.get(shop.url("catalog") + "/v1/products", params={"page_size": 100})
    ids = [p["product_id"] for p in r.json()["items"]]
    assert ids

    async def cart_knows(product_id: str) -> bool:
        created = await client.post(shop.url("cart") + "/v1/carts", json={})
        cart = created.json()
        added = await client.post(
            shop.url("cart") + f"/v1/carts/{cart['cart_id']}/items",
            json={"product_id": product_id, "quantity": 1},
            headers={"X-Cart-Token": cart["cart_token"]},
        )
        return added.status_code in (200, 201)

    # The cart prices from its read model of ProductChanged: wait until the catalogue reached it.
    await wait_until(lambda: cart_knows(ids[-1]), timeout=30, interval=0.5, message="the cart to know the products")


async def orders(client: httpx.AsyncClient, shop: Shop) -> list[dict[str, Any]]:
    r = await client.get(
        shop.url("cart") + "/v1/admin/orders",
        params={"limit": 200},
        headers={"Authorization": f"Bearer {ADMIN['cart']}"},
    )
    assert r.status_code == 200, r.text
    return list(r.json())


async def kpis(client: httpx.AsyncClient, shop: Shop) -> dict[str, int]:
    r = await client.get(shop.url("metrics") + "/v1/kpis")
    assert r.status_code == 200, r.text
    return {step["step"]: step["sessions"] for step in r.json()["funnel"]}


def placed_at(order: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(order["placed_at"].replace("Z", "+00:00"))


PAID = ("paid", "shipped", "delivered", "partially_refunded", "refunded")


@pytest.mark.timeout(180)
async def test_shoppers_run_whole_journeys_and_the_decline_switch_fails_new_orders(shop: Shop, locust: str) -> None:
    async with httpx.AsyncClient(timeout=30) as client:
        await wait_until(
            lambda: _answers(client, locust + "/kasse/stats"), timeout=30, interval=0.5, message="Locust's web UI"
        )

        # Real journeys: orders placed, paid (through the simulator's signed webhooks) and delivered.
        seen: list[dict[str, Any]] = []

        async def delivered() -> bool:
            nonlocal seen
            seen = await orders(client, shop)
            return any(o["status"] in ("delivered", "partially_refunded", "refunded") for o in seen)

        await wait_until(
            delivered,
            timeout=40,
            interval=1,
            message=lambda: f"a delivered order; orders: {[o['status'] for o in seen]}",
        )
        assert any(o["status"] in PAID for o in seen)
        funnel: dict[str, int] = {}

        async def funnel_counted() -> bool:  # metrics ingests the browsing topics on its own: it may lag
            nonlocal funnel
            funnel = await kpis(client, shop)
            return funnel["viewed"] > 0 and funnel["added_to_cart"] > 0 and funnel["checkout_started"] > 0

        await wait_until(funnel_counted, timeout=30, interval=0.5, message=lambda: f"the funnel counted: {funnel}")

        # Flip the decline rate to 100% through the operator's CLI; new payments fail from now on.
        cli = await asyncio.create_subprocess_exec(
            *(sys.executable, str(SHOPPERS / "faults.py"), "--url", locust, "decline-rate", "1.0"),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        output, _ = await asyncio.wait_for(cli.communicate(), timeout=30)
        assert cli.returncode == 0, output.decode()
        switches = (await client.get(locust + "/kasse/faults")).json()
        assert switches["decline_rate"] == 1.0
        # Only now do new payments roll against 1.0: orders placed while the CLI was starting still
        # rolled against the old rate (under load that window is seconds long).
        flipped_at = datetime.now(UTC)

        # The rate was 0 before the flip (and no fraudsters): a payment_failed cancellation is the switch's.
        # Stock is reserved through Kafka first, which can take a while on a busy machine.
        latest: list[dict[str, Any]] = []

        async def declined() -> bool:
            nonlocal latest
            latest = await orders(client, shop)
            return any(o["status"] == "cancelled" and o["cancellation_reason"] == "payment_failed" for o in latest)

        await wait_until(
            declined,
            timeout=50,
            interval=1,
            message=lambda: f"an order cancelled for payment_failed: {[(o['status'], o['placed_at']) for o in latest]}",
        )
        after = [o for o in latest if placed_at(o) > flipped_at]
        assert not [o["order_id"] for o in after if o["status"] in PAID], "no order placed after the flip is paid"

        stats = (await client.get(locust + "/stats/requests")).json()
        requests = sum(s["num_requests"] for s in stats["stats"] if s["name"] != "Aggregated")
        failures = sum(s["num_failures"] for s in stats["stats"] if s["name"] != "Aggregated")
        assert requests > 50
        assert failures <= 0.05 * requests, stats["errors"]


async def _answers(client: httpx.AsyncClient, url: str) -> bool:
    try:
        return (await client.get(url)).status_code == 200
    except httpx.HTTPError:
        return False
