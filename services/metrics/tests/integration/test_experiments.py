"""Experiments in the metrics service on the real stack: the admin API publishes the definitions,
exposures and outcomes are counted once per session per variant, API, SSE and Prometheus show them."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from kasse_common.experiments import assign_variant, exposure_event_id
from kasse_contracts import topics
from kasse_contracts.base import Money
from kasse_contracts.events import (
    ExperimentChanged,
    ExperimentExposed,
    ExperimentParameter,
    PaymentCaptured,
)
from kasse_metrics.main import create_app
from kasse_metrics.settings import MetricsSettings
from kasse_testkit import TestPublisher, running_app, wait_until
from kasse_testkit.samples import order_placed

pytestmark = pytest.mark.integration

TOKEN = "experiments-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
DEFINITION = {
    "experiment_id": "exp_free_shipping",
    "name": "Free shipping from 35 EUR",
    "hypothesis": "A lower threshold converts more carts",
    "parameter": "free_shipping_threshold",
    "variants": [{"name": "control", "weight": 50, "value": "5000"}, {"name": "low", "weight": 50, "value": "3500"}],
    "primary_metric": "conversion_rate",
    "guardrails": ["payment_failure_rate", "refund_rate"],
    "baseline": 0.1,
    "minimum_detectable_effect": 0.2,
}


async def report(client: httpx.AsyncClient, experiment_id: str) -> dict[str, Any]:
    r = await client.get(f"/v1/experiments/{experiment_id}")
    assert r.status_code == 200, r.text
    return dict(r.json())


async def test_define_start_refuse_weight_changes_and_count_exposures_once_per_session(
    settings_for: Any, topic_reader: Any, test_publisher: TestPublisher
) -> None:
    settings = settings_for(MetricsSettings, admin_token=TOKEN)
    async with (
        topic_reader(topics.EXPERIMENTS) as definitions_topic,
        running_app(create_app(settings)) as client,
    ):
        assert (await client.post("/v1/admin/experiments", json=DEFINITION)).status_code == 401
        bad = await client.post("/v1/admin/experiments", json={**DEFINITION, "baseline": 2}, headers=AUTH)
        assert bad.status_code == 422 and "baseline" in bad.json()["detail"]
        created = await client.post("/v1/admin/experiments", json=DEFINITION, headers=AUTH)
        assert created.status_code == 201, created.text
        assert created.json()["status"] == "draft"
        started = await client.post("/v1/admin/experiments/exp_free_shipping/start", headers=AUTH)
        assert started.status_code == 200 and started.json()["status"] == "running"

        heavier = {**DEFINITION, "variants": [{**DEFINITION["variants"][0], "weight": 30}, DEFINITION["variants"][1]]}
        refused = await client.put("/v1/admin/experiments/exp_free_shipping", json=heavier, headers=AUTH)
        assert refused.status_code == 409
        assert refused.headers["content-type"].startswith("application/problem+json")
        assert "weights" in refused.json()["detail"]
        assert (await client.get("/v1/admin/experiments/exp_free_shipping", headers=AUTH)).json()["revision"] == 2

        # The definitions reach the other services on the compacted topic, revision by revision.
        published = await definitions_topic.wait_for_events(ExperimentChanged, count=2)
        assert [(e.revision, e.status.value) for e in published] == [(1, "draft"), (2, "running")]

        # Shoppers: each session exposed in its (deterministic) variant; every exposure published
        # three times (another request, another service, a restart) with its derived id.
        weights = [("control", 50), ("low", 50)]
        sessions = [f"sess_{i}" for i in range(24)]
        variant_of = {s: assign_variant("exp_free_shipping", s, weights) for s in sessions}
        now = datetime.now(UTC)
        for _ in range(3):
            for s in sessions:
                exposure = ExperimentExposed(
                    occurred_at=now,
                    session_id=s,
                    experiment_id="exp_free_shipping",
                    revision=2,
                    variant=variant_of[s],
                    parameter=ExperimentParameter.FREE_SHIPPING_THRESHOLD,
                )
                await test_publisher.publish(exposure, event_id=exposure_event_id("exp_free_shipping", s))
        paying = sessions[:6]
        for i, s in enumerate(paying):
            order = order_placed(order_id=f"ord_exp_{i}", session_id=s)
            await test_publisher.publish(order)
            capture = PaymentCaptured(
                occurred_at=now,
                session_id=s,
                order_id=order.order_id,
                payment_intent_id=f"pi_{i}",
                amount=Money(amount=order.total.amount, currency="EUR"),
            )
            await test_publisher.publish(capture)
            await test_publisher.publish(capture)  # a duplicate publish with a new event id

        expected_sessions = {v: sum(1 for s in sessions if variant_of[s] == v) for v in ("control", "low")}
        expected_paid = {v: sum(1 for s in paying if variant_of[s] == v) for v in ("control", "low")}

        async def settled() -> dict[str, Any] | None:
            r = await report(client, "exp_free_shipping")
            got = {v["variant"]: (v["sessions"], v["funnel"][-1]["sessions"]) for v in r["variants"]}
            want = {v: (expected_sessions[v], expected_paid[v]) for v in ("control", "low")}
            return r if got == want else None

        r = await wait_until(settled, timeout=30)
        assert r["status"] == "running" and r["decision"] == "keep_running"
        low = r["variants"][1]
        assert low["comparison"]["always_valid_interval"] is not None
        assert low["conversion_rate"] == pytest.approx(expected_paid["low"] / expected_sessions["low"])
        assert r["planned_units_per_variant"] > 1000

        metrics = (await client.get("/metrics")).text
        low_labels = 'experiment="exp_free_shipping",variant="low"'
        assert f"kasse_metrics_experiment_sessions{{{low_labels}}} {expected_sessions['low']}.0" in metrics
        assert f'kasse_metrics_experiment_decision{{decision="keep_running",{low_labels}}} 1.0' in metrics

        # SSE: the stream sends the reports whenever they change, here when the experiment stops.
        version = (await client.get("/v1/experiments")).json()["version"]

        async def update_showing_the_stop() -> dict[str, Any]:
            # Other changes (late duplicates, the definition read back from Kafka) may come first:
            # follow the stream, one event per request, until a report shows the stop.
            seen = version
            while True:
                resp = await client.get("/v1/experiments/stream", params={"limit": 1, "since": seen})
                assert resp.headers["content-type"].startswith("text/event-stream")
                body = dict(json.loads(resp.text.split("data: ", 1)[1].split("\n\n", 1)[0]))
                if body["items"][0]["status"] == "stopped":
                    return body
                seen = body["version"]

        reader = asyncio.create_task(update_showing_the_stop())
        stopped = await client.post("/v1/admin/experiments/exp_free_shipping/stop", headers=AUTH)
        assert stopped.status_code == 200 and stopped.json()["status"] == "stopped"
        update = await asyncio.wait_for(reader, timeout=30)
        assert update["items"][0]["status"] == "stopped" and update["version"] > version
        assert (await client.post("/v1/admin/experiments/exp_free_shipping/start", headers=AUTH)).status_code == 409

        page = await client.get("/dashboard/experiments")
        assert page.status_code == 200 and "/v1/experiments/stream" in page.text
