"""Benchmark of the webhooks service (issue 18). Not a test: run it on purpose (`make bench`), e.g.

    uv run python services/webhooks/bench/bench.py --events 2000

It needs the local Kafka and Mongo-protocol store (KASSE_KAFKA_BOOTSTRAP, KASSE_MONGO_URI; defaults
127.0.0.1:19092 and mongodb://127.0.0.1:37017/) and only talks to 127.0.0.1. The webhooks service runs
as its own process (`kasse-webhooks`) with one endpoint registered: a fast local receiver (answers 200
at once). Next to it, a plain aiokafka consumer reads the same events straight from Kafka. Two phases:
1. latency: events at a steady rate; from the event's `time` (set when it is published) to the
   receiver having the signed request, and to the plain consumer having the record: p50, p99;
2. throughput: a burst of N events; deliveries per second (first publish to last delivery), and the
   plain consumer's records per second over the same burst.
Every wait has a time limit; the topics and the database are namespaced, the database is dropped.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from pymongo import AsyncMongoClient

from kasse_common.envelope import encode
from kasse_testkit import ServiceProcess, free_port, wait_until
from kasse_testkit.receiver import Receiver
from kasse_testkit.samples import order_placed

ORDERS = "kasse.orders.v1"
ADMIN = "bench-webhooks-admin"


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


class PlainReader:
    """The baseline: the same events read straight from Kafka (ce id -> time read)."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=bootstrap,
            group_id=f"bench-plain-{uuid.uuid4().hex[:8]}",
            auto_offset_reset="earliest",
        )
        self.seen: dict[str, float] = {}
        self.times: dict[str, float] = {}
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.consumer.start()
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            batches = await self.consumer.getmany(timeout_ms=200, max_records=5000)
            now = time.time()
            for records in batches.values():
                for record in records:
                    headers = {k: v.decode() for k, v in record.headers}
                    self.seen[headers["ce_id"]] = now
                    self.times[headers["ce_id"]] = datetime.fromisoformat(headers["ce_time"]).timestamp()

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
        await self.consumer.stop()


async def publish(producer: AIOKafkaProducer, prefix: str, count: int, rate: float | None) -> list[str]:
    ids: list[str] = []
    start = time.perf_counter()
    pending = []
    for i in range(count):
        record = encode(order_placed(), service="cart")
        ids.append(record.event_id)
        pending.append(
            await producer.send(
                prefix + record.topic,
                record.value,
                key=record.key.encode(),
                headers=[(k, v.encode()) for k, v in record.headers.items()],
            )
        )
        if rate:
            delay = start + (i + 1) / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)  # pacing the producer (a benchmark, not a test)
    await asyncio.gather(*pending)
    return ids


async def run(args: argparse.Namespace) -> dict[str, Any]:
    prefix = f"bench-{uuid.uuid4().hex[:8]}."
    database = f"kasse_bench_webhooks_{uuid.uuid4().hex[:8]}"
    port = free_port()
    env = {
        **os.environ,
        "KASSE_KAFKA_BOOTSTRAP": args.bootstrap,
        "KASSE_MONGO_URI": args.mongo_uri,
        "KASSE_PROFILE": "development",
        "KASSE_WEBHOOKS_TOPIC_PREFIX": prefix,
        "KASSE_WEBHOOKS_MONGO_DATABASE": database,
        "KASSE_WEBHOOKS_HTTP_PORT": str(port),
        "KASSE_WEBHOOKS_ADMIN_TOKEN": ADMIN,
        "KASSE_WEBHOOKS_ALLOWED_NETWORKS": '["127.0.0.1/32"]',
        "KASSE_WEBHOOKS_ENDPOINT_CONCURRENCY": str(args.concurrency),
        "KASSE_WEBHOOKS_DISPATCH_POLL_INTERVAL_S": "0.2",
        "KASSE_WEBHOOKS_LOG_LEVEL": "WARNING",
    }
    log_path = Path(tempfile.gettempdir()) / f"{prefix}webhooks.log"
    process = ServiceProcess([str(Path(sys.executable).with_name("kasse-webhooks"))], env, port=port, log_path=log_path)
    producer = AIOKafkaProducer(bootstrap_servers=args.bootstrap, linger_ms=2, acks="all")
    plain = PlainReader(args.bootstrap, prefix + ORDERS)
    out: dict[str, Any] = {}
    async with Receiver() as receiver:
        await process.start(timeout=120)
        try:
            await producer.start()
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
                r = await http.post(
                    "/v1/admin/endpoints",
                    json={"url": receiver.url, "event_types": ["io.kasse.cart.OrderPlaced.v1"]},
                    headers={"Authorization": f"Bearer {ADMIN}"},
                )
                r.raise_for_status()
            await plain.start()
            # warm-up: the service's consumer has joined and delivers
            await publish(producer, prefix, 5, None)
            await wait_until(lambda: len(receiver.delivered()) >= 5 and len(plain.seen) >= 5, timeout=90)

            # 1. latency at a steady rate
            ids = await publish(producer, prefix, int(args.rate * args.seconds), args.rate)
            wanted = set(ids)

            def webhook_latencies() -> list[float]:
                return [
                    (r.received_at - datetime.fromisoformat(r.event["time"]).timestamp()) * 1000
                    for r in receiver.delivered()
                    if r.headers["webhook-id"] in wanted
                ]

            await wait_until(lambda: len(webhook_latencies()) >= len(ids), timeout=120)
            await wait_until(lambda: wanted <= plain.seen.keys(), timeout=60)
            hooks = webhook_latencies()
            kafka = [(plain.seen[i] - plain.times[i]) * 1000 for i in ids]
            out["latency"] = {
                "events": len(ids),
                "rate": args.rate,
                "webhooks_p50_ms": percentile(hooks, 0.5),
                "webhooks_p99_ms": percentile(hooks, 0.99),
                "kafka_p50_ms": percentile(kafka, 0.5),
                "kafka_p99_ms": percentile(kafka, 0.99),
            }

            # 2. throughput: a burst
            before = len(receiver.delivered())
            t0 = time.time()
            ids = await publish(producer, prefix, args.events, None)
            published = time.time()
            burst = set(ids)
            await wait_until(lambda: burst <= plain.seen.keys(), timeout=120)
            kafka_done = max(plain.seen[i] for i in ids)
            await wait_until(lambda: len(receiver.delivered()) - before >= len(ids), timeout=args.timeout, interval=0.2)
            hooks_done = max(r.received_at for r in receiver.delivered()[before:])
            out["throughput"] = {
                "events": len(ids),
                "publish_per_s": len(ids) / (published - t0),
                "webhooks_per_s": len(ids) / (hooks_done - t0),
                "kafka_per_s": len(ids) / (kafka_done - t0),
                "duplicates": len(receiver.delivered()) - len({r.headers["webhook-id"] for r in receiver.delivered()}),
            }
            out["verified_sample"] = receiver.delivered()[-1].headers["webhook-signature"].startswith("v1,")
        finally:
            await plain.stop()
            await producer.stop()
            await process.stop()
            client: AsyncMongoClient[Any] = AsyncMongoClient(args.mongo_uri)
            await client.drop_database(database)
            await client.close()
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", type=int, default=2000, help="burst size for the throughput phase")
    p.add_argument("--rate", type=float, default=50.0, help="events/s in the latency phase")
    p.add_argument("--seconds", type=float, default=10.0, help="length of the latency phase")
    p.add_argument("--concurrency", type=int, default=16, help="KASSE_WEBHOOKS_ENDPOINT_CONCURRENCY")
    p.add_argument("--timeout", type=float, default=300.0, help="longest wait for the burst's deliveries")
    p.add_argument("--bootstrap", default=os.environ.get("KASSE_KAFKA_BOOTSTRAP", "127.0.0.1:19092"))
    p.add_argument("--mongo-uri", default=os.environ.get("KASSE_MONGO_URI", "mongodb://127.0.0.1:37017/"))
    args = p.parse_args()
    result = asyncio.run(run(args))
    lat, thr = result["latency"], result["throughput"]
    print(
        f"\nwebhooks benchmark (one endpoint, fast local receiver, concurrency {args.concurrency}; 2-core box, noisy)"
    )
    print(f"  latency, {lat['events']} events at {lat['rate']:g}/s, event time -> received:")
    hooks_p50, hooks_p99 = lat["webhooks_p50_ms"], lat["webhooks_p99_ms"]
    print(f"    webhooks (signed HTTP delivery)   p50 {hooks_p50:8.1f} ms   p99 {hooks_p99:8.1f} ms")
    print(
        f"    plain Kafka consumer              p50 {lat['kafka_p50_ms']:8.1f} ms   p99 {lat['kafka_p99_ms']:8.1f} ms"
    )
    print(f"  throughput, burst of {thr['events']} events (published at {thr['publish_per_s']:.0f}/s):")
    print(f"    webhooks deliveries/s {thr['webhooks_per_s']:8.1f}")
    print(f"    plain Kafka records/s {thr['kafka_per_s']:8.1f}")
    print(f"  duplicates delivered: {thr['duplicates']}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
