"""Outbox relay throughput and lag on the real broker and store (loopback only, bounded, stops by itself).

Writes `--documents` aggregates with `--events` events each through `DocumentStore.commit` (as a burst
of orders would), next to `--drained` documents that have nothing to publish (a shop that has run a
while), with the relay running (a burst: commits take the relay's lease) or before it starts (`--backlog`:
what a crashed process leaves), and measures how long until everything is on Kafka: events per
second, and commit-to-published lag per document (median, p95, max), read back from the topic.

    uv run python services/common/bench/outbox_bench.py --documents 200 --drained 5000
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from typing import Any, ClassVar

from aiokafka import AIOKafkaConsumer
from pydantic_settings import SettingsConfigDict

from kasse_common.envelope import encode
from kasse_common.messaging import EventPublisher, create_broker
from kasse_common.mongo import create_mongo_client
from kasse_common.outbox import OutboxRelay
from kasse_common.persistence import DocumentStore, ensure_outbox_indexes
from kasse_common.settings import ServiceSettings
from kasse_common.topics_admin import ensure_topics
from kasse_contracts.envelope import CloudEventAttributes
from kasse_contracts.topics import ORDERS
from kasse_testkit.samples import order_placed


class BenchSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="KASSE_BENCH_", extra="ignore", frozen=True)
    service_name: ClassVar[str] = "bench"


async def main(documents: int, events: int, drained: int, batch: int, burst: bool, concurrency: int) -> dict[str, Any]:
    run = uuid.uuid4().hex[:8]
    settings = BenchSettings(topic_prefix=f"bench{run}.", mongo_database=f"kasse_bench_outbox_{run}")
    mongo = create_mongo_client(settings)
    db = mongo[settings.database_name]
    store = DocumentStore(db["orders"])
    await ensure_outbox_indexes(store.collection)
    await ensure_topics(settings, [settings.topic(ORDERS)])
    filler = "x" * 2000
    if drained:
        await store.collection.insert_many(
            [{"_id": f"old_{i}", "filler": filler, "_outbox_pending": False, "_version": 1} for i in range(drained)]
        )
    broker = create_broker(settings)
    await broker.start()
    relay = OutboxRelay(EventPublisher(broker, settings), batch_size=batch)
    relay.watch(store.collection)
    reader = AIOKafkaConsumer(
        settings.topic(ORDERS),
        bootstrap_servers=settings.kafka_bootstrap,
        auto_offset_reset="earliest",
        group_id=None,
    )
    await reader.start()
    committed: dict[str, float] = {}
    total = documents * events

    async def commit(i: int, lease: bool) -> None:
        order_id = f"ord_{run}_{i}"
        records = [encode(order_placed(order_id=order_id), service="bench") for _ in range(events)]
        target = DocumentStore(
            store.collection,
            (lambda ids: relay.hint("orders", ids)) if lease else None,
            lease=relay.lease_fields if lease else None,
        )
        await target.commit(order_id, expected_version=None, state={"n": i}, events=records)
        committed[order_id] = time.time()

    started = time.time()
    if burst:  # the relay runs while `concurrency` writers commit: the hot path of a burst of orders
        relay.start()
        queue = iter(range(documents))

        async def writer() -> None:
            for i in queue:
                await commit(i, lease=True)

        await asyncio.gather(*(writer() for _ in range(concurrency)))
    else:  # a backlog left by a process that died: every document must be claimed
        for i in range(documents):
            await commit(i, lease=False)
        started = time.time()
        relay.start()
    first_seen: dict[str, float] = {}
    deadline = time.monotonic() + 600
    seen = 0
    while seen < total and time.monotonic() < deadline:
        batches = await reader.getmany(timeout_ms=500)
        for records in batches.values():
            for record in records:
                seen += 1
                headers = {k: v.decode() for k, v in record.headers}
                subject = CloudEventAttributes.from_headers(headers).subject
                first_seen.setdefault(subject, time.time())
    elapsed = time.time() - started
    await relay.stop()
    await reader.stop()
    await broker.stop()
    # Emptied, not dropped: FerretDB v1 (SQLite) can crash when a database is dropped under a live connection.
    await store.collection.delete_many({})
    await mongo.close()
    lags = sorted(first_seen[o] - max(committed[o], started) for o in first_seen)
    return {
        "mode": "burst" if burst else "backlog",
        "documents": documents,
        "events": total,
        "drained_documents": drained,
        "published": seen,
        "seconds": round(elapsed, 2),
        "events_per_s": round(seen / elapsed, 1),
        "lag_median_s": round(statistics.median(lags), 3) if lags else None,
        "lag_p95_s": round(lags[int(len(lags) * 0.95) - 1], 3) if lags else None,
        "lag_max_s": round(lags[-1], 3) if lags else None,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--documents", type=int, default=200)
    parser.add_argument("--events", type=int, default=2)
    parser.add_argument("--drained", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--backlog", action="store_true", help="commit first, then start the relay (claims)")
    parser.add_argument("--concurrency", type=int, default=20, help="concurrent writers in burst mode")
    args = parser.parse_args()
    print(asyncio.run(main(args.documents, args.events, args.drained, args.batch, not args.backlog, args.concurrency)))
