"""The service as a real process, killed with SIGKILL in the middle of ingesting, then restarted."""

from __future__ import annotations

import asyncio
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from pymongo import AsyncMongoClient

from kasse_common.envelope import encode
from kasse_contracts.events import ProductSearched
from kasse_metrics.adapters.mongo_checkpoints import MongoCheckpointStore, MongoSnapshotStore
from kasse_metrics.application.ingest import projection_blob
from kasse_metrics.domain.facts import decode_facts
from kasse_metrics.domain.kpis import Projection
from kasse_testkit import Namespace, ServiceProcess, TestPublisher, free_port, wait_until
from kasse_testkit.infrastructure import Infrastructure

pytestmark = pytest.mark.integration

EXTRA = 600


def metrics_process(infra: Infrastructure, ns: Namespace, tmp_path: Path, **env: str) -> ServiceProcess:
    port = free_port()
    return ServiceProcess(
        [sys.executable, "-c", "from kasse_metrics.main import run; run()"],
        {
            "KASSE_METRICS_KAFKA_BOOTSTRAP": infra.kafka_bootstrap,
            "KASSE_METRICS_MONGO_URI": infra.mongo_uri,
            "KASSE_METRICS_MONGO_DATABASE": ns.database("metrics"),
            "KASSE_METRICS_TOPIC_PREFIX": ns.topic_prefix,
            "KASSE_METRICS_HTTP_PORT": str(port),
            **env,
        },
        port=port,
        log_path=tmp_path / "metrics.log",
    )


async def test_a_kill_in_the_middle_of_ingesting_loses_and_doubles_nothing(
    kasse_infra: Infrastructure,
    namespace: Namespace,
    test_publisher: TestPublisher,
    scenario_for: Any,
    assert_report_matches: Any,
    tmp_path: Path,
) -> None:
    scenario = scenario_for(namespace.token)
    # Searches add traffic (small batches make the kill land between batches); they are in no funnel.
    searches = [
        encode(
            ProductSearched(
                occurred_at=scenario.base - timedelta(minutes=2), session_id=f"q{i}", query="lamp", result_count=3
            ),
            service="scenario",
            trace_headers={},
        )
        for i in range(EXTRA)
    ]
    records = scenario.all_records() + searches
    total = len(records)
    mongo: AsyncMongoClient[Any] = AsyncMongoClient(kasse_infra.mongo_uri)
    db = mongo[namespace.database("metrics")]
    segments, segment_facts = db[MongoCheckpointStore.SEGMENTS], db[MongoCheckpointStore.SEGMENT_FACTS]

    async def stored_events() -> int:
        """Distinct event ids stored: in the segments (one may repeat an id: readers skip it) and in each
        internal partition's latest snapshot (the segments below it are deleted once its readers read them)."""
        ids = {f.event_id async for s in segment_facts.find({}) for f in decode_facts(s["b"])}
        async for header in db["projection_snapshots"].find({}):
            scope = header["_id"].removeprefix("latest|")
            latest = await MongoSnapshotStore(db, scope=scope).load()
            if latest is not None:
                held = Projection()
                held.restore(projection_blob(latest[1]))
                ids.update(held.ids.ids)
        return len(ids)

    crashing = metrics_process(
        kasse_infra,
        namespace,
        tmp_path,
        KASSE_METRICS_INGEST_MAX_RECORDS="20",
        KASSE_METRICS_CHECKPOINT_INTERVAL_S="0.05",
        KASSE_METRICS_SNAPSHOT_INTERVAL_S="0.2",  # the restart starts from a snapshot, then segments
    )
    try:
        await crashing.start()

        # A first part, then a snapshot of it: the restart loads the snapshot, then the segments.
        head = 50
        for record in records[:head]:
            await test_publisher.publish_record(record)

        async def snapshotted() -> bool:
            return await db["projection_snapshots"].count_documents({}) > 0 and await stored_events() >= head

        await wait_until(snapshotted, timeout=30, message="a snapshot of the first part")

        async def publish_all() -> None:
            for record in records[head:]:
                await test_publisher.publish_record(record)

        # Killed while it ingests what is being published: some of it checkpointed, some consumed
        # but not stored yet, some not even read.
        publishing = asyncio.create_task(publish_all())

        async def partly_ingested() -> bool:
            return head < await stored_events() < total

        await wait_until(partly_ingested, timeout=30, interval=0.01, message="ingest under way")
        crashing.kill()
        ingested_before_kill = await stored_events()
        assert ingested_before_kill < total

        await publishing

        for record in scenario.duplicates():
            await test_publisher.publish_record(record)
        restarted = metrics_process(
            kasse_infra,
            namespace,
            tmp_path,
            KASSE_METRICS_SNAPSHOT_INTERVAL_S="0.2",
            # The killed instance stops holding back the deletion of segments soon (default 2 min).
            KASSE_METRICS_READER_HEARTBEAT_INTERVAL_S="0.5",
            KASSE_METRICS_READER_TTL_S="2",
        )
        await restarted.start()
        try:
            async with httpx.AsyncClient(base_url=restarted.base_url, timeout=10) as client:
                at = scenario.at.isoformat()
                # /readyz said ready (start() waited for it): only once the projection holds what
                # was checkpointed and the consumer has read its partitions to their end, so
                # every event published before the restart is counted already, not eventually.
                ready = (await client.get("/v1/kpis", params={"window": "all", "at": at})).json()
                assert ready["events"] == total and ready["projection_lag_records"] == 0, ready
                # Loading the snapshot (a task that ends) must not count as a background loop that died.
                alive = await client.get("/healthz")
                assert alive.status_code == 200, alive.text

                async def all_counted() -> dict[str, Any] | None:
                    r = (await client.get("/v1/kpis", params={"window": "all", "at": at})).json()
                    assert r["events"] <= total
                    return r if r["events"] == total else None

                await wait_until(all_counted, timeout=60, message="every event counted after the restart")
                for window in ("all", "5m", "1h", "24h"):
                    report = (await client.get("/v1/kpis", params={"window": window, "at": at})).json()
                    expected = scenario.expected(window)
                    expected["events"] += EXTRA  # two minutes before the last minute: in every window
                    assert_report_matches(report, expected)
                # Visible before durable: the last records reach the store at the next checkpoint.

                async def all_stored() -> bool:
                    stored = await stored_events()
                    assert stored <= total
                    return stored == total

                await wait_until(all_stored, timeout=10, message="every event checkpointed once")

                leftover: list[tuple[int, int, int, int]] = []

                async def pruned() -> bool:
                    # Every segment at or below its partition's latest snapshot is deleted (the killed
                    # instance's readers, silent, no longer hold any back), with no new event to come.
                    snapshot_seen = {
                        int(h["_id"].rsplit("|", 1)[1]): max(h["seen"].values(), default=0)
                        async for h in db["projection_snapshots"].find({})
                    }
                    leftover[:] = [
                        (s["p"], s["s"], s["e"], snapshot_seen.get(s["p"], 0))
                        async for s in segments.find({})
                        if s["e"] <= snapshot_seen.get(s["p"], 0)
                    ]
                    return not leftover

                await wait_until(
                    pruned,
                    timeout=30,
                    message=lambda: f"segments (partition, start, end, snapshot) below the snapshot left: {leftover}",
                )
                # No facts outlive their segment (they are deleted first, and written after it).
                located = {s["_id"] async for s in segments.find({}, {"_id": 1})}
                orphans = [f["_id"] async for f in segment_facts.find({}, {"_id": 1}) if f["_id"] not in located]
                assert orphans == [], orphans
        finally:
            await restarted.stop()
    finally:
        crashing.kill()
        await mongo.close()
