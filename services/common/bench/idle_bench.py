"""The store's CPU with no traffic: on a fresh shop, then after 10,000 orders' worth of data.

Issue 12: "background jobs use indexed queries and cost the same when idle after 10,000 orders as
on a fresh shop". FerretDB v1 uses no secondary index (only a filter on `_id` narrows a read), so a
background loop that filters a collection reads all of it: its cost grows with the data.

What it does, on its OWN Kafka, FerretDB and stripe-mock (deploy/local/stack.py with another
KASSE_HOME and ports; never the shared stack):
1. starts the five services with the production intervals of their background jobs (the settings
   classes' defaults, overriding the e2e shop's test values: outbox belt an hour, payment sweep 5 s,
   invoices 30 s, carrier scans 5 s, unpaid orders, abandoned carts, parked events) — only the
   carrier's simulated timings are short, so sample orders finish. The window (default 300 s) holds
   one whole period of every job but the hourly safety nets (step 6);
2. places a few real orders through the HTTP APIs (cart, checkout, order with Idempotency-Key,
   signed Stripe webhooks: most paid and delivered, some declined) and waits until each is terminal;
3. measures the FerretDB process's CPU (utime + stime from /proc/<pid>/stat) over a window with no
   traffic: the fresh shop;
4. copies the documents those orders left in every service's database (carts, orders, payments,
   invoices, shipments, ...) until there are `--orders` orders' worth, ids rewritten, in bulk
   (`insert_many`): placing 10,000 orders through the APIs takes hours on this shared machine, and
   idle cost depends on what is stored, not on how it got there. Not copied: catalog's product
   documents (one per product; their per-order markers are bounded, see dedupe_bench.py), waiting
   work (due markers, parked and standalone events) and the metrics service's KPI snapshots;
5. measures the same window again (with FerretDB's Go CPU profile of it, `go tool pprof -top`) and
   prints both figures, the services' CPU, the load average and, per window, the 25 queries that
   cost the store most (each service's own count, `kasse_store_commands`: runs/min, store seconds per
   minute, ms each — wall time, queueing included);
6. measures what the hourly safety nets (the outbox relay's belt scan, each DueWork's rebuild) cost
   after the fill: FerretDB's CPU for one whole read of each collection they read.
   Each measurement ends with a control: the store's CPU while every service is stopped (SIGSTOP),
   so the services' background queries are told apart from the store's own idle work. The control
   first lets the store finish the requests the stopped services had already sent (reported as
   `drain_s`/`drain_cpu_s`): they are the services' work, not the store's.

    uv run python services/common/bench/idle_bench.py --orders 10000 --window 300
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import signal
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
from bson import ObjectId
from prometheus_client.parser import text_string_to_metric_families
from pymongo import AsyncMongoClient

from kasse_testkit import ServiceProcess
from kasse_testkit.chaos import Config, OwnStack, Placed, Report, pay_one, place_one, seed_products
from kasse_testkit.e2e.shop import SERVICES, Shop, executable
from kasse_testkit.infrastructure import Infrastructure
from kasse_testkit.plugin import Namespace

TICKS = os.sysconf("SC_CLK_TCK")
DRAIN_MAX_S = 180.0


class PatientShop(Shop):
    """The e2e shop, given longer to start: a fresh broker under a loaded machine takes minutes to
    offer its group coordinator."""

    async def start(self) -> Shop:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for name in SERVICES:
            self.processes[name] = ServiceProcess(
                [executable(name)], self.env(name), port=self.ports[name], log_path=self.log_dir / f"{name}.log"
            )

        async def start(process: ServiceProcess) -> None:
            for attempt in range(4):  # a service may exit when a topic it reads is not created yet
                try:
                    await process.start(timeout=420)
                    return
                except AssertionError:
                    if attempt == 3:
                        raise
                    await asyncio.sleep(5)

        await asyncio.gather(*(start(process) for process in self.processes.values()))
        return self


NOT_COPIED = {("catalog", "products")}  # one document per product, not per order
# The KPI engine's snapshots hold its whole state in a few documents: copies of them are no history.
NOT_COPIED_SERVICES = {"metrics"}
# What waits, not what happened: due-work markers (kasse_common.due: only orders of the last minutes
# have one), parked and standalone events. A shop's history does not multiply them.
TRANSIENT = {"parked_events", "outbox_events"}


def production_defaults() -> dict[str, str]:
    """The production default of every job interval the e2e shop shortens for its tests (outbox scan
    0.2 s, payment sweep 1 s, carrier scans 0.5 s), read from the settings classes so they stay true.

    Until 2026-12-07 the bench ran with the shop's test values: "fresh 22.5 % vs 73.6 % after 10,000
    orders" was the outbox safety-net scan every 0.2 s, not the production idle cost."""
    from kasse_common.settings import ServiceSettings
    from kasse_payment.settings import PaymentSettings
    from kasse_shipping.settings import ShippingSettings

    def default(cls: Any, name: str) -> str:
        return str(cls.model_fields[name].default)

    outbox = default(ServiceSettings, "outbox_poll_interval_s")
    return {
        **{f"KASSE_{service.upper()}_OUTBOX_POLL_INTERVAL_S": outbox for service in SERVICES},
        "KASSE_PAYMENT_SWEEP_INTERVAL_S": default(PaymentSettings, "sweep_interval_s"),
        "KASSE_SHIPPING_CARRIER_SCAN_INTERVAL_S": default(ShippingSettings, "carrier_scan_interval_s"),
    }


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


async def cpu_pct(pid: int, seconds: float) -> float:
    before, started = cpu_seconds(pid), time.monotonic()
    await asyncio.sleep(seconds)
    return 100 * (cpu_seconds(pid) - before) / (time.monotonic() - started)


async def store_alone(pids: dict[str, int], window_s: float) -> dict[str, Any]:
    """The store's own CPU with every service stopped (SIGSTOP), % of one core: the control.

    A stopped client's requests already sent are still answered: FerretDB v1 finishes every full
    collection read in flight (seconds of CPU each after 10,000 orders, longer under load). So the
    control first waits until the store is quiet (two 2-second slices under 1 % of a core, at most
    `DRAIN_MAX_S`), reports that drain apart, then measures. Without the drain the services' own
    queries were counted as "the store's own work" (23.8 % with every service stopped, 0.0 % here).
    """
    services = [pid for name, pid in pids.items() if name != "ferretdb"]
    for pid in services:
        os.kill(pid, signal.SIGSTOP)
    try:
        drain_cpu, started, quiet = cpu_seconds(pids["ferretdb"]), time.monotonic(), 0
        while quiet < 2 and time.monotonic() - started < DRAIN_MAX_S:
            quiet = quiet + 1 if await cpu_pct(pids["ferretdb"], 2.0) < 1.0 else 0
        drained_s = time.monotonic() - started
        drain_cpu = cpu_seconds(pids["ferretdb"]) - drain_cpu
        return {
            "ferretdb_cpu_pct_services_stopped": round(await cpu_pct(pids["ferretdb"], window_s), 1),
            "drain_s": round(drained_s, 1),
            "drain_cpu_s": round(drain_cpu, 1),
        }
    finally:
        for pid in services:
            os.kill(pid, signal.SIGCONT)


async def cpu_profile(debug_port: int | None, seconds: float, path: Path) -> None:
    """FerretDB's Go CPU profile over `seconds` (its debug listener's /debug/pprof), for `go tool pprof`."""
    if debug_port is None:
        return
    async with httpx.AsyncClient(timeout=seconds + 60) as client:
        r = await client.get(f"http://127.0.0.1:{debug_port}/debug/pprof/profile", params={"seconds": int(seconds)})
    await asyncio.to_thread(path.write_bytes, r.content)


Query = tuple[str, str, str, str]  # service, command, collection, filter shape


async def store_commands(ports: dict[str, int]) -> dict[Query, tuple[float, float]]:
    """Each service's commands to the store so far (count, seconds), from its /metrics
    (`kasse_store_commands`, `kasse_store_command_seconds`, see kasse_common.mongo)."""
    totals: dict[Query, list[float]] = {}
    async with httpx.AsyncClient(timeout=30) as client:
        for service, port in ports.items():
            try:
                text = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
            except httpx.HTTPError:
                continue
            for family in text_string_to_metric_families(text):
                if family.name not in ("kasse_store_commands", "kasse_store_command_seconds"):
                    continue
                for sample in family.samples:
                    if not sample.name.endswith("_total"):
                        continue
                    labels = sample.labels
                    key = (service, labels["command"], labels["collection"], labels["filter"])
                    slot = 0 if family.name == "kasse_store_commands" else 1
                    totals.setdefault(key, [0.0, 0.0])[slot] = sample.value
    return {k: (v[0], v[1]) for k, v in totals.items()}


def busiest(
    before: dict[Query, tuple[float, float]], after: dict[Query, tuple[float, float]], elapsed: float, top: int = 25
) -> list[dict[str, Any]]:
    """The queries that cost the store most in the window: per query, runs/min and store seconds per minute."""
    rows: list[dict[str, Any]] = []
    for key, (count, seconds) in after.items():
        count0, seconds0 = before.get(key, (0.0, 0.0))
        if count - count0 <= 0:
            continue
        service, command, collection, shape = key
        rows.append(
            {
                "query": f"{service} {command} {collection} {shape}",
                "per_min": round(60 * (count - count0) / elapsed, 1),
                "store_s_per_min": round(60 * (seconds - seconds0) / elapsed, 3),
                "ms_each": round(1000 * (seconds - seconds0) / (count - count0), 1),
            }
        )
    return sorted(rows, key=lambda r: -float(r["store_s_per_min"]))[:top]


async def measure(
    pids: dict[str, int],
    window_s: float,
    *,
    ports: dict[str, int] | None = None,
    debug_port: int | None = None,
    profile: Path | None = None,
) -> dict[str, Any]:
    """CPU of each process over `window_s` seconds of no traffic, as % of one core, then the control.

    With the services' `ports`, also the queries that cost the store most in the window (the
    services' own count of their commands and of the store's time for them)."""
    commands_before = await store_commands(ports or {})
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    load_before = load_average()
    started = time.monotonic()
    if profile is not None:
        await asyncio.gather(asyncio.sleep(window_s), cpu_profile(debug_port, window_s, profile))
    else:
        await asyncio.sleep(window_s)
    elapsed = time.monotonic() - started
    used = {name: cpu_seconds(pid) - before[name] for name, pid in pids.items()}
    queries = busiest(commands_before, await store_commands(ports or {}), elapsed)
    alone = await store_alone(pids, min(window_s / 2, 60.0))
    return {
        "ferretdb_cpu_pct": round(100 * used["ferretdb"] / elapsed, 1),
        **alone,
        "costliest_queries": queries,
        "services_cpu_pct": {n: round(100 * s / elapsed, 1) for n, s in used.items() if n != "ferretdb"},
        "window_s": round(elapsed, 1),
        "load_average": f"{load_before} -> {load_average()}",
    }


async def hourly_belts(mongo: AsyncMongoClient[Any], namespace: Namespace, ferretdb_pid: int) -> dict[str, Any]:
    """What the periodic safety nets cost the store now: FerretDB's CPU for one whole-collection read of
    each collection a belt reads (the outbox relay's `{_outbox_pending: true}` scan of every outbox
    collection, each DueWork's rebuild of its source collection), read here one at a time with a filter
    matching nothing (FerretDB v1 reads and decodes every row whatever the filter), amortised over each
    belt's default period (the outbox's `outbox_poll_interval_s`, DueWork's `rebuild_every_s`; both a day
    since 2026-12-07, an hour before — the function keeps its name for the figures in the notes)."""
    from kasse_common.due import A_DAY
    from kasse_common.settings import ServiceSettings

    outbox_period_s = float(ServiceSettings.model_fields["outbox_poll_interval_s"].default)
    rebuild_period_s = A_DAY
    per_read: dict[str, float] = {}
    per_hour: dict[str, float] = {}
    for service in SERVICES:
        db = mongo[namespace.database(service)]
        names = await db.list_collection_names()
        rebuilds = Counter(n.split("_due_")[0] for n in names if "_due_" in n)  # one per DueWork
        for name in sorted(names):
            indexes = {i["name"] async for i in await db[name].list_indexes()}
            scans = int("outbox_pending" in indexes)
            if not scans + rebuilds[name]:
                continue
            before = cpu_seconds(ferretdb_pid)
            await db[name].find({"_kasse_bench_matches_nothing": True}, {"_id": 1}).to_list()
            cost = cpu_seconds(ferretdb_pid) - before
            per_read[f"{service}.{name}"] = round(cost, 2)
            per_hour[f"{service}.{name}"] = 3600 * cost * (scans / outbox_period_s + rebuilds[name] / rebuild_period_s)
    total = sum(per_hour.values())
    return {
        "periods_s": {"outbox_belt": outbox_period_s, "due_work_rebuild": rebuild_period_s},
        "ferretdb_cpu_s_per_hour": round(total, 2),
        "as_pct_of_a_core": round(100 * total / 3600, 3),
        "cpu_s_per_whole_read": per_read,
    }


def rewrite(value: Any, old: list[str], suffix: str) -> Any:
    """The document again, every sample id in it made another order's."""
    if isinstance(value, str):
        for o in old:
            if o in value:
                value = value.replace(o, o + suffix)
        return value
    if isinstance(value, dict):
        return {rewrite(k, old, suffix) if isinstance(k, str) else k: rewrite(v, old, suffix) for k, v in value.items()}
    if isinstance(value, list):
        return [rewrite(v, old, suffix) for v in value]
    return value


async def fill(mongo: AsyncMongoClient[Any], namespace: Namespace, placed: list[Placed], orders: int) -> dict[str, int]:
    """Copy the sample orders' documents until `orders` orders' worth are stored; docs per collection."""
    sample_ids = [p.order_id for p in placed]
    copies = max(0, orders // len(placed) - 1)
    written: dict[str, int] = {}
    for service in ("catalog", "cart", "payment", "shipping", "metrics"):
        if service in NOT_COPIED_SERVICES:
            continue
        db = mongo[namespace.database(service)]
        for name in await db.list_collection_names():
            if (service, name) in NOT_COPIED or "_due_" in name or name in TRANSIENT:
                continue
            docs = await db[name].find({}).to_list()
            mine = [d for d in docs if any(o in json.dumps(d, default=str) for o in sample_ids)]
            if not mine:
                continue
            # Other ids a document holds (cart, payment intent, shipment) get the same suffix.
            old = sorted({*sample_ids, *(str(d["_id"]) for d in mine if isinstance(d["_id"], str))}, key=len)[::-1]
            batch: list[dict[str, Any]] = []
            for n in range(copies):
                suffix = f"-b{n}"
                for d in mine:
                    clone = rewrite(d, old, suffix)
                    if not isinstance(d["_id"], str):
                        clone["_id"] = ObjectId()
                    batch.append(clone)
                if len(batch) >= 1000:
                    await db[name].insert_many(batch, ordered=False)
                    batch = []
            if batch:
                await db[name].insert_many(batch, ordered=False)
            written[f"{service}.{name}"] = len(mine) * (copies + 1)
    return written


async def sample_orders(client: httpx.AsyncClient, shop: Shop, count: int) -> list[Placed]:
    cfg = Config(products=1, stock_per_product=1_000_000)
    report = Report()
    (product,) = await seed_products(client, shop, cfg)
    fates = ["decline" if n % 5 == 4 else "pay" for n in range(count)]
    placed = [await place_one(client, shop, report, product, 1, fate, n) for n, fate in enumerate(fates)]
    if any(p is None for p in placed) or report.errors:
        raise AssertionError(f"sample orders failed: {dict(report.errors)}")
    orders = [p for p in placed if p is not None]
    await asyncio.gather(*(pay_one(client, shop, report, o) for o in orders))
    terminal = {"pay": "delivered", "decline": "cancelled"}
    await asyncio.gather(
        *(shop.wait_for_status(client, o.order_id, o.token, terminal[o.fate], timeout=300) for o in orders)
    )
    return orders


async def main(orders: int, window_s: float, samples: int, port_base: int) -> dict[str, Any]:
    stack = OwnStack(Config(own_stack=True, port_base=port_base))
    debug_port = port_base + 5  # FerretDB's debug listener (pprof), for the profile of the second window
    stack.config = dataclasses.replace(stack.config, ferretdb_debug_port=debug_port)
    print(f"idle-bench: own stack in {stack.home} (ports from {port_base})", flush=True)
    log_dir = Path(tempfile.mkdtemp(prefix="kasse-idle-bench-"))
    shop: Shop | None = None
    try:
        env = await asyncio.to_thread(stack.start)
        infra = Infrastructure(
            env["KASSE_KAFKA_BOOTSTRAP"], env["KASSE_MONGO_URI"], env["KASSE_STRIPE_API_BASE"], "idle"
        )
        namespace = Namespace("idle" + uuid.uuid4().hex[:8])
        # Every background job at its production interval (the services' defaults), among them the
        # outbox's safety-net scan (300 s, a full read of each outbox collection on FerretDB v1): the
        # window (default 300 s) holds one whole period of each. Only the carrier's simulated timings
        # are short, so the sample orders finish.
        production_intervals = {
            **production_defaults(),
            "KASSE_SHIPPING_CARRIER_DISPATCH_AFTER_S": "2",
            "KASSE_SHIPPING_CARRIER_DELIVER_AFTER_S": "2",
        }
        print(f"idle-bench: settings {production_intervals}", flush=True)
        shop = PatientShop(infra, namespace, log_dir, settings=production_intervals)
        print(f"idle-bench: logs in {log_dir}", flush=True)
        await shop.start()
        ferretdb_pid = int((stack.config.run_dir / "ferretdb.pid").read_text().strip())
        pids = {"ferretdb": ferretdb_pid}
        pids |= {name: p.process.pid for name, p in shop.processes.items() if p.process is not None}
        async with httpx.AsyncClient(timeout=15) as client:
            started = time.monotonic()
            placed = await sample_orders(client, shop, samples)
            print(f"idle-bench: {len(placed)} sample orders terminal in {time.monotonic() - started:.0f} s", flush=True)
        await asyncio.sleep(10)  # the last relays and consumers settle before the quiet window
        fresh = await measure(pids, window_s, ports={n: shop.ports[n] for n in shop.processes})
        print(f"idle-bench: fresh shop: {fresh}", flush=True)
        mongo: AsyncMongoClient[Any] = AsyncMongoClient(infra.mongo_uri)
        started = time.monotonic()
        written = await fill(mongo, namespace, placed, orders)
        fill_s = time.monotonic() - started
        await mongo.close()
        print(f"idle-bench: {orders} orders' documents stored in {fill_s:.0f} s: {written}", flush=True)
        await asyncio.sleep(10)
        profile = log_dir / "ferretdb-after-fill.pprof"
        full = await measure(
            pids, window_s, ports={n: shop.ports[n] for n in shop.processes}, debug_port=debug_port, profile=profile
        )
        print(f"idle-bench: FerretDB's CPU profile of that window: go tool pprof -top {profile}", flush=True)
        print(f"idle-bench: after {orders} orders: {full}", flush=True)
        mongo = AsyncMongoClient(infra.mongo_uri)
        belts = await hourly_belts(mongo, namespace, ferretdb_pid)
        await mongo.close()
        print(f"idle-bench: hourly safety nets after {orders} orders (one process each): {belts}", flush=True)
        return {
            "orders": orders,
            "sample_orders_via_api": len(placed),
            "documents": written,
            "fresh": fresh,
            f"after_{orders}_orders": full,
            "hourly_safety_nets": belts,
            "ratio": round(full["ferretdb_cpu_pct"] / max(fresh["ferretdb_cpu_pct"], 0.1), 2),
        }
    finally:
        if shop is not None:
            await shop.stop()
        await asyncio.to_thread(stack.stop)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--orders", type=int, default=10_000)
    parser.add_argument("--window", type=float, default=300.0, help="seconds of no traffic measured, each time")
    parser.add_argument("--samples", type=int, default=10, help="real orders through the APIs, copied to --orders")
    parser.add_argument("--port-base", type=int, default=19632)
    args = parser.parse_args()

    async def stoppable() -> dict[str, Any]:
        """SIGTERM cancels the run, so its `finally` stops the services and the own stack."""
        task = asyncio.ensure_future(main(args.orders, args.window, args.samples, args.port_base))
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        return await task

    result = asyncio.run(stoppable())
    print("idle-bench: " + json.dumps(result))
