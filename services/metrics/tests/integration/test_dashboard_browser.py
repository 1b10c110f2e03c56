"""Headless Chromium (the testkit's: Playwright driving Debian's `chromium`) opens the dashboard, sees
the funnel and the tiles, and sees them change live."""

from __future__ import annotations

import json
from typing import Any

import pytest

from kasse_metrics.main import create_app
from kasse_metrics.settings import MetricsSettings
from kasse_testkit import Namespace, TestPublisher, served, wait_until
from kasse_testkit.browser import chromium

pytestmark = pytest.mark.integration

READ_PAGE = """() => JSON.stringify({
  steps: [...document.querySelectorAll('#funnel rect')].map(r => [r.dataset.step, +r.dataset.sessions]),
  tiles: Object.fromEntries([...document.querySelectorAll('[data-kpi]')]
           .map(t => [t.dataset.kpi, t.querySelector('.v').textContent])),
  status: document.getElementById('status').textContent,
})"""


async def test_dashboard_shows_the_funnel_and_tiles_and_updates_live(
    settings_for: Any, namespace: Namespace, test_publisher: TestPublisher, scenario_for: Any
) -> None:
    scenario = scenario_for(namespace.token)
    async with served(create_app(settings_for(MetricsSettings))) as base, chromium() as browser:
        page = await browser.new_page()
        await page.goto(f"{base}/dashboard")

        async def page_state() -> dict[str, Any] | None:
            raw = await page.evaluate(READ_PAGE)
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
