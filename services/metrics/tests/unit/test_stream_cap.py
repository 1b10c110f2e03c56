"""The SSE routes serve at most `max_kpi_streams` at once: one more gets 429 + Retry-After, and a
finished stream frees its slot. The KPI and experiment streams share the one cap (issue 17)."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any, cast

import httpx
import pytest
from fastapi import FastAPI

from kasse_common.http import install_problem_handlers
from kasse_common.ratelimit import ConnectionCap
from kasse_metrics.application.experiments import ExperimentReports
from kasse_metrics.application.queries import KpiQueries
from kasse_metrics.entrypoints.experiments_http import build_experiment_router
from kasse_metrics.entrypoints.http import build_router
from kasse_testkit import wait_until

pytestmark = pytest.mark.unit


class HeldQueries:
    """KPI queries whose first change arrives only when the test says so (a stream held open)."""

    stream_min_interval_s = 0.0

    def __init__(self) -> None:
        self.changed = asyncio.Event()

    async def wait_for_change(self, seen_version: int, timeout: float) -> int | None:
        await self.changed.wait()
        return seen_version + 1

    def report(self, window: str, at: datetime | None) -> dict[str, Any]:
        return {"window": window}

    def breakdown(self, dimension: str, window: str, at: datetime | None, limit: int) -> list[dict[str, Any]]:
        return []


async def test_a_stream_beyond_the_cap_gets_429_and_a_finished_one_frees_its_slot() -> None:
    queries = HeldQueries()
    cap = ConnectionCap(1, retry_after_s=5)
    app = FastAPI()
    install_problem_handlers(app)
    app.include_router(build_router(cast(KpiQueries, queries), cap))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t", timeout=10) as client:
        held = asyncio.create_task(client.get("/v1/kpis/stream", params={"limit": 1}))
        await wait_until(lambda: cap.open == 1, timeout=5)
        refused = await client.get("/v1/kpis/stream", params={"limit": 1})
        assert refused.status_code == 429
        assert refused.headers["content-type"] == "application/problem+json"
        assert refused.headers["Retry-After"] == "5"
        queries.changed.set()
        finished = await held
        assert finished.status_code == 200 and "event: kpis" in finished.text
        assert cap.open == 0
        again = await client.get("/v1/kpis/stream", params={"limit": 1})
        assert again.status_code == 200


class HeldReports:
    """Experiment reports whose first change arrives only when the test says so."""

    stream_min_interval_s = 0.0

    def __init__(self) -> None:
        self.changed = asyncio.Event()

    async def wait_for_change(self, seen_version: int, timeout: float) -> int | None:
        await self.changed.wait()
        return seen_version + 1

    def reports(self) -> list[dict[str, Any]]:
        return []


async def test_the_experiment_stream_is_under_the_same_cap_as_the_kpi_stream() -> None:
    queries, reports = HeldQueries(), HeldReports()
    cap = ConnectionCap(2, retry_after_s=5)
    app = FastAPI()
    install_problem_handlers(app)
    app.include_router(build_router(cast(KpiQueries, queries), cap))
    app.include_router(build_experiment_router(cast(ExperimentReports, reports), cap))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t", timeout=10) as client:
        kpi_stream = asyncio.create_task(client.get("/v1/kpis/stream", params={"limit": 1}))
        experiment_stream = asyncio.create_task(client.get("/v1/experiments/stream", params={"limit": 1}))
        await wait_until(lambda: cap.open == 2, timeout=5)
        # The cap is full of one stream of each kind: a third of either kind is refused.
        for path in ("/v1/experiments/stream", "/v1/kpis/stream"):
            refused = await client.get(path, params={"limit": 1})
            assert refused.status_code == 429, path
            assert refused.headers["content-type"] == "application/problem+json"
            assert refused.headers["Retry-After"] == "5"
        reports.changed.set()
        finished = await experiment_stream
        assert finished.status_code == 200 and "event: experiments" in finished.text
        assert cap.open == 1  # the finished experiment stream freed its slot, the KPI stream holds its own
        again = await client.get("/v1/experiments/stream", params={"limit": 1})
        assert again.status_code == 200 and "event: experiments" in again.text
        queries.changed.set()
        assert (await kpi_stream).status_code == 200
        assert cap.open == 0
