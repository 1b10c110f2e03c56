"""Headless Chromium opens the dashboard, sees the funnel and the tiles, and sees them change live.

Playwright for Python drives Debian's `chromium` (apt-get install -y chromium; Playwright's own
browser download cannot work here), as the storefront's browser tests do.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from playwright.async_api import Page, async_playwright

from kasse_metrics.main import create_app
from kasse_metrics.settings import MetricsSettings
from kasse_testkit import Namespace, TestPublisher, free_port, wait_until

pytestmark = pytest.mark.integration

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]

READ_PAGE = """() => JSON.stringify({
  steps: [...document.querySelectorAll('#funnel rect')].map(r => [r.dataset.step, +r.dataset.sessions]),
  tiles: Object.fromEntries([...document.querySelectorAll('[data-kpi]')]
           .map(t => [t.dataset.kpi, t.querySelector('.v').textContent])),
  status: document.getElementById('status').textContent,
})"""


@contextlib.asynccontextmanager
async def served(app: Any) -> AsyncIterator[str]:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="on"))
    task = asyncio.create_task(server.serve())
    try:
        await wait_until(lambda: server.started, timeout=30, message="uvicorn started")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30)


@contextlib.asynccontextmanager
async def chromium(tmp_path: Path) -> AsyncIterator[Page]:
    assert CHROMIUM, "chromium is not installed: apt-get update && apt-get install -y chromium"
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield await browser.new_page()
        finally:
            await browser.close()


async def test_dashboard_shows_the_funnel_and_tiles_and_updates_live(
    settings_for: Any, namespace: Namespace, test_publisher: TestPublisher, scenario_for: Any, tmp_path: Path
) -> None:
    scenario = scenario_for(namespace.token)
    async with served(create_app(settings_for(MetricsSettings))) as base, chromium(tmp_path) as browser:
        await browser.goto(f"{base}/dashboard")

        async def page_state() -> dict[str, Any] | None:
            raw = await browser.evaluate(READ_PAGE)
            return json.loads(raw) if raw else None

        async def rendered() -> dict[str, Any] | None:
            state = await page_state()
            return state if state and state["steps"] and state["status"].startswith("live") else None

        before = await wait_until(rendered, timeout=30, message="the dashboard rendered from the stream")
        assert [s for s, _ in before["steps"]] == [
            "viewed",
            "added_to_cart",
            "checkout_started",
            "order_placed",
            "paid",
            "shipped",
            "delivered",
        ]
        assert before["tiles"]["events"] == "0"
        assert {"sessions", "conversion", "revenue", "aov", "abandonment", "rating"} <= set(before["tiles"])

        for record in scenario.by_shopper["s1"] + scenario.by_shopper["s5"]:
            await test_publisher.publish_record(record)

        async def updated() -> dict[str, Any] | None:
            state = await page_state()
            total = len(scenario.by_shopper["s1"]) + len(scenario.by_shopper["s5"])
            return state if state and state["tiles"]["events"] == str(total) else None

        after = await wait_until(updated, timeout=30, message="the dashboard showed the new events")
        assert dict(after["steps"]) == {
            "viewed": 2,
            "added_to_cart": 2,
            "checkout_started": 2,
            "order_placed": 2,
            "paid": 1,
            "shipped": 1,
            "delivered": 1,
        }
        assert after["tiles"]["conversion"] == "50.0 %"
        assert after["tiles"]["revenue"] == "50.00 EUR"
