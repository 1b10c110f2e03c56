"""The KPI stream route serves at most `max_kpi_streams` at once: one more gets 429 + Retry-After,
and a finished stream frees its slot."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any, cast

import httpx
import pytest
from fastapi import FastAPI

from kasse_common.http import install_problem_handlers
from kasse_common.ratelimit import ConnectionCap
from kasse_metrics.application.queries import KpiQueries
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
