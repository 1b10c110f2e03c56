"""JSON API of the KPIs, the server-sent event stream and the dashboard page."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from enum import StrEnum
from importlib import resources
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, StreamingResponse
from pydantic import BaseModel, Field

from kasse_common.http import DateTimeIn, problem_responses
from kasse_common.ratelimit import ConnectionCap
from kasse_metrics.application.queries import KpiQueries

ERRORS: dict[int | str, dict[str, Any]] = {422: {"description": "Invalid parameter (problem+json)"}}


class WindowName(StrEnum):
    ALL = "all"
    FIVE_MINUTES = "5m"
    ONE_HOUR = "1h"
    ONE_DAY = "24h"


class Dimension(StrEnum):
    PRODUCT = "product"
    CATEGORY = "category"
    CHANNEL = "channel"


class Rate(BaseModel):
    numerator: int
    denominator: int
    value: float | None


class FunnelStep(BaseModel):
    step: str
    sessions: int
    conversion_from_first: float | None
    conversion_from_previous: float | None
    drop_off: int


class CurrencyRevenue(BaseModel):
    revenue: int
    orders_paid: int
    average_order_value: int | None


class Reviews(BaseModel):
    count: int
    average_rating: float | None


class KpiReport(BaseModel):
    window: str
    funnel: list[FunnelStep]
    conversion_rate: Rate
    revenue: dict[str, CurrencyRevenue]
    refunded: dict[str, int]
    cart_abandonment_rate: Rate
    payment_failure_rate: Rate
    fraud_block_rate: Rate
    refund_rate: Rate
    reviews: Reviews
    median_seconds_view_to_payment: float | None
    median_seconds_payment_to_shipment: float | None
    events: int
    projection_lag_records: int = Field(
        0, description="Records the group committed that this instance has not read yet (0: complete)"
    )


class FunnelResponse(BaseModel):
    window: str
    channel: str | None
    sessions: int
    steps: list[FunnelStep]


class BreakdownResponse(BaseModel):
    window: str
    dimension: str
    rows: list[dict[str, Any]]


class TimeseriesPoint(BaseModel):
    minute: str
    events: int
    views: int
    orders: int
    payments_captured: int
    revenue: dict[str, int]
    funnel: dict[str, int]


class TimeseriesResponse(BaseModel):
    points: list[TimeseriesPoint]


class EventCounts(BaseModel):
    window: str
    total: int
    by_type: dict[str, int]


class ChannelName(StrEnum):
    SEARCH = "search"
    RECOMMENDATION = "recommendation"
    CAMPAIGN = "campaign"
    SOCIAL = "social"
    EMAIL = "email"
    DIRECT = "direct"


WindowQ = Annotated[WindowName, Query(description="all, or a sliding window of whole event-time minutes")]
AtQ = Annotated[
    DateTimeIn | None,
    Query(description="End of the window (RFC 3339); default now. Lets a caller ask about the past exactly"),
]


def build_router(queries: KpiQueries, streams: ConnectionCap | None = None) -> APIRouter:
    """`streams`: the cap on concurrent KPI streams (429 + Retry-After beyond it); None: no cap."""
    streams = streams or ConnectionCap(None)
    router = APIRouter(prefix="/v1/kpis", tags=["kpis"], responses=ERRORS)

    @router.get("", response_model=KpiReport, summary="Every KPI for one window")
    async def kpis(window: WindowQ = WindowName.ALL, at: AtQ = None) -> dict[str, Any]:
        return queries.report(window.value, at)

    @router.get("/funnel", response_model=FunnelResponse, summary="The session funnel, optionally for one channel")
    async def funnel(
        window: WindowQ = WindowName.ALL, at: AtQ = None, channel: ChannelName | None = None
    ) -> dict[str, Any]:
        return queries.funnel(window.value, at, channel.value if channel else None)

    @router.get(
        "/breakdown/{dimension}",
        response_model=BreakdownResponse,
        summary="Views, add-to-carts, purchases and conversion by product or category; the funnel by channel",
    )
    async def breakdown(
        dimension: Dimension,
        window: WindowQ = WindowName.ALL,
        at: AtQ = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    ) -> dict[str, Any]:
        return {
            "window": window.value,
            "dimension": dimension.value,
            "rows": queries.breakdown(dimension.value, window.value, at, limit),
        }

    @router.get("/events", response_model=EventCounts, summary="Events counted per type (deduplicated), by event time")
    async def events(window: WindowQ = WindowName.ALL, at: AtQ = None) -> dict[str, Any]:
        counts = queries.event_counts(window.value, at)
        return {"window": window.value, "total": sum(counts.values()), "by_type": counts}

    @router.get("/timeseries", response_model=TimeseriesResponse, summary="Per-minute series, oldest first")
    async def timeseries(minutes: Annotated[int, Query(ge=1, le=1440)] = 60, at: AtQ = None) -> dict[str, Any]:
        return {"points": queries.timeseries(minutes, at)}

    @router.get(
        "/stream",
        summary="Server-sent events: a `kpis` event with the window's report whenever the numbers change",
        response_class=StreamingResponse,
        responses={200: {"content": {"text/event-stream": {}}}, **problem_responses(429)},
    )
    async def stream(
        request: Request,
        window: WindowQ = WindowName.FIVE_MINUTES,
        limit: Annotated[int | None, Query(ge=1, description="Close after this many events (tests)")] = None,
    ) -> StreamingResponse:
        async def events() -> AsyncIterator[bytes]:
            sent = 0
            version = -1
            last: dict[str, Any] | None = None
            while limit is None or sent < limit:
                if await request.is_disconnected():
                    return
                changed = await queries.wait_for_change(version, timeout=15.0)
                if changed is None:
                    yield b": keep-alive\n\n"
                    continue
                version = changed
                numbers = {
                    "report": queries.report(window.value, None),
                    "breakdown": {
                        "product": queries.breakdown("product", window.value, None, 10),
                        "channel": queries.breakdown("channel", window.value, None, 10),
                    },
                }
                if numbers == last:  # the state changed (a partition moved, a peer published) but not the numbers
                    continue
                last = numbers
                yield f"event: kpis\ndata: {json.dumps({'version': version, **numbers})}\n\n".encode()
                sent += 1
                await asyncio.sleep(queries.stream_min_interval_s)

        # Beyond the cap: 429 before anything is sent; the slot is freed however the stream ends.
        return streams.stream(
            events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        )

    return router


def build_dashboard_router() -> APIRouter:
    router = APIRouter(tags=["dashboard"])
    page = resources.files("kasse_metrics.entrypoints").joinpath("dashboard.html")

    @router.get("/dashboard", response_class=HTMLResponse, summary="Live KPI dashboard (HTML)")
    async def dashboard() -> HTMLResponse:
        return HTMLResponse(page.read_text(encoding="utf-8"))

    return router
