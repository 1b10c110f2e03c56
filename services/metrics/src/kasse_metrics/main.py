"""Wiring of the metrics service: `create_app()` builds everything, `run()` serves it."""

from __future__ import annotations

import gc
import logging
import re
import uuid

from fastapi import FastAPI
from prometheus_client import GCCollector, ProcessCollector

from kasse_common.ratelimit import ConnectionCap
from kasse_common.runtime import ServiceRuntime, serve
from kasse_contracts.events import ExperimentChanged
from kasse_contracts.topics import INTERNAL_TOPICS, METRICS_FACTS_BY_SESSION, TOPICS, dead_letter_topic
from kasse_metrics.adapters import glibc_malloc
from kasse_metrics.adapters.mongo_checkpoints import (
    MongoCheckpointStore,
    MongoReaderRegistry,
    MongoSnapshotStore,
    partition_scope,
)
from kasse_metrics.adapters.mongo_partials import MongoPartialStore
from kasse_metrics.application.experiments import (
    ExperimentDefinitions,
    ExperimentReports,
    observe,
    partition_analysis,
    snapshot_part,
)
from kasse_metrics.application.ingest import Checkpoints, Ingest, ProjectionSync, TopicPartition
from kasse_metrics.application.partitions import MergedKpis, PartitionState, RemotePartials, StatePartitions
from kasse_metrics.application.queries import KpiQueries
from kasse_metrics.application.routing import decode_routed
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
from kasse_metrics.entrypoints.router import RouterConsumer, build_router_consumer
from kasse_metrics.entrypoints.router_process import RouterProcess
from kasse_metrics.settings import MetricsSettings

log = logging.getLogger(__name__)

# Set by `run()` (the service process) only: tests build apps inside pytest's process.
_FREEZE_AFTER_LOAD = [False]

DESCRIPTION = """Live sales-funnel KPIs from every Kasse event.

Every instance routes its share of the contract partitions onto an internal topic keyed by session,
holds the state of its share of that topic's partitions (deduplicated by event id, checkpointed per
partition with their offsets) and publishes their aggregates; it reads the other partitions'
published aggregates, so any instance answers with the whole group's numbers. See the service README for the
funnel rules and windows."""


def create_app(settings: MetricsSettings | None = None) -> FastAPI:
    settings = settings or MetricsSettings()
    runtime = ServiceRuntime(settings)
    store = MongoCheckpointStore(runtime.db)
    rules = settings.funnel_rules()
    # Each internal partition remembers its share of the dedupe window: a re-publication lands in the
    # partition of the original (same session), and an instance holding every partition holds the window.
    partitions_count = INTERNAL_TOPICS[METRICS_FACTS_BY_SESSION].partitions
    ids_per_partition = max(1, settings.dedupe_window_ids // partitions_count)
    reader = uuid.uuid4().hex

    def make_partition(tp: TopicPartition) -> PartitionState:
        """One owned internal partition: its projection, experiment analysis, snapshot and readers."""
        scope = partition_scope(tp)
        projection = Projection(rules, ids_per_partition, settings.minute_resolution_minutes)
        analysis = partition_analysis(rules.conversion_window)
        sync = ProjectionSync(
            store,
            projection,
            snapshots=MongoSnapshotStore(runtime.db, scope=scope),
            readers=MongoReaderRegistry(runtime.db, scope=scope),
            reader_id=f"{reader}|{scope}",
            reader_ttl_s=settings.reader_ttl_s,
            only=tp,
        )
        sync.fact_observers.append(observe(analysis))
        sync.snapshot_parts["experiments"] = snapshot_part(analysis)
        return PartitionState(tp, scope, sync, analysis)

    partial_store = MongoPartialStore(runtime.db)
    partitions = StatePartitions(make_partition, partial_store)
    remote = RemotePartials(partial_store, rules, skip=lambda: partitions.local_keys)
    merged = MergedKpis(rules, partitions, remote)
    queries = KpiQueries(merged, settings.stream_min_interval_s, lag=lambda: partitions.lag_records)
    # Experiments: definitions owned here (published as ExperimentChanged); each partition's analysis is
    # fed its facts, and the reports merge every partition's per-variant sums.
    definitions = ExperimentDefinitions(runtime.document_store("experiments"), runtime.encode)
    experiments = ExperimentReports(
        definitions,
        settings.stream_min_interval_s,
        sources=merged.experiment_parts,
        sources_version=lambda: merged.version,
    )
    definitions.changed.append(experiments.refresh_definitions)
    for listeners in (partitions.listeners, remote.listeners):
        listeners.append(queries.notify_changed)
        listeners.append(experiments.notify_changed)
    runtime.produces(ExperimentChanged)
    # Two stages (application.routing): the router re-keys the contract topics' facts by session onto the
    # internal topic (in a child process of its own unless `router_process` is off: entrypoints.router_process);
    # the state stage reads its share of that topic into the projection.
    internal_topic = settings.internal_topic
    router: RouterConsumer | RouterProcess = (
        RouterProcess(settings)
        if settings.router_process
        else build_router_consumer(settings, runtime.publisher, runtime.telemetry.tracer("kasse.metrics"))
    )
    ingest = Ingest(partitions, Checkpoints(store, settings.segment_max_facts), decode_routed)

    # A partition's state is loaded when it is assigned (its snapshot, then its segments above it) and
    # dropped when it is revoked (after its checkpoint and a last publication of its aggregates).
    async def assigned(tps: list[TopicPartition]) -> None:
        await partitions.assign(tps)
        if _FREEZE_AFTER_LOAD[0]:
            # The state just loaded (a restart: every owned partition's snapshot, millions of objects) is
            # moved out of the cyclic GC's reach: a full collection scanned all of it (0.8-1.8 s at 800k
            # events per partition, in one of the loading slices or later during ingest). Once per
            # assignment; the state added later is scanned as usual.
            gc.freeze()

    consumer = IngestConsumer(
        settings,
        store,
        ingest,
        tracer=runtime.telemetry.tracer("kasse.metrics"),
        on_assigned=assigned,
        on_revoked=partitions.revoke,
    )

    async def create_topics_and_indexes() -> None:
        from kasse_common.topics_admin import ensure_topics

        await store.ensure_indexes()
        await ensure_topics(
            settings,
            [settings.topic(t) for t in TOPICS]
            + [internal_topic, settings.topic(dead_letter_topic(settings.service_name))],
        )

    async def take_snapshot() -> None:
        # A restart (or the next owner) loads a partition's latest snapshot and reads only the segments above it.
        await partitions.snapshot(settings.snapshot_min_new_facts)
        # The snapshots' buffers are freed now: hand the allocator's free pages back (adapters.glibc_malloc).
        glibc_malloc.trim()

    async def heartbeat() -> None:
        await partitions.heartbeat()

    async def publish_partials() -> None:
        # What changed in the owned partitions, for the other instances' reads: a bounded share per turn, so a
        # replay (or a restored partition, all of whose minutes are new) never holds the loop for one huge write.
        await partitions.publish(settings.partial_publish_max_minutes)

    async def read_partials() -> None:
        if not partitions.assigned_once:
            # Which partitions are this instance's is not known yet: a poll now would read every partition's
            # published minutes (seconds at 2M events, beside the snapshot loads), most of them its own.
            return
        await remote.poll()
        # A partition this instance gave up is read from its new owner once that one published it.
        partitions.superseded({key: r.seq for key, r in remote.parts.items()})

    def caught_up() -> str:
        """Ready once the router has routed its contract partitions up to their end as of assignment, the
        state stage has read its internal partitions as far (their state loaded first), and the other
        partitions' published aggregates were read once (sticky)."""
        reason = readiness()
        step = re.sub(r"\d+", "N", reason)  # logged when the step changes, not its counts: where a start's time goes
        if step != readiness_step[0]:
            readiness_step[0] = step
            log.info("readiness", extra={"check": reason})
        return reason

    readiness_step = [""]

    def readiness() -> str:
        routed = router.caught_up()
        if routed != "ok":
            return routed
        if not partitions.caught_up():
            return f"catching up: {partitions.lag_records} checkpointed records not read yet"
        if not remote.polled:
            return "reading the other partitions' aggregates"
        return consumer.caught_up()

    async def leave_readers() -> None:
        # Best effort: a reader that does not say goodbye is dropped after its time-to-live.
        try:
            await partitions.close()
        except Exception:
            log.warning("could not unregister as a segment reader", exc_info=True)

    runtime.on_startup(create_topics_and_indexes)
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
    runtime.every(settings.partial_publish_interval_s, publish_partials, name="partial-aggregates-publish")
    runtime.every(settings.projection_poll_interval_s, read_partials, name="partial-aggregates-read")
    registry = runtime.prometheus_registry()
    registry.register(KpiCollector(merged, consumer, router))
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
    app.state.kpis = merged
    app.state.partitions = partitions
    app.state.ingest_consumer = consumer
    app.state.router_consumer = router
    app.state.experiments = experiments
    return app


def run() -> None:
    settings = MetricsSettings()
    # The state holds many long-lived containers (each session's step lists, orders, carts), and
    # ingest allocates thousands of short-lived objects per batch: at the default thresholds (700, 10,
    # 10) the cyclic GC re-scanned the young and middle generations so often that it cost about a
    # third of the state stage's CPU per fact (in-process measurement of the routed path, 50k bench
    # events: 20.8 -> 13.8 µs per fact, as with the GC off). Collections stay on, only rarer.
    # Young collections of 10,000 objects and middle ones of 200,000, not 50,000 and 1M: each is a pause
    # of the event loop (bench (d), load ~12: young 65-200 ms wall, several in every 30 s; a middle one
    # 676 ms), the freshness tail. Every object is still scanned once per generation it passes, so the
    # work is the same in 5x shorter pauses; full collections stay as rare (every 100M allocations).
    gc.set_threshold(10_000, 20, 500)
    _FREEZE_AFTER_LOAD[0] = True
    # Large short-lived buffers (the snapshots') go back to the OS when freed (adapters.glibc_malloc).
    glibc_malloc.tune()
    serve(create_app(settings), settings)
