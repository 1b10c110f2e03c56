"""One trace from an HTTP request, through the outbox and Kafka, into the consumer's handler."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest
from fastapi import APIRouter
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pydantic_settings import SettingsConfigDict

from kasse_common.messaging import EventContext
from kasse_common.runtime import ServiceRuntime
from kasse_common.settings import ServiceSettings
from kasse_common.telemetry import setup_telemetry
from kasse_contracts.events import OrderPlaced
from kasse_testkit import running_app, wait_until
from kasse_testkit.samples import order_placed

pytestmark = pytest.mark.integration


class FrontSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="KASSE_TRACE_FRONT_", extra="ignore", frozen=True)
    service_name: ClassVar[str] = "trace-front"


class BackSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="KASSE_TRACE_BACK_", extra="ignore", frozen=True)
    service_name: ClassVar[str] = "trace-back"


async def test_http_request_outbox_kafka_and_consumer_share_one_trace(settings_for: Any) -> None:
    spans = InMemorySpanExporter()
    telemetry = setup_telemetry("trace-test", span_exporter=spans, set_global=False)

    front = ServiceRuntime(settings_for(FrontSettings), telemetry=telemetry, configure_logs=False)
    orders = front.document_store("orders")
    front.produces(OrderPlaced)
    router = APIRouter()

    @router.post("/orders")
    async def place() -> dict[str, str]:
        event = order_placed()
        await orders.commit(event.order_id, expected_version=None, state={}, events=[front.encode(event)])
        return {"order_id": event.order_id}

    back = ServiceRuntime(settings_for(BackSettings), telemetry=telemetry, configure_logs=False)
    handled: list[tuple[str, int]] = []

    async def on_placed(event: OrderPlaced, ctx: EventContext) -> None:
        handled.append((event.order_id, trace.get_current_span().get_span_context().trace_id))

    back.consumer.on(OrderPlaced, on_placed)
    back_app = back.create_app(title="back")
    async with running_app(front.create_app(title="front", routers=[router])) as client, running_app(back_app):
        response = await client.post("/orders")
        assert response.status_code == 200
        order_id = response.json()["order_id"]
        await wait_until(lambda: any(o == order_id for o, _ in handled), timeout=30)

    server_spans = [s for s in spans.get_finished_spans() if s.kind == trace.SpanKind.SERVER]
    (http_span,) = [s for s in server_spans if s.attributes and s.attributes.get("http.route") == "/orders"]
    trace_id = http_span.context.trace_id
    (handler_trace,) = [t for o, t in handled if o == order_id]
    assert handler_trace == trace_id, "the consumer's handler runs in the HTTP request's trace"
    kinds = {s.kind for s in spans.get_finished_spans() if s.context.trace_id == trace_id}
    assert {trace.SpanKind.SERVER, trace.SpanKind.PRODUCER, trace.SpanKind.CONSUMER} <= kinds
