"""The HTTP surface (OpenAPI, errors, SSE, Prometheus) and two instances sharing the partitions."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from kasse_contracts.base import Channel, Money
from kasse_contracts.events import ProductViewed
from kasse_metrics.main import create_app
from kasse_metrics.settings import MetricsSettings
from kasse_testkit import Namespace, TestPublisher, running_app, wait_until

pytestmark = pytest.mark.integration


async def events_counted(client: httpx.AsyncClient, at: str) -> int:
    r = await client.get("/v1/kpis", params={"window": "all", "at": at})
    assert r.status_code == 200, r.text
    return int(r.json()["events"])


async def test_openapi_documents_every_kpi_path_and_bad_parameters_are_clear_422s(settings_for: Any) -> None:
    async with running_app(create_app(settings_for(MetricsSettings))) as client:
        spec = (await client.get("/openapi.json")).json()
        assert {
            "/v1/kpis",
            "/v1/kpis/funnel",
            "/v1/kpis/breakdown/{dimension}",
            "/v1/kpis/timeseries",
            "/v1/kpis/stream",
            "/v1/kpis/events",
            "/dashboard",
        } <= set(spec["paths"])
        assert spec["paths"]["/v1/kpis"]["get"]["summary"]
        assert "KpiReport" in spec["components"]["schemas"]

        for path, params in (
            ("/v1/kpis", {"window": "3m"}),
            ("/v1/kpis", {"at": "yesterday"}),
            ("/v1/kpis/breakdown/colour", {}),
            ("/v1/kpis/funnel", {"channel": "tv"}),
            ("/v1/kpis/timeseries", {"minutes": 0}),
        ):
            r = await client.get(path, params=params)
            assert r.status_code == 422, (path, params, r.text)
            assert r.headers["content-type"].startswith("application/problem+json")
            assert r.json()["detail"]

        page = await client.get("/dashboard")
        assert page.status_code == 200 and "EventSource" in page.text


async def test_sse_stream_sends_a_new_report_when_events_arrive_and_prometheus_shows_the_kpis(
    settings_for: Any, namespace: Namespace, test_publisher: TestPublisher, scenario_for: Any
) -> None:
    scenario = scenario_for(namespace.token)
    async with running_app(create_app(settings_for(MetricsSettings))) as client:
        first = scenario.by_shopper["s1"]

        async def read_stream() -> list[dict[str, Any]]:
            r = await client.get("/v1/kpis/stream", params={"window": "all", "limit": 2})
            assert r.headers["content-type"].startswith("text/event-stream")
            return [
                json.loads(block.split("data: ", 1)[1])
                for block in r.text.split("\n\n")
                if block.startswith("event: kpis")
            ]

        reader = asyncio.create_task(read_stream())
        for record in first:
            await test_publisher.publish_record(record)
        updates = await asyncio.wait_for(reader, timeout=30)
        assert len(updates) == 2
        assert updates[0]["version"] < updates[1]["version"]
        assert updates[1]["report"]["events"] > updates[0]["report"]["events"]

        await wait_until(lambda: events_counted(client, scenario.at.isoformat()), timeout=20)

        async def all_counted() -> bool:
            return await events_counted(client, scenario.at.isoformat()) == len(first)

        await wait_until(all_counted, timeout=20, message="s1's events counted")
        text = (await client.get("/metrics")).text
        assert 'kasse_metrics_funnel_sessions{step="delivered",window="all"} 1.0' in text
        assert 'kasse_metrics_revenue_minor{currency="EUR",window="all"} 5000.0' in text
        assert 'kasse_metrics_conversion_rate{window="all"} 1.0' in text
        assert "kasse_metrics_consumer_lag{" in text
        assert "kasse_metrics_events_per_second" in text
        assert "kasse_metrics_dead_lettered_total 0.0" in text
        assert "process_resident_memory_bytes " in text and "python_gc_collections_total{" in text
        assert "kasse_metrics_sessions_held 1.0" in text
        counts = (await client.get("/v1/kpis/events", params={"window": "all", "at": scenario.at.isoformat()})).json()
        assert counts["total"] == len(first) and counts["by_type"]["ProductViewed"] == 1


@pytest.mark.parametrize("router_process", [True, False], ids=["router-process", "router-in-process"])
async def test_two_instances_share_the_partitions_and_each_serves_the_merged_numbers(
    settings_for: Any,
    namespace: Namespace,
    test_publisher: TestPublisher,
    scenario_for: Any,
    assert_report_matches: Any,
    router_process: bool,
) -> None:
    scenario = scenario_for(namespace.token)
    at = scenario.at.isoformat()
    settings = settings_for(MetricsSettings, router_process=router_process)
    app_a, app_b = create_app(settings), create_app(settings)
    async with running_app(app_a) as a, running_app(app_b) as b:
        consumers = [app_a.state.router_consumer, app_b.state.router_consumer]

        def split() -> bool:
            owned = [set(c.next_offsets) for c in consumers]
            return all(owned) and not (owned[0] & owned[1])

        await wait_until(split, timeout=30, message="both instances own partitions")
        for record in scenario.all_records():
            await test_publisher.publish_record(record)
        total = len(scenario.all_records())
        for client in (a, b):

            async def counted(client: httpx.AsyncClient = client) -> bool:
                return await events_counted(client, at) == total

            await wait_until(counted, timeout=30, message="all events counted")
            for window in ("all", "5m", "1h", "24h"):
                r = await client.get("/v1/kpis", params={"window": window, "at": at})
                assert_report_matches(r.json(), scenario.expected(window))
        # Each instance ingested its share (a late rebalance may make one re-read a few records, which
        # the dedupe absorbs), yet both answered with the whole group's numbers. (A router in its own process
        # reports its counts every STATUS_INTERVAL_S: they may trail the KPIs by that long.)
        await wait_until(
            lambda: sum(c.records_total for c in consumers) >= total, timeout=10, message="routers' counts reported"
        )
        ingested = [c.records_total for c in consumers]
        assert all(0 < n < total for n in ingested) and sum(ingested) >= total, ingested


def _gauge(text: str, name: str) -> float:
    return float(next(line.split()[-1] for line in text.splitlines() if line.startswith(name + " ")))


async def test_two_instances_each_hold_about_half_the_sessions_and_either_answers_for_all(
    settings_for: Any, namespace: Namespace, test_publisher: TestPublisher
) -> None:
    """Partitioned state: the sessions are spread over the internal partitions, each instance holds only
    its partitions' sessions, and reads merge the other instance's published aggregates."""
    sessions = 240
    at = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=1)
    settings = settings_for(MetricsSettings)
    app_a, app_b = create_app(settings), create_app(settings)
    async with running_app(app_a) as a, running_app(app_b) as b:
        held = [app_a.state.partitions, app_b.state.partitions]

        def split() -> bool:
            owned = [set(p.parts) for p in held]
            return all(owned) and not (owned[0] & owned[1]) and len(owned[0] | owned[1]) == 6

        await wait_until(split, timeout=30, message="both instances own internal partitions")
        for i in range(sessions):
            await test_publisher.publish(
                ProductViewed(
                    occurred_at=at,
                    session_id=f"{namespace.token}-v{i}",
                    product_id="prod_a",
                    sku="A",
                    category="kitchen",
                    price=Money(amount=100, currency="EUR"),
                    channel=Channel.SEARCH,
                )
            )
        for client in (a, b):

            async def all_viewed(client: httpx.AsyncClient = client) -> bool:
                r = (await client.get("/v1/kpis", params={"window": "all"})).json()
                return bool(r["funnel"][0]["sessions"] == sessions)

            await wait_until(all_viewed, timeout=30, message="every session counted by either instance")
        counts = [_gauge((await c.get("/metrics")).text, "kasse_metrics_sessions_held") for c in (a, b)]
        assert sum(counts) == sessions, counts  # disjoint: each session held once in the group
        assert all(0.25 * sessions <= n <= 0.75 * sessions for n in counts), counts  # about half each
        assert [_gauge((await c.get("/metrics")).text, "kasse_metrics_partitions_held") for c in (a, b)] == [3.0, 3.0]
