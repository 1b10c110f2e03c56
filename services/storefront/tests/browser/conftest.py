"""Browser tests: the real services as processes (kasse_testkit's e2e shop, with the storefront) and
Playwright driving Debian's Chromium (Playwright's own browser download cannot work here)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, Page

from kasse_catalog.seed import sample_catalog
from kasse_testkit.browser import chromium
from kasse_testkit.e2e.shop import ADMIN, Shop, running_shop
from kasse_testkit.infrastructure import Infrastructure

AXE = Path(__file__).parent / "node_modules" / "axe-core" / "axe.min.js"
COUPON = "WILLKOMMEN10"


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as launched:
        yield launched


@pytest.fixture(scope="module")
async def storefront(kasse_infra: Infrastructure, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Shop]:
    async with running_shop(kasse_infra, tmp_path_factory.mktemp("shop"), with_storefront=True) as shop:
        async with httpx.AsyncClient(timeout=120) as client:  # the catalogue import is slow on a loaded machine
            r = await client.post(
                shop.url("catalog") + "/v1/admin/products/import",
                json=sample_catalog(),
                headers={"Authorization": f"Bearer {ADMIN['catalog']}"},
            )
            assert r.status_code == 200, r.text
            r = await client.post(
                shop.url("cart") + "/v1/admin/coupons",
                json={"code": COUPON, "kind": "percent", "value": 10},
                headers={"Authorization": f"Bearer {ADMIN['cart']}"},
            )
            assert r.status_code == 201, r.text
        yield shop


async def axe(page: Page) -> list[dict[str, Any]]:
    """axe-core's serious and critical violations on the page as it is now."""
    if not AXE.exists():
        pytest.fail(f"{AXE} is missing: run `make browser-deps` (npm ci of the pinned axe-core)")
    # evaluate, not a script tag: the shop's CSP (rightly) refuses inline scripts.
    await page.evaluate(AXE.read_text() + "\n;undefined")
    result = await page.evaluate("async () => JSON.stringify(await axe.run(document))")
    violations = json.loads(result)["violations"]
    return [
        {"id": v["id"], "impact": v["impact"], "nodes": [n["target"] for n in v["nodes"]][:3]}
        for v in violations
        if v["impact"] in ("serious", "critical")
    ]
