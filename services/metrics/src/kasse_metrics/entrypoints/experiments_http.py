"""Experiments over HTTP: the admin API that defines them, the analysis (JSON and SSE), the page."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from importlib import resources
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, StreamingResponse
from pydantic import AfterValidator, BaseModel, Field, SecretStr

from kasse_common.http import bearer_guard, problem_responses
from kasse_common.ratelimit import ConnectionCap
from kasse_contracts.base import closed_enum, known_value
from kasse_contracts.events import ExperimentChanged, ExperimentMetric, ExperimentParameter, GuardrailMetric, Variant
from kasse_metrics.application.experiments import ExperimentDefinitions, ExperimentReports
from kasse_metrics.domain.experiment_definitions import ExperimentSpec


class ExperimentInput(BaseModel):
    """An experiment's definition as an administrator writes it."""

    experiment_id: str | None = Field(
        None, pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$", description="Chosen id (create only); default: generated"
    )
    name: str = Field(min_length=1, max_length=200, pattern=r"\S")
    hypothesis: str = Field("", max_length=2000)
    parameter: Annotated[ExperimentParameter, AfterValidator(known_value), closed_enum(ExperimentParameter)]
    variants: list[Variant] = Field(min_length=2, max_length=10, description="The first one is the control")
    primary_metric: Annotated[ExperimentMetric, AfterValidator(known_value), closed_enum(ExperimentMetric)] = (
        ExperimentMetric.CONVERSION_RATE
    )
    guardrails: list[Annotated[GuardrailMetric, AfterValidator(known_value), closed_enum(GuardrailMetric)]] = Field(
        default_factory=lambda: [GuardrailMetric.PAYMENT_FAILURE_RATE, GuardrailMetric.REFUND_RATE]
    )
    currency: str = Field("EUR", pattern=r"^[A-Z]{3}$")
    baseline: float = Field(
        description="Planned control value of the primary metric: a rate in (0, 1), or minor units for revenue/AOV"
    )
    minimum_detectable_effect: float = Field(0.2, description="Relative change the plan must detect (0.2 = +20 %)")

    def spec(self) -> ExperimentSpec:
        return ExperimentSpec(
            name=self.name,
            hypothesis=self.hypothesis,
            parameter=self.parameter,
            variants=tuple(self.variants),
            primary_metric=self.primary_metric,
            guardrails=tuple(dict.fromkeys(self.guardrails)),
            currency=self.currency,
            baseline=self.baseline,
            minimum_detectable_effect=self.minimum_detectable_effect,
        )


class ExperimentList(BaseModel):
    items: list[ExperimentChanged]


class ReportList(BaseModel):
    version: int = Field(description="Grows with every change of the analysis (see the stream's `since`)")
    items: list[dict[str, Any]]


def build_experiment_admin_router(definitions: ExperimentDefinitions, admin_token: SecretStr | None) -> APIRouter:
    guard = bearer_guard(admin_token, setting="KASSE_METRICS_ADMIN_TOKEN", purpose="the experiments admin API")
    router = APIRouter(prefix="/v1/admin/experiments", tags=["experiments (admin)"], dependencies=[Depends(guard)])
    errors = problem_responses(401, 403, 404, 409, 422)

    @router.post("", status_code=201, response_model=ExperimentChanged, responses=errors, summary="Define (draft)")
    async def create(body: ExperimentInput) -> ExperimentChanged:
        return await definitions.create(body.spec(), body.experiment_id)

    @router.get("", response_model=ExperimentList, responses=errors, summary="Every experiment's definition")
    async def list_all() -> dict[str, Any]:
        return {"items": await definitions.all()}

    @router.get("/{experiment_id}", response_model=ExperimentChanged, responses=errors, summary="One definition")
    async def get(experiment_id: str) -> ExperimentChanged:
        return await definitions.get(experiment_id)

    @router.put(
        "/{experiment_id}",
        response_model=ExperimentChanged,
        responses=errors,
        summary="Revise; 409 when it is stopped, or running and the variants or weights would change",
    )
    async def revise(experiment_id: str, body: ExperimentInput) -> ExperimentChanged:
        return await definitions.revise(experiment_id, body.spec())

    @router.post("/{experiment_id}/start", response_model=ExperimentChanged, responses=errors, summary="Start")
    async def start(experiment_id: str) -> ExperimentChanged:
        return await definitions.start(experiment_id)

    @router.post("/{experiment_id}/stop", response_model=ExperimentChanged, responses=errors, summary="Stop")
    async def stop(experiment_id: str) -> ExperimentChanged:
        return await definitions.stop(experiment_id)

    return router


def build_experiment_router(reports: ExperimentReports, streams: ConnectionCap | None = None) -> APIRouter:
    """`streams`: the cap on concurrent streams, the SAME object as the KPI stream's (one budget of long-lived
    connections per instance; 429 + Retry-After beyond it); None: no cap."""
    streams = streams or ConnectionCap(None)
    router = APIRouter(prefix="/v1/experiments", tags=["experiments"])

    @router.get("", response_model=ReportList, summary="Every experiment's per-variant analysis and decision")
    async def all_reports() -> dict[str, Any]:
        return {"version": reports.version, "items": reports.reports()}

    @router.get(
        "/stream",
        summary="Server-sent events: an `experiments` event with every report whenever they change",
        response_class=StreamingResponse,
        responses={200: {"content": {"text/event-stream": {}}}, **problem_responses(429)},
    )
    async def stream(
        request: Request,
        limit: Annotated[int | None, Query(ge=1, description="Close after this many events (tests)")] = None,
        since: Annotated[int, Query(description="Send the first event only once the version differs from this")] = -1,
    ) -> StreamingResponse:
        async def events() -> AsyncIterator[bytes]:
            sent = 0
            version = since
            while limit is None or sent < limit:
                if await request.is_disconnected():
                    return
                changed = await reports.wait_for_change(version, timeout=15.0)
                if changed is None:
                    yield b": keep-alive\n\n"
                    continue
                version = changed
                body = {"version": version, "items": reports.reports()}
                yield f"event: experiments\ndata: {json.dumps(body)}\n\n".encode()
                sent += 1
                await asyncio.sleep(reports.stream_min_interval_s)

        # Beyond the cap: 429 before anything is sent; the slot is freed however the stream ends.
        return streams.stream(
            events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        )

    @router.get("/{experiment_id}", responses=problem_responses(404), summary="One experiment's per-variant analysis")
    async def one(experiment_id: str) -> dict[str, Any]:
        return reports.report(experiment_id)

    return router


def build_experiment_page_router() -> APIRouter:
    router = APIRouter(tags=["dashboard"])
    page = resources.files("kasse_metrics.entrypoints").joinpath("experiments.html")

    @router.get("/dashboard/experiments", response_class=HTMLResponse, summary="Experiments dashboard (HTML)")
    async def experiments_page() -> HTMLResponse:
        return HTMLResponse(page.read_text(encoding="utf-8"))

    return router
