"""Wiring of the metrics service: `create_app()` builds everything, `run()` serves it."""

from __future__ import annotations

import asyncio
import logging

from fastapi import FastAPI
from prometheus_client import GCCollector, ProcessCollector

from kasse_common.ratelimit import ConnectionCap
from kasse_common.retry import retry_transient
from kasse_common.runtime import ServiceRuntime, serve
from kasse_contracts.events import ExperimentChanged
from kasse_contracts.topics import TOPICS, dead_letter_topic
from kasse_metrics.adapters.dead_letters import KafkaDeadLetters
from kasse_metrics.adapters.mongo_checkpoints import MongoCheckpointStore, MongoReaderRegistry, MongoSnapshotStore
from kasse_metrics.adapters.routed_facts import KafkaRoutedFacts
from kasse_metrics.application.experiments import ExperimentDefinitions, ExperimentReports
from kasse_metrics.application.ingest import Checkpoints, Ingest, ProjectionSync
from kasse_metrics.application.queries import KpiQueries
from kasse_metrics.application.routing import Router, decode_routed
from kasse_metrics.domain.kpis import Projection
from kasse_metrics.entrypoints.consumer import IngestConsumer
from kasse_metrics.entrypoints.experiment_gauges import ExperimentCollector
from kasse_metrics.entrypoints.experiments_http import (
    build_experiment_admin_router,
    build_experiment_page_router,
    build_experiment_router,
)
from kasse_metrics.entrypoints.http import build_dashboard_router, build_router
from kasse_metrics.entrypoints.prometheus import KpiCollector
from kasse_metrics.entrypoints.router import RouterConsumer
from kasse_metrics.settings import MetricsSettings

log = logging.getLogger(__name__)

DESCRIPTION = """Live sales-funnel KPIs from every Kasse event.

Every instance of a consumer group ingests its share of the partitions (deduplicated by event id,
checkpointed per partition with their offsets) and reads the checkpoints of all partitions into its
own projection, so any instance answers with the whole group's numbers. See the service README for the
funnel rules and windows."""


def create_app(settings: MetricsSettings | None = None) -> FastAPI:
    settings = settings or MetricsSettings()
    runtime = ServiceRuntime(settings)
    store = MongoCheckpointStore(runtime.db)
    snapshots = MongoSnapshotStore(runtime.db)
    projection = Projection(settings.funnel_rules(), settings.dedupe_window_ids, settings.minute_resolution_minutes)
    sync = ProjectionSync(
        store,
        projection,
        snapshots=snapshots,
        readers=MongoReaderRegistry(runtime.db),
        reader_ttl_s=settings.reader_ttl_s,
    )
    queries = KpiQueries(projection, settings.stream_min_interval_s, lag=lambda: sync.lag_records)
    sync.listeners.append(queries.notify_changed)
    dead_letters = KafkaDeadLetters(
        runtime.publisher, settings.topic(dead_letter_topic(settings.service_name)), settings.consumer_group
    )
    # Experiments: definitions owned here (published as ExperimentChanged), analysis fed every fact.
    definitions = ExperimentDefinitions(runtime.document_store("experiments"), runtime.encode)
    experiments = ExperimentReports(
        definitions, settings.stream_min_interval_s, settings.funnel_rules().conversion_window
    )
    definitions.changed.append(experiments.refresh_definitions)
    sync.fact_observers.append(experiments.observe)
    sync.snapshot_parts["experiments"] = (experiments.snapshot, experiments.restore)
    sync.listeners.append(experiments.notify_changed)
    runtime.produces(ExperimentChanged)
    # Two stages (application.routing): the router re-keys the contract topics' facts by session onto the
    # internal topic; the state stage reads its share of that topic into the projection.
    internal_topic = settings.internal_topic
    sender = KafkaRoutedFacts(settings, internal_topic)
    router = RouterConsumer(
        settings,
        Router(dead_letters, sender, settings.router_max_facts_per_record),
        sender,
        [settings.topic(t) for t in sorted(TOPICS)],
        tracer=runtime.telemetry.tracer("kasse.metrics"),
    )
    ingest = Ingest(sync, Checkpoints(store, settings.segment_max_facts), decode_routed)
    # Set once the snapshot is loaded. Until then nothing is folded into the projection (loading replaces
    # it) and nothing is stored from it; the consumer joins its group meanwhile, so a restart spends the
    # snapshot's load and the group's rebalance at the same time, not one after the other.
    restored = asyncio.Event()
    consumer = IngestConsumer(
        settings, store, ingest, tracer=runtime.telemetry.tracer("kasse.metrics"), may_apply=restored
    )

    async def create_topics_and_indexes() -> None:
        from kasse_common.topics_admin import ensure_topics

        await store.ensure_indexes()
        await ensure_topics(
            settings,
            [settings.topic(t) for t in TOPICS]
            + [internal_topic, settings.topic(dead_letter_topic(settings.service_name))],
        )

    async def restore_projection() -> None:
        try:
            await retry_transient(sync.restore, what="loading the projection snapshot")
        except Exception:
            log.exception("loading the projection snapshot failed; this instance stays not ready")
            raise
        restored.set()

    loading: list[asyncio.Task[None]] = []

    async def start_restoring() -> None:
        # Beside the consumer, not before it (see `restored`); not ready meanwhile. A task of its own, not
        # a runtime background loop: it ends when loaded, and an ended background loop fails liveness.
        loading.append(asyncio.create_task(restore_projection(), name="projection-restore"))

    async def stop_restoring() -> None:
        for task in loading:
            task.cancel()

    async def keep_projection_current() -> None:
        # Own batches are folded in by the consumer as it reads them; this reads the others' checkpoints.
        if restored.is_set():
            await sync.catch_up()

    async def take_snapshot() -> None:
        # A restart loads the latest snapshot and reads only the segments above it.
        if restored.is_set():
            await sync.snapshot(settings.snapshot_min_new_facts)

    async def heartbeat() -> None:
        # `restore` registers this reader; before it, a heartbeat would find it unknown and reload.
        if restored.is_set():
            await sync.heartbeat()

    def caught_up() -> str:
        """Ready once the projection holds every record checkpointed when it started and the
        consumer has read its partitions up to their end as of then (sticky)."""
        if not restored.is_set():
            return "loading the projection snapshot"
        if not sync.caught_up:
            return f"catching up: {sync.lag_records} checkpointed records not read yet"
        routed = router.caught_up()
        if routed != "ok":
            return routed
        return consumer.caught_up()

    async def leave_readers() -> None:
        # Best effort: a reader that does not say goodbye is dropped after its time-to-live.
        try:
            await sync.close()
        except Exception:
            log.warning("could not unregister as a segment reader", exc_info=True)

    runtime.on_startup(create_topics_and_indexes)
    runtime.on_startup(start_restoring)
    runtime.on_shutdown(stop_restoring)
    runtime.on_shutdown(leave_readers)
    # How far this instance has read: segments are deleted only below every live reader's progress.
    runtime.every(settings.reader_heartbeat_interval_s, heartbeat, name="segment-reader-heartbeat")
    # Another instance may have changed a definition: re-read the (small) collection every second.
    runtime.every(
        settings.experiments_refresh_interval_s, experiments.refresh_definitions, name="experiment-definitions"
    )
    runtime.readiness_check("projection", caught_up)
    runtime.every(settings.snapshot_interval_s, take_snapshot, name="projection-snapshot", wait_first=True)
    runtime.background(router.run)
    runtime.background(consumer.run)
    # The switch stops the router: nothing published after it is counted (what was routed still is).
    runtime.pausable(router.pause, router.resume)
    runtime.every(
        settings.projection_poll_interval_s, keep_projection_current, name="projection-catch-up", wait_first=True
    )
    registry = runtime.prometheus_registry()
    registry.register(KpiCollector(projection, consumer, router, dead_letters, sync))
    # Memory and GC visible: process_resident_memory_bytes, python_gc_collections_total, …
    ProcessCollector(registry=registry)
    GCCollector(registry=registry)
    registry.register(ExperimentCollector(experiments))
    # One cap over every SSE stream of this instance (KPIs and experiments): each holds a connection.
    streams = ConnectionCap(settings.max_kpi_streams if settings.rate_limits_enabled else None)
    app: FastAPI = runtime.create_app(
        title="Kasse metrics",
        description=DESCRIPTION,
        routers=[
            build_router(queries, streams),
            build_dashboard_router(),
            build_experiment_admin_router(definitions, settings.admin_token),
            build_experiment_router(experiments, streams),
            build_experiment_page_router(),
        ],
    )
    app.state.projection = projection
    app.state.ingest_consumer = consumer
    app.state.router_consumer = router
    app.state.projection_sync = sync
    app.state.experiments = experiments
    return app


def run() -> None:
    settings = MetricsSettings()
    serve(create_app(settings), settings)
