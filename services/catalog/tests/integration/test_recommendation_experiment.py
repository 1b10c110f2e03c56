"""The catalog honours an experiment on the recommendation strategy: a session's variant (the kit's
assignment rule, no call to metrics) decides which relations its recommendations use, and its exposure
is recorded once per session, however many recommendation calls it makes."""

from __future__ import annotations

from typing import Any

import pytest

from kasse_catalog.main import create_app
from kasse_catalog.settings import CatalogSettings
from kasse_contracts import topics
from kasse_contracts.events import ExperimentParameter
from kasse_testkit import running_app, samples, wait_until
from kasse_testkit.experiments import experiment_changed, exposed_once_each, sessions_by_variant

pytestmark = pytest.mark.integration

ADMIN = {"Authorization": "Bearer integration-admin"}
EXPERIMENT = "exp_reco_catalog"
WEIGHTS = [("bought", 1), ("popular", 1)]
STRATEGY = {"bought": "bought_together", "popular": "popular"}


def product(sku: str) -> dict[str, Any]:
    return {
        "sku": sku,
        "name": f"Product {sku.title()}",
        "category": "kitchen",
        "price": {"amount": 2500, "currency": "EUR"},
        "stock_on_hand": 100,
    }


async def test_each_session_gets_its_variants_strategy_and_one_exposure(
    settings_for: Any, test_publisher: Any, topic_reader: Any
) -> None:
    settings = settings_for(CatalogSettings, admin_token="integration-admin")
    async with topic_reader(topics.EXPOSURES) as exposures, running_app(create_app(settings)) as client:
        ids = {}
        for sku in ("PAN", "OIL", "APRON"):
            ids[sku] = (await client.post("/v1/admin/products", json=product(sku), headers=ADMIN)).json()["product_id"]
        for _ in range(2):
            await test_publisher.publish(
                samples.order_placed(lines=[samples.line_item(ids["PAN"], sku="PAN"), samples.line_item(ids["OIL"])])
            )
        pan = f"/v1/products/{ids['PAN']}/recommendations"

        async def learned() -> bool:
            r = await client.get(pan, params={"kind": "bought_together", "limit": 1})
            return [x["reason"] for x in r.json()["items"]] == ["bought_together"]

        await wait_until(learned, timeout=30, message="co-purchases learned from OrderPlaced")
        # Before the experiment: a session gets the blended default and no exposure is recorded.
        before = (await client.get(pan, headers={"X-Session-Id": "sess-reco-before"})).json()
        assert before["strategy"] == "blended"

        await test_publisher.publish(
            experiment_changed(
                EXPERIMENT,
                ExperimentParameter.RECOMMENDATION_STRATEGY,
                [(n, w, STRATEGY[n]) for n, w in WEIGHTS],
                name="bought together vs popular",
            )
        )
        variant_of = sessions_by_variant(EXPERIMENT, WEIGHTS, "sess-reco", 10)
        sessions = list(variant_of)

        async def folded() -> bool:
            r = await client.get(pan, params={"limit": 2}, headers={"X-Session-Id": sessions[0]})
            return bool(r.json()["strategy"] != "blended")

        await wait_until(folded, timeout=20, message="the catalog folded the running experiment")
        for s in sessions:
            session = {"X-Session-Id": s}
            for _ in range(2):  # repeated calls, product and session recommendations: one exposure
                r = (await client.get(pan, params={"limit": 2}, headers=session)).json()
                assert r["strategy"] == STRATEGY[variant_of[s]], s
                reasons = [x["reason"] for x in r["items"]]
                if variant_of[s] == "bought":
                    assert reasons[0] == "bought_together" and r["items"][0]["product"]["sku"] == "OIL", reasons
                else:
                    assert set(reasons) <= {"popular_in_category", "popular"} and reasons, reasons
                mine = (await client.get("/v1/recommendations", params={"limit": 2}, headers=session)).json()
                assert mine["strategy"] == STRATEGY[variant_of[s]]
        # An explicit kind is the caller's choice: no experiment, no exposure; nor without a session.
        explicit = await client.get(pan, params={"kind": "viewed_together"}, headers={"X-Session-Id": "sess-kind"})
        assert explicit.json()["strategy"] == "viewed_together"
        assert (await client.get(pan)).json()["strategy"] == "blended"

        for event in await exposed_once_each(exposures, EXPERIMENT, variant_of):
            assert event.parameter == ExperimentParameter.RECOMMENDATION_STRATEGY
