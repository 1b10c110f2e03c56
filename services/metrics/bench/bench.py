"""Benchmark of the metrics service (issue 7). Not a test: run it on purpose, e.g.

    uv run --with quixstreams python services/metrics/bench/bench.py --events 1000000

It needs the local Kafka and Mongo-protocol store (KASSE_KAFKA_BOOTSTRAP, KASSE_MONGO_URI; defaults
127.0.0.1:19092 and mongodb://127.0.0.1:37017/) and only talks to 127.0.0.1. In one run it:
1. pre-fills one topic (6 partitions, keyed by session) with N realistic events: every funnel step,
   searches, abandonments, failed payments and fraud blocks, refunds, reviews. Sessions come from a pool
   generated through the contract models and the kit's `encode`, re-emitted with fresh session ids and
   event times (`SessionPool`), produced with confluent-kafka: 5M events take minutes, not hours;
2. measures ingest throughput over the first `--compare-events` (default: all) of them: (a) a raw poll + `orjson.loads`
   loop with aiokafka (the service's client) and with confluent-kafka, (b) a Quix Streams application
   computing the same per-session funnel counts with its RocksDB state; and over all N: (c) the metrics
   service itself as its own process (checkpoints, offsets and snapshots persisted);
3. (d) KPI freshness with the service running: background load at half of (c)'s rate plus one probe
   event at a time, from the producer's acknowledgement to the probe being counted by
   `GET /v1/kpis/events`; p50 and p99; (e) RSS; (f) SIGKILL and restart to ready; (g) two instances.
Every phase has a time limit; the topics and the database are namespaced and dropped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import GroupCoordinatorNotAvailableError
from pymongo import AsyncMongoClient

from kasse_common.envelope import encode
from kasse_contracts.base import Channel, Money
from kasse_contracts.events import (
    CartAbandoned,
    CartAction,
    CartUpdated,
    CheckoutStarted,
    LineItem,
    PaymentCaptured,
    PaymentFailed,
    PaymentRefunded,
    ProductSearched,
    ProductViewed,
    ReviewSubmitted,
    ShipmentDelivered,
    ShipmentDispatched,
)
from kasse_testkit.waiting import wait_until

STOREFRONT = "kasse.storefront.v1"
STEP_BY_TYPE = {
    "io.kasse.catalog.ProductViewed.v1": "viewed",
    "io.kasse.cart.CartUpdated.v1": "added_to_cart",
    "io.kasse.cart.CheckoutStarted.v1": "checkout_started",
    "io.kasse.cart.OrderPlaced.v1": "order_placed",
    "io.kasse.payment.PaymentCaptured.v1": "paid",
    "io.kasse.shipping.ShipmentDispatched.v1": "shipped",
    "io.kasse.shipping.ShipmentDelivered.v1": "delivered",
}
CATEGORIES = ("kitchen", "garden", "toys", "books", "audio", "sports")


def eur(amount: int) -> Money:
    return Money(amount=amount, currency="EUR")


def session_events(rng: random.Random, start: datetime) -> list[Any]:
    """One session's events, in time order, with realistic drop-off between the steps."""
    from kasse_testkit.samples import order_placed

    sid = uuid.uuid4().hex
    channel = rng.choice(list(Channel))
    product = f"prod_{rng.randrange(2000)}"
    category = CATEGORIES[hash(product) % len(CATEGORIES)]
    price = rng.randrange(500, 20000)
    t = start
    out: list[Any] = []

    def tick(seconds: int = 5) -> datetime:
        nonlocal t
        t = t + timedelta(seconds=rng.randrange(1, seconds))
        return t

    for _ in range(rng.randrange(0, 3)):
        out.append(ProductSearched(occurred_at=tick(), session_id=sid, query="lamp", result_count=12, channel=channel))
    for _ in range(rng.randrange(1, 4)):
        out.append(
            ProductViewed(
                occurred_at=tick(),
                session_id=sid,
                product_id=product,
                sku=f"S-{product}",
                category=category,
                price=eur(price),
                channel=channel,
            )
        )
    if rng.random() > 0.35:
        return out
    line = LineItem(
        product_id=product,
        sku=f"S-{product}",
        name=product,
        category=category,
        quantity=1,
        unit_price=eur(price),
        line_total=eur(price),
    )
    cart = f"cart_{sid}"
    out.append(
        CartUpdated(
            occurred_at=tick(),
            session_id=sid,
            cart_id=cart,
            action=CartAction.ADDED,
            line=line,
            quantity_delta=1,
            items=[line],
            subtotal=eur(price),
            total=eur(price),
        )
    )
    if rng.random() < 0.3:
        out.append(
            CartAbandoned(
                occurred_at=tick(60),
                session_id=sid,
                cart_id=cart,
                item_count=1,
                subtotal=eur(price),
                last_activity_at=t,
            )
        )
        return out
    out.append(
        CheckoutStarted(
            occurred_at=tick(), session_id=sid, cart_id=cart, items=[line], subtotal=eur(price), total=eur(price)
        )
    )
    if rng.random() < 0.15:
        return out
    order = f"ord_{sid}"
    out.append(order_placed(order, [line], session_id=sid, cart_id=cart, occurred_at=tick(), channel=channel))
    roll = rng.random()
    if roll < 0.05:
        out.append(
            PaymentFailed(occurred_at=tick(), session_id=sid, order_id=order, reason="card_declined", amount=eur(price))
        )
        return out
    if roll < 0.08:
        out.append(
            PaymentFailed(
                occurred_at=tick(), session_id=sid, order_id=order, reason="fraud_suspected", amount=eur(price)
            )
        )
        return out
    out.append(
        PaymentCaptured(
            occurred_at=tick(), session_id=sid, order_id=order, payment_intent_id=f"pi_{sid}", amount=eur(price)
        )
    )
    out.append(
        ShipmentDispatched(
            occurred_at=tick(600),
            session_id=sid,
            order_id=order,
            shipment_id=f"s_{sid}",
            carrier="SimPost",
            tracking_number="T",
            dispatched_at=t,
        )
    )
    out.append(
        ShipmentDelivered(occurred_at=tick(600), session_id=sid, order_id=order, shipment_id=f"s_{sid}", delivered_at=t)
    )
    if rng.random() < 0.05:
        out.append(
            PaymentRefunded(
                occurred_at=tick(),
                session_id=sid,
                order_id=order,
                refund_id=f"re_{sid}",
                payment_intent_id=f"pi_{sid}",
                amount=eur(price),
                total_refunded=eur(price),
                full=True,
            )
        )
    if rng.random() < 0.1:
        out.append(
            ReviewSubmitted(
                occurred_at=tick(),
                product_id=product,
                review_id=f"rv_{sid}",
                rating=rng.randrange(1, 6),
                verified_purchase=True,
                session_id=sid,
                rating_average=4.0,
                rating_count=1,
            )
        )
    return out


def encoded(event: Any, key: str) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
    record = encode(event, service="bench", trace_headers={})
    return key.encode(), record.value, [(k, v.encode()) for k, v in record.headers.items()]


async def create_topic(bootstrap: str, name: str, partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])
    finally:
        await admin.close()


_ISO = re.compile(rb'"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ)"')
_TEMPLATE_BASE = datetime(2026, 1, 1, tzinfo=UTC)


_SID = -1  # the slot of the session id in a template (timestamps are slots >= 0: seconds after the start)


class SessionPool:
    """Sessions generated through the contract models (so every record is a valid contract event, encoded
    by the kit's `encode`), re-emitted with a fresh session id and a new event time.

    Building a pydantic model per event made a 200k pre-fill take minutes on a loaded machine; a 5M one
    would take hours. Each pooled record is kept as a `bytes % (...)` template with a slot for the session
    id and for every timestamp, so emitting it writes the same bytes `encode` would write for that session
    at that time (timestamps are whole seconds, as the template's are)."""

    def __init__(self, rng: random.Random, size: int) -> None:
        # per session: (its slots, [(value template, value slots, subject template, subject slots, headers)])
        self.sessions: list[
            tuple[list[int], list[tuple[bytes, tuple[int, ...], bytes, tuple[int, ...], list[Any]]]]
        ] = []
        for _ in range(size):
            events = session_events(rng, _TEMPLATE_BASE)
            sid = events[0].session_id.encode()
            records = []
            used: set[int] = set()
            for ev in events:
                record = encode(ev, service="bench", trace_headers={})
                value, value_slots = self._template(record.value, sid)
                subject, subject_slots = self._template(record.headers["ce_subject"].encode(), sid)
                used |= {*value_slots, *subject_slots}
                static = [
                    (k, v.encode()) for k, v in record.headers.items() if k not in ("ce_id", "ce_time", "ce_subject")
                ]
                records.append((value, value_slots, subject, subject_slots, static))
            self.sessions.append((sorted(used - {_SID}), records))

    @staticmethod
    def _template(value: bytes, sid: bytes) -> tuple[bytes, tuple[int, ...]]:
        out: list[bytes] = []
        slots: list[int] = []
        for i, piece in enumerate(value.split(sid)):
            if i:
                out.append(b"%s")
                slots.append(_SID)
            pos = 0
            for m in _ISO.finditer(piece):
                at = datetime.fromisoformat(m.group(1).decode().replace("Z", "+00:00"))
                out += [piece[pos : m.start(1)].replace(b"%", b"%%"), b"%s"]
                slots.append(int((at - _TEMPLATE_BASE).total_seconds()))
                pos = m.end(1)
            out.append(piece[pos:].replace(b"%", b"%%"))
        return b"".join(out), tuple(slots)


class _Timestamps:
    """ISO-8601 `...Z` strings of whole seconds, as pydantic writes them, cached (times move forward)."""

    def __init__(self) -> None:
        self.cache: dict[int, bytes] = {}

    def __call__(self, second: int) -> bytes:
        text = self.cache.get(second)
        if text is None:
            if len(self.cache) > 200_000:
                self.cache.clear()
            text = self.cache[second] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(second)).encode()
        return text


def prefill_records(n: int, seed: int, event_seconds: float, start: datetime, pool_size: int = 4000) -> Any:
    """(key, value, headers) of `n` events: sessions drawn from a pool of generated ones, each with a new
    session id, starting `event_seconds` per event apart plus up to ~2 h (sessions overlap), so the history
    spans n x event_seconds of event time and sessions fold out of the service's conversion window."""
    rng = random.Random(seed)
    pool = SessionPool(rng, pool_size)
    stamp = _Timestamps()
    run = uuid.uuid4().hex
    id_prefix = f"{run[:8]}-{run[8:12]}-4{run[13:16]}-8{run[17:20]}-"
    sent_at = ("ce_time", datetime.now(UTC).isoformat().encode())
    base = int(start.timestamp())
    sent = 0
    session_no = 0
    while sent < n:
        t0 = base + int(sent * event_seconds) + rng.randrange(7000)
        session_no += 1
        sid = f"{run[:8]}{session_no:024x}".encode()
        used, records = pool.sessions[rng.randrange(len(pool.sessions))]
        fill = {rel: stamp(t0 + rel) for rel in used}
        fill[_SID] = sid
        for value, value_slots, subject, subject_slots, static in records[: n - sent]:
            headers = [
                ("ce_id", f"{id_prefix}{sent:012x}".encode()),
                sent_at,
                ("ce_subject", subject % tuple(map(fill.__getitem__, subject_slots))),
                *static,
            ]
            yield sid, value % tuple(map(fill.__getitem__, value_slots)), headers
            sent += 1


def prefill(bootstrap: str, topic: str, n: int, seed: int, event_seconds: float) -> int:
    """Pre-fill with confluent-kafka (librdkafka batches in its own threads: ~10x aiokafka's send rate).
    Every record is acknowledged (acks=1) or the pre-fill fails."""
    from confluent_kafka import KafkaException, Producer

    # All pre-filled events happened more than 30 minutes ago: the freshness probes (reviews in the
    # last 5 minutes) are then the only events the probe counter sees.
    start = datetime.now(UTC) - timedelta(hours=3) - timedelta(seconds=n * event_seconds)
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "acks": 1,
            "linger.ms": 50,
            "batch.size": 1_000_000,
            "queue.buffering.max.messages": 500_000,
            "queue.buffering.max.kbytes": 512 * 1024,
            "enable.idempotence": False,
        }
    )
    errors: list[Any] = []

    def delivered(err: Any, _msg: Any) -> None:
        if err is not None:
            errors.append(err)

    sent = 0
    for key, value, headers in prefill_records(n, seed, event_seconds, start):
        while True:
            try:
                producer.produce(topic, value, key, headers=headers, on_delivery=delivered)
                break
            except BufferError:
                producer.poll(0.05)
        sent += 1
        if sent % 10_000 == 0:
            producer.poll(0)
            if errors:
                raise KafkaException(errors[0])
    if producer.flush(300) or errors:
        raise RuntimeError(f"pre-fill: {len(errors)} records refused, first {errors[:1]}; or not flushed in 300 s")
    return sent


async def raw_loop(bootstrap: str, topic: str, n: int, timeout: float) -> tuple[int, float, float]:
    """aiokafka (the service's client): (events read, events/s, CPU µs per event) over the first `n` or
    `timeout` s."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"bench-raw-{uuid.uuid4().hex[:6]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_poll_records=5000,
    )
    await consumer.start()
    count = 0
    t0 = None
    cpu0 = time.process_time()  # CPU of this process, every thread (librdkafka's too): robust to the load
    deadline = time.monotonic() + timeout
    try:
        while count < n and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200, max_records=5000)
            for msgs in batch.values():
                if t0 is None:
                    t0 = time.perf_counter()
                for m in msgs:
                    orjson.loads(m.value)  # the client's ceiling: no envelope, no validation
                    count += 1
    finally:
        await consumer.stop()
    elapsed = time.perf_counter() - (t0 or time.perf_counter())
    return count, (count / elapsed if elapsed else 0.0), 1e6 * (time.process_time() - cpu0) / max(count, 1)


def raw_loop_confluent(bootstrap: str, topic: str, n: int, timeout: float) -> tuple[int, float, float]:
    """The same loop with confluent-kafka (librdkafka fetches in its own threads; `consume` hands out
    batches): poll + `orjson.loads` of the value, no validation. (events read, events/s, CPU µs per event)."""
    from confluent_kafka import Consumer

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-raw-ck-{uuid.uuid4().hex[:6]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    count = 0
    t0 = None
    cpu0 = time.process_time()  # CPU of this process, every thread (librdkafka's too): robust to the load
    deadline = time.monotonic() + timeout
    try:
        while count < n and time.monotonic() < deadline:
            msgs = consumer.consume(num_messages=5000, timeout=0.2)
            if msgs and t0 is None:
                t0 = time.perf_counter()
            for m in msgs:
                if m.error() is None:
                    orjson.loads(m.value())
                    count += 1
    finally:
        consumer.close()
    elapsed = time.perf_counter() - (t0 or time.perf_counter())
    return count, (count / elapsed if elapsed else 0.0), 1e6 * (time.process_time() - cpu0) / max(count, 1)


def _quix_process(bootstrap: str, topic: str, n: int, timeout: float, out: Any) -> None:
    from quixstreams import Application

    state_dir = tempfile.mkdtemp(prefix="bench-quix-")
    app = Application(
        broker_address=bootstrap,
        consumer_group=f"bench-quix-{uuid.uuid4().hex[:6]}",
        auto_offset_reset="earliest",
        state_dir=state_dir,
        loglevel="WARNING",
    )
    source = app.topic(topic, value_deserializer="json")
    sdf = app.dataframe(source)
    funnel: dict[str, int] = {}
    first: list[float] = []
    seen = [0]

    def count_step(value: Any, key: Any, timestamp: int, headers: Any, state: Any) -> None:
        # The same work per event: the envelope's id and type from the headers, dedupe by id in the
        # session's state, the session's first time at each step, a count per step.
        if not first:
            first.append(time.perf_counter())
            first.append(time.process_time())
        seen[0] += 1
        if seen[0] == n or time.perf_counter() - first[0] > timeout:
            app.stop()  # bounded: the rate over what it read when the time is up
        h = {k: v.decode() for k, v in (headers or ())}
        if state.get("id:" + h["ce_id"]):
            return
        state.set("id:" + h["ce_id"], 1)
        step = STEP_BY_TYPE.get(h["ce_type"])
        if step is not None and not state.get(step):
            state.set(step, value.get("occurred_at"))
            funnel[step] = funnel.get(step, 0) + 1

    sdf.update(count_step, stateful=True, metadata=True)
    app.run(count=n, timeout=timeout, collect=False)
    elapsed = time.perf_counter() - (first[0] if first else time.perf_counter())
    cpu_us = 1e6 * (time.process_time() - first[1]) / max(seen[0], 1) if first else float("nan")
    out.put({"rate": seen[0] / elapsed if elapsed else 0.0, "events": seen[0], "funnel": funnel, "cpu_us": cpu_us})


def quix_rate(bootstrap: str, topic: str, n: int, timeout: float) -> dict[str, Any]:
    ctx = multiprocessing.get_context("spawn")  # no fork of a process running an event loop and threads
    queue: Any = ctx.Queue()
    proc = ctx.Process(target=_quix_process, args=(bootstrap, topic, n, timeout, queue))
    proc.start()
    try:
        return queue.get(timeout=timeout + 120)  # type: ignore[no-any-return]
    finally:
        proc.join(30)
        if proc.is_alive():
            proc.kill()


def rss_mb(pid: int) -> float:
    """Resident memory of a process (Linux /proc), MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def children(pid: int) -> list[int]:
    """The process's child processes (the metrics service's router runs in one: its memory and CPU count)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # ended meanwhile
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def alive(pid: int) -> bool:
    """Running (not ended, nor a zombie its new parent has not reaped yet)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system, every thread) a process has used (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Service:
    """One metrics process of the benchmark."""

    def __init__(
        self,
        args: argparse.Namespace,
        prefix: str,
        database: str,
        port: int,
        name: str,
        instance: str = "",
        deployment: str = "",
    ) -> None:
        self.args, self.port, self.database = args, port, database
        # The router's consumer group (offsets in Kafka) and the internal topic of this deployment.
        self.group = f"{prefix}kasse-metrics" + (f"-{deployment}" if deployment else "")
        self.internal_topic = prefix + (
            f"kasse.metrics-{deployment}.facts-by-session.v1" if deployment else "kasse.metrics.facts-by-session.v1"
        )
        env = {
            **os.environ,
            "KASSE_METRICS_KAFKA_BOOTSTRAP": args.bootstrap,
            "KASSE_METRICS_MONGO_URI": args.mongo_uri,
            "KASSE_METRICS_MONGO_DATABASE": database,
            "KASSE_METRICS_TOPIC_PREFIX": prefix,
            "KASSE_METRICS_HTTP_PORT": str(port),
            "KASSE_METRICS_LOG_LEVEL": args.service_log_level,
            "KASSE_PROFILE": "development",
            # A day: sessions idle that long are folded (the default 30 days would keep the whole
            # pre-filled history of a few days of event time).
            "KASSE_METRICS_FUNNEL_CONVERSION_WINDOW_S": str(args.conversion_window_s),
            # (g) runs as another deployment: its own router group (the first one's offsets are committed in
            # Kafka) and internal topic, so it routes the whole topic again into a fresh database.
            "KASSE_METRICS_DEPLOYMENT": deployment,
        }
        # A deployed image holds its modules compiled (the Dockerfile's UV_COMPILE_BYTECODE=1); a dev
        # shell may forbid writing bytecode, and then every start compiles every module from source again
        # (~2.3x the import CPU). Let the first start write the cache, so (f) times a start like a
        # deployed one.
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        if args.static_membership:
            # As the chart does (the pod name): the restarted process is the same group member as the
            # one killed, so it takes its partitions back without waiting for the old session to expire.
            env["KASSE_METRICS_GROUP_INSTANCE_ID"] = f"{prefix}{instance or name}"
        self.log = open(Path(tempfile.gettempdir()) / f"bench-metrics-{prefix.strip('.')}-{name}.log", "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from kasse_metrics.main import run; run()"],
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.started = time.perf_counter()
        self.http = httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10)

    async def wait_ready(self, timeout: float, path: str = "/readyz") -> float:
        """Seconds from the process start until `path` answers 200."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                if (await self.http.get(path)).status_code == 200:
                    return time.perf_counter() - self.started
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"metrics service not ready; see {self.log.name}")
            await asyncio.sleep(0.1)

    def _processes(self) -> list[int]:
        return [self.proc.pid, *children(self.proc.pid)]

    def rss_mb(self) -> float:
        """The service's resident memory: its process and its router's."""
        return sum(rss_mb(pid) for pid in self._processes())

    def cpu_s(self) -> float:
        """CPU seconds the service has used: its process and its router's (a router that was replaced is
        not counted: none is in the bench's phases)."""
        return sum(cpu_s(pid) for pid in self._processes())

    async def stop(self, kill: bool = False) -> None:
        await self.http.aclose()
        router = children(self.proc.pid)
        if kill:
            # As a pod is killed: every process of it (the service leads its own process group).
            os.killpg(self.proc.pid, signal.SIGKILL)
        else:
            self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        # The router's process ends with its service (its stdin closes); wait for it, so the next phase
        # starts with the machine as free as before.
        try:
            await wait_until(lambda: not any(alive(pid) for pid in router), timeout=15, message="router process ended")
        finally:
            self.log.close()


async def ingest_rate(
    args: argparse.Namespace,
    database: str,
    target: float,
    marks: dict[float, Any] | None = None,
    services: list[Service] | None = None,
    rates: dict[float, float] | None = None,
    group: str = "",
    internal_topic: str = "",
) -> tuple[float, float]:
    """(records, records/s) from the first routed batch until `target` contract records are routed (the
    router's committed offsets, group `group`; the records of that first batch are not counted: their
    time is not known) AND the state stage has stored its offsets up to the internal topic's end.
    `marks`: {records: callback} called once when passed; `rates` gets, for each mark, the rate up to it."""
    mongo: AsyncMongoClient[Any] = AsyncMongoClient(args.mongo_uri)
    offsets = mongo[database]["partition_offsets"]
    admin = AIOKafkaAdminClient(bootstrap_servers=args.bootstrap)
    ends = AIOKafkaConsumer(bootstrap_servers=args.bootstrap)
    await admin.start()
    await ends.start()
    t_first = None
    first_count = 0.0
    ingested = 0.0
    pending = dict(sorted((marks or {}).items()))
    deadline = time.monotonic() + args.phase_timeout
    try:
        while time.monotonic() < deadline:
            try:
                committed = await admin.list_consumer_group_offsets(group)
            except GroupCoordinatorNotAvailableError:
                # A fresh broker creates its offsets topic on the first group's request: not yet there.
                await asyncio.sleep(0.2)
                continue
            ingested = float(sum(meta.offset for meta in committed.values() if meta.offset > 0))
            if ingested and t_first is None:
                t_first, first_count = time.perf_counter(), ingested
            for mark in [m for m in pending if ingested >= m]:
                pending.pop(mark)()
                if rates is not None and t_first is not None:
                    elapsed = time.perf_counter() - t_first
                    rates[mark] = (ingested - first_count) / elapsed if elapsed else float("nan")
            if ingested >= target:
                described = await admin.describe_topics([internal_topic])
                partitions = [p["partition"] for p in described[0]["partitions"]] if described else []
                high = await ends.end_offsets([TopicPartition(internal_topic, p) for p in partitions])
                doc = await offsets.find_one({"_id": "next_offsets"}) or {}
                if partitions and sum(v for k, v in doc.items() if k != "_id") >= sum(high.values()):
                    break
            for s in services or ():
                if s.proc.poll() is not None:
                    raise RuntimeError(f"the metrics service exited ({s.proc.returncode}); see {s.log.name}")
            await asyncio.sleep(0.05)
        else:
            print(
                f"  ingest stopped at {ingested:.0f} of {target:.0f} records after {args.phase_timeout} s", flush=True
            )
    finally:
        await mongo.close()
        await admin.close()
        await ends.stop()
    elapsed = time.perf_counter() - (t_first or time.perf_counter())
    return ingested, ((ingested - first_count) / elapsed if elapsed else 0.0)


async def wait_for_snapshot(args: argparse.Namespace, database: str, timeout: float) -> float:
    """Records covered by the latest snapshot once it covers every stored offset (or at `timeout`)."""
    mongo: AsyncMongoClient[Any] = AsyncMongoClient(args.mongo_uri)
    db = mongo[database]
    deadline = time.monotonic() + timeout
    covered = 0.0
    try:
        while True:
            offsets = await db["partition_offsets"].find_one({"_id": "next_offsets"}) or {}
            stored = float(sum(v for k, v in offsets.items() if k != "_id"))
            # One latest snapshot per internal partition (`latest|<topic>|<partition>`), a few documents.
            headers = [h async for h in db["projection_snapshots"].find({})]
            covered = float(sum(sum((h.get("seen") or {}).values()) for h in headers))
            if (covered and covered >= stored) or time.monotonic() > deadline:
                return covered
            await asyncio.sleep(0.5)
    finally:
        await mongo.close()


async def service_phases(args: argparse.Namespace, prefix: str, token: str) -> dict[str, Any]:
    """(c) rate, (e) RSS, (d) freshness, (f) restart to ready; (g) two instances on a fresh database."""
    nan = float("nan")
    result: dict[str, Any] = {
        "ingested": nan, "rate": nan, "rss_early_mb": nan, "rss_end_mb": nan, "freshness_rate": nan,
        "freshness_ms": [], "restart_s": nan, "restart_rss_mb": nan, "two_ingested": nan, "two_rate": nan,
        "two_rss_mb": [], "failed": [], "rate_compare": nan, "router_rate": nan, "cpu_us": nan, "two_cpu_us": nan,
    }  # fmt: skip
    database = f"bench_{token}_metrics"
    database2 = f"bench_{token}_metrics2"
    try:
        if "c" in args.phases:
            await _one_instance(args, prefix, database, result)
        if "f" in args.phases and "c" in args.phases:
            await _restart(args, prefix, database, result)
        if "g" in args.phases:
            await _two_instances(args, prefix, database2, result)
    finally:
        client: AsyncMongoClient[Any] = AsyncMongoClient(args.mongo_uri)
        await client.drop_database(database)
        await client.drop_database(database2)
        await client.close()
    return result


async def _one_instance(args: argparse.Namespace, prefix: str, database: str, result: dict[str, Any]) -> None:
    """(c), (e), (d); a failure is reported and the later phases still run."""
    service = Service(args, prefix, database, args.port, "one")
    try:
        # Alive, not ready: /readyz waits until the pre-filled topic is consumed, which would leave
        # nothing for (c) to time (it read 651,871 events/s that way: all of it before the first poll).
        await service.wait_ready(120, path="/healthz")
        rss: dict[str, float] = {}
        early = min(args.rss_early_events, args.events)
        rates: dict[float, float] = {}
        cpu: dict[str, float] = {}
        # `early` may equal `args.compare` (both 1M by default): one entry, or the RSS sample is lost (nan).
        marks: dict[float, Any] = {args.compare: lambda: None}
        marks[early] = lambda: rss.setdefault("early", service.rss_mb())
        marks[1] = lambda: cpu.setdefault("start", service.cpu_s())
        result["ingested"], result["rate"] = await ingest_rate(
            args,
            database,
            args.events,
            marks,
            [service],
            rates,
            group=service.group,
            internal_topic=service.internal_topic,
        )
        # A mark's rate is the router's (its committed offsets reached the mark); the state stage, in a process
        # of its own, may still be behind then. Over every event, compare the rate that waits for both, as (g)'s.
        router_rate = rates.get(args.compare, float("nan"))
        result["rate_compare"] = result["rate"] if args.compare >= args.events else router_rate
        result["router_rate"] = router_rate
        result["cpu_us"] = 1e6 * (service.cpu_s() - cpu.get("start", 0.0)) / max(result["ingested"], 1)
        # Wait until the projection shows the pre-filled events (the API is the point).
        deadline = time.monotonic() + args.phase_timeout
        total = 0
        while time.monotonic() < deadline:
            total = (await service.http.get("/v1/kpis/events", params={"window": "all"})).json()["total"]
            if total >= args.events:
                break
            await asyncio.sleep(0.2)
        else:
            print(f"  the API counted only {total} of {args.events} events after {args.phase_timeout} s", flush=True)
        rss["end"] = service.rss_mb()
        result["rss_early_mb"], result["rss_end_mb"] = rss.get("early", float("nan")), rss["end"]
        print(
            f"(c) {result['rate']:,.0f} events/s; (e) RSS {result['rss_early_mb']:.0f} / {rss['end']:.0f} MB "
            f"(load {loadavg()})",
            flush=True,
        )
        result["freshness_rate"] = args.freshness_rate or result["rate"] / 2
        if "d" in args.phases:
            try:
                # Bounded: the probes stop after --freshness-seconds; the margin covers the last probe.
                result["freshness_ms"] = await asyncio.wait_for(
                    freshness(args, prefix, service.http, rate=result["freshness_rate"]), args.freshness_seconds + 60
                )
            except TimeoutError:
                print("(d) FAILED: freshness did not finish in time", flush=True)
                result["freshness_ms"] = []
        # A snapshot is taken every 30 s by default; the restart loads the latest one. Wait until one
        # covers everything stored (bounded), so (f) measures a restart from a current snapshot.
        covered = await wait_for_snapshot(args, database, args.snapshot_wait_s)
        print(f"  snapshot covers {covered:.0f} records before the kill", flush=True)
    except Exception as exc:
        result["failed"].append(f"c-e: {exc!r}")
        print(f"(c)-(e) FAILED: {exc!r}", flush=True)
    finally:
        await service.stop(kill=True)


async def _restart(args: argparse.Namespace, prefix: str, database: str, result: dict[str, Any]) -> None:
    """(f): SIGKILLed above; seconds from the new process's start until /readyz is 200."""
    restarted = Service(args, prefix, database, args.port, "restart", instance="one")
    try:
        result["restart_s"] = await restarted.wait_ready(args.phase_timeout)
        result["restart_rss_mb"] = restarted.rss_mb()
        print(f"(f) ready after {result['restart_s']:.1f} s (load {loadavg()})", flush=True)
    except Exception as exc:
        result["failed"].append(f"f: {exc!r}")
        print(f"(f) FAILED: {exc!r}", flush=True)
    finally:
        await restarted.stop()


async def _two_instances(args: argparse.Namespace, prefix: str, database: str, result: dict[str, Any]) -> None:
    """(g) two instances, one consumer group, a fresh database: each reads its share from the start."""
    pair = [Service(args, prefix, database, args.port + 1 + i, f"pair{i}", deployment="pair") for i in range(2)]
    try:
        for s in pair:
            # Alive, not ready (ready means caught up: nothing left to time), as in (c).
            await s.wait_ready(120, path="/healthz")
        # The first `compare` records (all of them: the pre-fill, the freshness load and probes, when fewer).
        target = min(args.compare, args.events + args.freshness_sent)
        # CPU of both processes from the first routed batch, as (c) counts it: under load, two processes get
        # two shares of the machine, so events/s alone overstates what a second instance adds.
        cpu: dict[str, float] = {}
        marks: dict[float, Any] = {1: lambda: cpu.setdefault("start", sum(s.cpu_s() for s in pair))}
        result["two_ingested"], result["two_rate"] = await ingest_rate(
            args, database, target, marks, services=pair, group=pair[0].group, internal_topic=pair[0].internal_topic
        )
        result["two_cpu_us"] = (
            1e6 * (sum(s.cpu_s() for s in pair) - cpu.get("start", 0.0)) / max(result["two_ingested"], 1)
        )
        result["two_rss_mb"] = [s.rss_mb() for s in pair]
        print(
            f"(g) two instances: {result['two_rate']:,.0f} events/s together "
            f"({result['two_cpu_us']:.0f} µs CPU per event, both processes), RSS "
            + ", ".join(f"{m:.0f} MB" for m in result["two_rss_mb"])
            + f" (load {loadavg()})",
            flush=True,
        )
    except Exception as exc:
        result["failed"].append(f"g: {exc!r}")
        print(f"(g) FAILED: {exc!r}", flush=True)
    finally:
        for s in pair:
            await s.stop()


def _background_load(bootstrap: str, topic: str, rate: float, stop: Any, sent: Any) -> None:
    """(d)'s background load, in a process of its own (spawned), at `rate` events/s: the pre-fill's pooled
    sessions (contract events, byte for byte what `encode` writes) with fresh ids and event times of the last
    two hours, reviews left out (the probes are the only reviews), sent with confluent-kafka. Built through
    the contract models one by one it reached 475 of 1,780 events/s at load 23, and on the probes' event
    loop it delayed the probes' sends and polls."""
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 1, "enable.idempotence": False})
    records = (
        r
        for r in prefill_records(1 << 60, 99, 1.0 / max(rate, 1.0), datetime.now(UTC) - timedelta(hours=2), 500)
        if not any(k == "ce_type" and b"ReviewSubmitted" in v for k, v in r[2])
    )
    pending = next(records)  # the pool is built here (seconds): the clock starts after it
    started = time.perf_counter()
    n = 0
    while not stop.is_set():
        due = int((time.perf_counter() - started) * rate)
        while n < due:
            key, value, headers = pending
            try:
                producer.produce(topic, value, key, headers=headers)
            except BufferError:
                break  # the broker is behind: try again on the next tick
            n += 1
            pending = next(records)
        producer.poll(0)
        with sent.get_lock():
            sent.value = n
        time.sleep(0.002)
    producer.flush(10)


async def freshness(args: argparse.Namespace, prefix: str, http: httpx.AsyncClient, rate: float) -> list[float]:
    """Background load at `rate` events/s (its own process); one ReviewSubmitted probe at a time, ack → counted."""
    producer = AIOKafkaProducer(bootstrap_servers=args.bootstrap, linger_ms=1, acks="all")
    await producer.start()
    topic = prefix + STOREFRONT
    ctx = multiprocessing.get_context("spawn")  # no fork of a process running an event loop and threads
    stop, sent = ctx.Event(), ctx.Value("q", 0)
    loader = ctx.Process(target=_background_load, args=(args.bootstrap, topic, rate, stop, sent), daemon=True)
    loader.start()
    load_started, load_sent_then, busy_then = time.monotonic(), 0, machine_cpu()

    async def reviews() -> int:
        r = await http.get("/v1/kpis/events", params={"window": "5m"})
        return int(r.json()["by_type"].get("ReviewSubmitted", 0))

    samples: list[float] = []
    trace: list[bytes] | None = [] if args.freshness_trace else None
    try:
        for _ in range(600):  # the probes measure under the load: wait (up to 60 s) for it to run
            if sent.value or not loader.is_alive():
                break
            await asyncio.sleep(0.1)
        load_started, load_sent_then = time.monotonic(), sent.value
        busy_then = machine_cpu()
        seen = await reviews()
        end = time.monotonic() + args.freshness_seconds
        while time.monotonic() < end:
            probe = ReviewSubmitted(
                occurred_at=datetime.now(UTC),
                product_id="probe",
                review_id=uuid.uuid4().hex,
                rating=5,
                verified_purchase=False,
                rating_average=5.0,
                rating_count=1,
            )
            key, value, headers = encoded(probe, uuid.uuid4().hex)
            t_send = time.perf_counter()
            await producer.send_and_wait(topic, value, key=key, headers=headers)
            args.freshness_sent += 1
            acked = time.perf_counter()
            acked_wall = time.time()
            deadline = acked + 10
            while await reviews() <= seen:
                if time.perf_counter() > deadline:
                    r = (await http.get("/v1/kpis/events", params={"window": "all"})).json()
                    print(
                        f"probe not seen in 10 s: 5m count {await reviews()}, expected > {seen}; all: {r}", flush=True
                    )
                    break
                await asyncio.sleep(args.poll_ms / 1000)
            samples.append((time.perf_counter() - acked) * 1000)
            if trace is not None:
                # Wall clock, to line up with the service's own timestamps (its log at DEBUG).
                trace.append(
                    orjson.dumps(
                        {
                            "ce_id": dict(headers)["ce_id"].decode(),
                            "send_ms": 1000 * (acked - t_send),
                            "acked": acked_wall,
                            "seen": acked_wall + samples[-1] / 1000,
                        }
                    )
                    + b"\n"
                )
            seen += 1
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await asyncio.to_thread(loader.join, 30)
        if loader.is_alive():
            loader.kill()
        args.freshness_sent += sent.value
        args.freshness_load_achieved = (sent.value - load_sent_then) / max(time.monotonic() - load_started, 1e-9)
        busy_now = machine_cpu()
        if busy_then is not None and busy_now is not None and busy_now[1] > busy_then[1]:
            args.freshness_machine_busy = (busy_now[0] - busy_then[0]) / (busy_now[1] - busy_then[1])
        await producer.stop()
        if trace:
            _append(args.freshness_trace, trace)
    return samples


def _append(path: str, lines: list[bytes]) -> None:
    with open(path, "ab") as f:
        f.writelines(lines)


def machine_cpu() -> tuple[int, int] | None:
    """(busy, total) CPU ticks of the whole machine since boot (Linux `/proc/stat`; None elsewhere)."""
    try:
        with open("/proc/stat") as f:
            ticks = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
    return sum(ticks) - idle, sum(ticks)


def loadavg() -> str:
    return "/".join(f"{v:.1f}" for v in os.getloadavg())


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def main_async(args: argparse.Namespace) -> None:
    load_start = loadavg()
    print(f"load average (1/5/15 min) {load_start}", flush=True)
    token = uuid.uuid4().hex[:8]
    prefix = f"bench-{token}."
    topic = prefix + STOREFRONT
    await create_topic(args.bootstrap, topic, args.partitions)
    t = time.perf_counter()
    n = await asyncio.to_thread(prefill, args.bootstrap, topic, args.events, args.seed, args.event_seconds)
    print(
        f"pre-filled {n} events into {topic} ({args.partitions} partitions) in {time.perf_counter() - t:.1f}s "
        f"(load {loadavg()})",
        flush=True,
    )
    # (a), (b) and (g) read the first `compare` events (rates need no 5M: a Quix app at ~2k events/s would
    # take 40 min); (c) runs through all of them (RSS, restart), and its rate over the same first
    # `compare` events is what (g) is compared with.
    compare = min(args.compare_events or n, n)
    args.compare = compare
    try:
        raw = float("nan")
        if "a" in args.phases:
            read, raw, cpu = await raw_loop(args.bootstrap, topic, compare, args.phase_timeout)
            print(
                f"(a) raw aiokafka poll + orjson.loads loop (no validation): {raw:,.0f} events/s ({read} events; "
                f"{cpu:.1f} µs CPU per event; load {loadavg()})",
                flush=True,
            )
            read, raw_ck, cpu_ck = await asyncio.to_thread(
                raw_loop_confluent, args.bootstrap, topic, compare, args.phase_timeout
            )
            print(
                f"(a') the same loop with confluent-kafka: {raw_ck:,.0f} events/s ({read} events; {cpu_ck:.1f} µs CPU "
                f"per event; "
                f"{raw_ck / raw if raw else float('nan'):.2f}x aiokafka; load {loadavg()})",
                flush=True,
            )
        quix: dict[str, Any] = {"rate": float("nan"), "funnel": {}}
        if not args.skip_quix and "b" in args.phases:
            try:
                quix = await asyncio.to_thread(quix_rate, args.bootstrap, topic, compare, args.phase_timeout)
                print(
                    f"(b) Quix Streams funnel app: {quix['rate']:,.0f} events/s ({quix['events']} events; "
                    f"{quix['cpu_us']:.1f} µs CPU per event); "
                    f"funnel {quix['funnel']} (load {loadavg()})",
                    flush=True,
                )
            except Exception as exc:  # the queue's Empty after the time limit, a crashed process
                print(f"(b) FAILED: {exc!r}", flush=True)
        r = await service_phases(args, prefix, token)
        samples = r["freshness_ms"]
        print(
            f"(c) metrics service (checkpoints, offsets and snapshots persisted): {r['rate']:,.0f} events/s "
            f"({r['ingested']:.0f} records; {r['cpu_us']:.0f} µs CPU per event; {r['rate_compare']:,.0f} events/s over "
            f"the first {compare:,}; its router reached them at {r['router_rate']:,.0f} events/s)",
            flush=True,
        )
        p50 = statistics.median(samples) if samples else float("nan")
        p99 = percentile(samples, 99) if samples else float("nan")
        print(
            f"(d) freshness at {r['freshness_rate']:,.0f} events/s background load "
            f"({args.freshness_load_achieved:,.0f} achieved, its own process), {len(samples)} probes: "
            f"p50 {p50:.1f} ms, p99 {p99:.1f} ms (goal p99 < 100 ms); the machine's {os.cpu_count()} cores "
            f"{100 * args.freshness_machine_busy:.0f} % busy meanwhile (the service, the load, Kafka, the store)"
        )
        early = min(args.rss_early_events, n)
        # What the service actually stored (a phase that hit its time limit stopped short of n).
        got = f"{r['ingested']:,.0f}"
        print(f"(e) RSS after {early:,} events {r['rss_early_mb']:.0f} MB, after {got} events {r['rss_end_mb']:.0f} MB")
        print(
            f"(f) restart to ready after {got} events: {r['restart_s']:.1f} s (RSS then {r['restart_rss_mb']:.0f} MB)"
        )
        print(
            f"(g) two instances: {r['two_rate']:,.0f} events/s together ({r['two_ingested']:.0f} records; "
            f"{r['two_cpu_us']:.0f} µs CPU per event, both processes), RSS "
            + ", ".join(f"{m:.0f} MB" for m in r["two_rss_mb"])
        )
        vs_raw = r["rate"] / raw if raw else float("nan")
        vs_quix = r["rate"] / quix["rate"] if quix["rate"] else float("nan")
        if r["failed"]:
            print("FAILED phases (nan in the summary): " + "; ".join(r["failed"]), flush=True)
        print(f"counts: events={n}, rss_1m_mb measured after {early} events, rss_5m_mb after {got} (stored by (c))")
        print(
            f"goals: vs_quix {vs_quix:.2f} (>= 1.5), vs_raw {vs_raw:.2f} (>= 0.3), fresh_p99 {p99:.0f} ms (< 100), "
            f"rss_end/rss_early {r['rss_end_mb'] / r['rss_early_mb']:.2f} (<= 1.3), restart {r['restart_s']:.1f} s "
            f"(<= 10), two/one {r['two_rate'] / r['rate_compare']:.2f} (>= 1.6; both over the first {compare:,} events)"
        )
        print(f"load average (1/5/15 min) at the start {load_start}, at the end {loadavg()}")
        print(
            f"kpi-bench: service={r['rate']:.0f} raw={raw:.0f} quix={quix['rate']:.0f} vs_raw={vs_raw:.2f} "
            f"vs_quix={vs_quix:.2f} fresh_p99_ms={p99:.0f} rss_1m_mb={r['rss_early_mb']:.0f} "
            f"rss_5m_mb={r['rss_end_mb']:.0f} restart_s={r['restart_s']:.1f} two_instances_ev_s={r['two_rate']:.0f}",
            flush=True,
        )
    finally:
        if not args.keep_topic:
            admin = AIOKafkaAdminClient(bootstrap_servers=args.bootstrap)
            await admin.start()
            try:
                existing = [t for t in await admin.list_topics() if t.startswith(prefix)]
                await admin.delete_topics(existing)
            finally:
                await admin.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", type=int, default=5_000_000)
    p.add_argument("--partitions", type=int, default=6)
    p.add_argument("--bootstrap", default=os.environ.get("KASSE_KAFKA_BOOTSTRAP", "127.0.0.1:19092"))
    p.add_argument("--mongo-uri", default=os.environ.get("KASSE_MONGO_URI", "mongodb://127.0.0.1:37017/"))
    p.add_argument("--port", type=int, default=18005)
    p.add_argument("--phase-timeout", type=float, default=1800.0, help="Seconds each phase may take at most")
    p.add_argument("--freshness-seconds", type=float, default=20.0)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--freshness-rate", type=float, default=0.0, help="Background events/s (default: half of (c))")
    p.add_argument("--poll-ms", type=float, default=10.0, help="KPI API poll interval while waiting for a probe")
    p.add_argument("--skip-quix", action="store_true")
    p.add_argument(
        "--freshness-trace",
        default="",
        help="Append one JSON line per (d) probe (its event id, ack and seen wall-clock times) to this file",
    )
    p.add_argument("--rss-early-events", type=int, default=1_000_000, help="(e): the first RSS sample")
    p.add_argument(
        "--compare-events",
        type=int,
        default=0,
        help="(a), (b) and (g) read the first this many events (0, the default: all, so every ratio compares the"
        " same events; Quix reads 5M in ~3 min here); (c) reads all and reports its rate over the same first ones"
        " too, which (g) is compared with",
    )
    p.add_argument("--event-seconds", type=float, default=0.2, help="Event time between two pre-filled events")
    p.add_argument("--conversion-window-s", type=float, default=86400.0, help="The service's conversion window")
    p.add_argument(
        "--snapshot-wait-s", type=float, default=90.0, help="At most this long for a current snapshot before (f)"
    )
    p.add_argument("--keep-topic", action="store_true")
    p.add_argument(
        "--no-static-membership",
        dest="static_membership",
        action="store_false",
        help="Run the services as dynamic group members (no KASSE_METRICS_GROUP_INSTANCE_ID): the restart"
        " in (f) then waits for the killed member's session to time out",
    )
    p.add_argument(
        "--phases",
        default="abcdefg",
        help="Phases to run, e.g. 'cef' for the restart alone, 'g' for two instances alone: (e) runs with (c), and"
        " (f) needs (c) (it restarts from the state (c) built); the others are skipped (nan) when left out",
    )
    p.add_argument(
        "--service-log-level", default="WARNING", help="The metrics processes' log level (logs in the temp dir)"
    )
    args = p.parse_args()
    args.freshness_sent = 0
    args.freshness_load_achieved = float("nan")
    args.freshness_machine_busy = float("nan")
    for endpoint in (args.bootstrap, args.mongo_uri):
        if "127.0.0.1" not in endpoint and "localhost" not in endpoint:
            raise SystemExit(f"the benchmark only targets 127.0.0.1, not {endpoint}")
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
