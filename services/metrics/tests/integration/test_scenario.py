"""The scripted scenario on the real Kafka and FerretDB, through the service's HTTP API.

Known numbers of sessions per step, some records duplicated, the second part published out of order
(and a session two hours late), a malformed record, a restart of the service in the middle, then a
replay from the earliest offset into an empty database: every KPI exact at every stage.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from kasse_metrics.main import create_app
from kasse_metrics.settings import MetricsSettings
from kasse_testkit import Namespace, TestPublisher, running_app, wait_until

pytestmark = pytest.mark.integration

WINDOWS = ("all", "5m", "1h", "24h")


async def kpis(client: httpx.AsyncClient, window: str, at: str) -> dict[str, Any]:
    r = await client.get("/v1/kpis", params={"window": window, "at": at})
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


async def wait_for_events(client: httpx.AsyncClient, at: str, count: int) -> dict[str, Any]:
    async def reached() -> dict[str, Any] | None:
        report = await kpis(client, "all", at)
        assert report["events"] <= count, f"more events counted than published: {report['events']}"
        return report if report["events"] == count else None

    return await wait_until(reached, timeout=30, message=f"{count} events counted")


async def snapshot(client: httpx.AsyncClient, at: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for window in WINDOWS:
        out[window] = await kpis(client, window, at)
        for dim in ("product", "category", "channel"):
            r = await client.get(f"/v1/kpis/breakdown/{dim}", params={"window": window, "at": at})
            assert r.status_code == 200, r.text
            out[f"{window}/{dim}"] = r.json()
    r = await client.get("/v1/kpis/timeseries", params={"minutes": 180, "at": at})
    out["timeseries"] = r.json()
    return out


async def test_scripted_scenario_every_kpi_exact_through_duplicates_disorder_restart_and_replay(
    settings_for: Any,
    namespace: Namespace,
    test_publisher: TestPublisher,
    scenario_for: Any,
    assert_report_matches: Any,
) -> None:
    scenario = scenario_for(namespace.token)
    at = scenario.at.isoformat()
    settings = settings_for(MetricsSettings)
    first_part = scenario.first_part()

    async with running_app(create_app(settings)) as client:
        for record in first_part:
            await test_publisher.publish_record(record)
        await test_publisher.publish_record(scenario.duplicates()[0])
        await wait_for_events(client, at, len(first_part))

    # Restarted: what was counted before stays counted once; the rest arrives out of order.
    async with running_app(create_app(settings)) as client:
        for record in scenario.second_part():
            await test_publisher.publish_record(record)
        for record in scenario.duplicates():
            await test_publisher.publish_record(record)
        bad = scenario.reviews[0]
        await test_publisher.publish_raw(
            namespace.topic(bad.topic), b"{definitely not json", bad.key.encode(), {**bad.headers, "ce_id": "bad-1"}
        )
        await wait_for_events(client, at, len(scenario.all_records()))
        for window in WINDOWS:
            assert_report_matches(await kpis(client, window, at), scenario.expected(window))

        async def dead_lettered() -> bool:
            # At least once: a crash between the dead-letter publish and the offset write repeats it.
            text = (await client.get("/metrics")).text
            line = next(x for x in text.splitlines() if x.startswith("kasse_metrics_dead_lettered_total"))
            return float(line.split()[1]) >= 1

        await wait_until(dead_lettered, timeout=30, message="the malformed record dead-lettered")
        before = await snapshot(client, at)

    # A replay from the earliest offset into an empty database rebuilds exactly the same numbers.
    replay = settings_for(MetricsSettings, mongo_database=namespace.database("metrics-replay"))
    async with running_app(create_app(replay)) as client:
        await wait_for_events(client, at, len(scenario.all_records()))
        assert await snapshot(client, at) == before
