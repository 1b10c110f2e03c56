"""Headless Chromium (Playwright, Debian's chromium) defines and starts an experiment on the experiments
page, then watches it live until it shows the variant's always-valid interval and the decision."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import expect

from kasse_common.experiments import assign_variant, exposure_event_id
from kasse_contracts.base import Money
from kasse_contracts.events import ExperimentExposed, ExperimentParameter, PaymentCaptured
from kasse_metrics.main import create_app
from kasse_metrics.settings import MetricsSettings
from kasse_testkit import TestPublisher, served
from kasse_testkit.browser import chromium
from kasse_testkit.samples import order_placed

pytestmark = pytest.mark.integration

TOKEN = "browser-admin-token"


async def test_the_page_defines_starts_and_shows_a_running_experiment_with_its_interval_and_decision(
    settings_for: Any, test_publisher: TestPublisher, tmp_path: Path
) -> None:
    app = create_app(settings_for(MetricsSettings, admin_token=TOKEN))
    async with served(app) as base, chromium() as browser:
        page = await browser.new_page(viewport={"width": 1400, "height": 900})
        await page.goto(f"{base}/dashboard/experiments")
        await expect(page.locator("#status")).to_contain_text("live", timeout=30_000)

        # Define through the form, then start it with the page's button.
        await page.fill("#token", TOKEN)
        await page.fill("input[name=name]", "Free shipping from 35 EUR")
        await page.fill("input[name=hypothesis]", "A lower threshold converts more carts")
        await page.fill("input[name=variants]", "control:50:5000, low:50:3500")
        await page.click("#define button[type=submit]")
        await expect(page.locator("#define-result")).to_contain_text("defined exp_", timeout=15_000)
        experiment_id = (await page.locator("#define-result").text_content() or "").split()[1]
        card = page.locator(f'.experiment[data-experiment="{experiment_id}"]')
        await expect(card).to_contain_text("draft", timeout=15_000)
        await card.locator("button[data-act=start]").click()
        await expect(card).to_contain_text("running", timeout=15_000)

        # 110 sessions per variant; 11 pay in control (10 %), 66 in low (60 %). Published concurrently.
        by_variant: dict[str, list[str]] = {"control": [], "low": []}
        i = 0
        while min(len(v) for v in by_variant.values()) < 110:
            session = f"sess_browser_{i}"
            i += 1
            variant = assign_variant(experiment_id, session, [("control", 50), ("low", 50)])
            if len(by_variant[variant]) < 110:
                by_variant[variant].append(session)
        now = datetime.now(UTC)
        publishing = []
        for variant, sessions in by_variant.items():
            for n, session in enumerate(sessions):
                exposure = ExperimentExposed(
                    occurred_at=now,
                    session_id=session,
                    experiment_id=experiment_id,
                    revision=2,
                    variant=variant,
                    parameter=ExperimentParameter.FREE_SHIPPING_THRESHOLD,
                )
                publishing.append(test_publisher.publish(exposure, event_id=exposure_event_id(experiment_id, session)))
                if n < (11 if variant == "control" else 66):
                    order = order_placed(session_id=session)
                    publishing.append(test_publisher.publish(order))
                    publishing.append(
                        test_publisher.publish(
                            PaymentCaptured(
                                occurred_at=now,
                                session_id=session,
                                order_id=order.order_id,
                                payment_intent_id=f"pi_{session}",
                                amount=Money(amount=order.total.amount, currency="EUR"),
                            )
                        )
                    )
        await asyncio.gather(*publishing)

        low = card.locator('tr[data-variant="low"]')
        await expect(low.locator(".sessions")).to_have_text("110", timeout=60_000)
        await expect(card.locator(f"#decision-{experiment_id}")).to_have_text("variant better", timeout=30_000)
        assert await card.get_attribute("data-decision") == "variant_better"
        interval = await low.locator(".interval").text_content() or ""
        low_end, high_end = (float(x.strip().removesuffix(" pp")) for x in interval.strip("[]").split(","))
        assert 0 < low_end < 50 < high_end  # the true difference, 50 points, inside; 0 outside
        await expect(low.locator(".difference")).to_have_text("50.00 pp")
        await expect(card.locator("[data-srm=false]")).to_be_visible()
        await page.screenshot(path=str(tmp_path / "experiments.png"), full_page=True)
        assert (tmp_path / "experiments.png").stat().st_size > 10_000
