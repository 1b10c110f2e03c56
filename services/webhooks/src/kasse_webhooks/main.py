"""The webhooks service: Kasse's events as signed HTTP webhooks (Standard Webhooks), at least once."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from typing import Any

from fastapi import FastAPI
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from kasse_common.envelope import OutgoingRecord
from kasse_common.runtime import ServiceRuntime, serve
from kasse_contracts.base import Event
from kasse_contracts.events import WebhookEndpointDisabled, WebhookEndpointEnabled
from kasse_webhooks.adapters.clock import SystemClock
from kasse_webhooks.adapters.mongo import MongoDeliveries, MongoEndpoints, MongoEventLog
from kasse_webhooks.adapters.sender import HttpSender
from kasse_webhooks.application.delivery import (
    DeliveryRecorder,
    DeliveryStats,
    Dispatcher,
    EndpointCache,
    WakeUp,
)
from kasse_webhooks.application.endpoints import EndpointService, Sequencer
from kasse_webhooks.application.ports import Clock
from kasse_webhooks.domain.deliveries import RetrySchedule
from kasse_webhooks.domain.endpoints import EndpointStatus, parse_networks
from kasse_webhooks.entrypoints.consumers import register_consumers
from kasse_webhooks.entrypoints.http import build_router
from kasse_webhooks.settings import WebhooksSettings

log = logging.getLogger(__name__)


class _WebhookMetrics:
    """kasse_webhooks_* on /metrics; the Helm chart's PrometheusRule alerts on the disabled ones."""

    def __init__(self, stats: DeliveryStats, cache: EndpointCache) -> None:
        self.stats = stats
        self.cache = cache

    def collect(self) -> Any:
        s = self.stats
        recorded = CounterMetricFamily("kasse_webhooks_deliveries_recorded", "Deliveries recorded (event x endpoint)")
        recorded.add_metric([], s.recorded)
        yield recorded
        attempts = CounterMetricFamily("kasse_webhooks_attempts", "Delivery attempts by result", labels=["result"])
        for result in ("succeeded", "failed"):
            attempts.add_metric([result], s.attempts[result])
        yield attempts
        gave_up = CounterMetricFamily(
            "kasse_webhooks_deliveries_failed", "Deliveries that failed for the whole retry schedule"
        )
        gave_up.add_metric([], s.gave_up)
        yield gave_up
        disabled = CounterMetricFamily(
            "kasse_webhooks_endpoints_disabled", "Endpoints this replica disabled after the whole schedule failed"
        )
        disabled.add_metric([], s.endpoints_disabled)
        yield disabled
        endpoints = GaugeMetricFamily(
            "kasse_webhooks_endpoints", "Endpoints by status (as last loaded)", labels=["status"]
        )
        known = list(self.cache._endpoints.values())
        for status in EndpointStatus:
            endpoints.add_metric([status.value], sum(1 for e in known if e.status is status))
        yield endpoints


def create_app(settings: WebhooksSettings | None = None, *, clock: Clock | None = None) -> FastAPI:
    settings = settings or WebhooksSettings()
    clock = clock or SystemClock()
    runtime = ServiceRuntime(settings)
    runtime.produces(WebhookEndpointDisabled, WebhookEndpointEnabled)

    def encode(event: Event, event_id: str) -> OutgoingRecord:
        return runtime.encode(event, event_id=event_id, time=clock.now())

    endpoints = MongoEndpoints(runtime.document_store("endpoints"), encode)
    deliveries = MongoDeliveries(runtime.db)
    events = MongoEventLog(runtime.db)
    allowed = parse_networks(settings.allowed_networks)
    sender = HttpSender(
        allowed,
        connect_timeout=settings.connect_timeout_s,
        request_timeout=settings.request_timeout_s,
        excerpt_bytes=settings.response_excerpt_bytes,
    )
    schedule = RetrySchedule(
        max_attempts=settings.retry_max_attempts,
        initial=timedelta(seconds=settings.retry_initial_s),
        base=settings.retry_base,
        max_delay=timedelta(seconds=settings.retry_max_s),
    )
    stats = DeliveryStats()
    cache = EndpointCache(endpoints, max_age=timedelta(seconds=settings.dispatch_poll_interval_s))
    sequencer = Sequencer(clock)
    wake = WakeUp()
    dispatcher = Dispatcher(
        endpoints,
        deliveries,
        cache,
        sender,
        clock,
        schedule,
        stats,
        concurrency=settings.endpoint_concurrency,
        poll_interval=settings.dispatch_poll_interval_s,
        lease=timedelta(seconds=settings.delivery_lease_s),
    )
    wake.target = dispatcher
    recorder = DeliveryRecorder(events, deliveries, cache, clock, sequencer, stats, wake)
    service = EndpointService(
        endpoints,
        deliveries,
        events,
        clock,
        sequencer,
        https_required=not settings.is_development,
        check_target=sender.check,
        grace_period=timedelta(seconds=settings.secret_grace_period_s),
        on_change=dispatcher.endpoints_changed,
    )
    register_consumers(runtime.consumer, recorder, settings.topic_prefix)

    async def indexes() -> None:
        await deliveries.ensure_indexes()
        await events.ensure_indexes()

    runtime.on_startup(indexes)
    runtime.background(dispatcher.run)

    async def purge_event_log() -> None:
        while True:
            try:
                await events.purge_before(clock.now() - timedelta(days=settings.event_log_retention_days))
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("event log purge failed; retrying later")
            await asyncio.sleep(3600)

    runtime.background(purge_event_log)
    runtime.on_shutdown(sender.aclose)
    runtime.prometheus_registry().register(_WebhookMetrics(stats, cache))
    if settings.is_development:
        log.warning("development profile: plain-http endpoints are accepted")
    app = runtime.create_app(
        title="Kasse webhooks",
        description="Kasse's events as signed webhooks (Standard Webhooks) with retries, a delivery log and replay.",
        routers=[build_router(service, settings.admin_token)],
    )
    app.state.dispatcher = dispatcher
    app.state.stats = stats
    app.state.schedule = schedule
    return app


def run() -> None:
    settings = WebhooksSettings()
    serve(create_app(settings), settings)
