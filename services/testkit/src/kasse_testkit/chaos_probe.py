"""What a failed chaos run leaves to look at: consumer lag, outbox backlog, and where stuck orders stopped.

A chaos run that ends with stuck orders used to leave only the services' logs (the stack was purged), so
"orders stopped reaching payment" could not be told apart from "a consumer sat on a paused partition" or
"the cart never published the event". These read the run's own topics and databases, each bounded:
- `consumer_lag`: per service (consumer group), records not yet handled per topic (end offset minus the
  group's committed offset);
- `outbox_backlog`: per service database, documents whose events are not published yet, and the oldest
  one's age;
- `order_documents`: for a few orders, the document of that `_id` in every collection of every service
  database (FerretDB v1 narrows only on `_id`), summarised: status, version, outbox and marker counts.
"""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from pymongo import AsyncMongoClient

from kasse_common.persistence import PENDING, SINCE
from kasse_testkit.e2e.shop import SERVICES
from kasse_testkit.plugin import Namespace


async def consumer_lag(bootstrap: str, namespace: Namespace, timeout_s: float = 30.0) -> dict[str, dict[str, int]]:
    """Service -> topic (without the prefix) -> records its group has not committed past yet."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout_s * 1000))
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    await admin.start()
    await consumer.start()
    try:
        out: dict[str, dict[str, int]] = {}
        for service in SERVICES:
            group = f"{namespace.topic_prefix}kasse-{service}"
            try:
                committed = await asyncio.wait_for(admin.list_consumer_group_offsets(group), timeout_s)
            except Exception as exc:  # the report must come out whatever the broker says
                out[service] = {"<error>": -1}
                print(f"chaos-probe: offsets of {group}: {exc!r}"[:300], flush=True)
                continue
            if not committed:
                out[service] = {}
                continue
            ends = await consumer.end_offsets(list(committed))
            lag: dict[str, int] = {}
            for tp, meta in committed.items():
                name = tp.topic.removeprefix(namespace.topic_prefix)
                lag[name] = lag.get(name, 0) + max(0, ends.get(tp, 0) - max(meta.offset, 0))
            out[service] = {k: v for k, v in sorted(lag.items()) if v}
        return out
    finally:
        await consumer.stop()
        await admin.close()


async def outbox_backlog(mongo_uri: str, namespace: Namespace) -> dict[str, dict[str, str]]:
    """Service -> collection -> 'N pending, oldest A s' (only collections with a backlog)."""
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_uri, serverSelectionTimeoutMS=20_000)
    try:
        out: dict[str, dict[str, str]] = {}
        now = time.time()
        for service in SERVICES:
            db = client[namespace.database(service)]
            found: dict[str, str] = {}
            for name in await db.list_collection_names():
                docs = await db[name].find({PENDING: True}, {"_id": 1, SINCE: 1}).to_list()
                if docs:
                    oldest = min((float(d.get(SINCE) or now) for d in docs), default=now)
                    found[name] = f"{len(docs)} pending, oldest {now - oldest:.0f} s"
            out[service] = found
        return out
    finally:
        await client.close()


def _summary(doc: dict[str, Any]) -> dict[str, Any]:
    """A document's state without its bulk: scalars as they are, lists and dicts by their size."""
    out: dict[str, Any] = {}
    for key, value in doc.items():
        if isinstance(value, list | dict):
            out[key] = f"<{type(value).__name__} of {len(value)}>"
        elif isinstance(value, str | int | float | bool) or value is None:
            out[key] = value
        else:
            out[key] = str(value)[:40]
    return out


async def order_documents(mongo_uri: str, namespace: Namespace, order_ids: list[str]) -> dict[str, dict[str, Any]]:
    """Order -> 'service.collection' -> summary of the document with that `_id`, where one exists."""
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_uri, serverSelectionTimeoutMS=20_000)
    try:
        out: dict[str, dict[str, Any]] = {oid: {} for oid in order_ids}
        for service in SERVICES:
            db = client[namespace.database(service)]
            for name in await db.list_collection_names():
                for oid in order_ids:
                    doc = await db[name].find_one({"_id": oid})
                    if doc is not None:
                        out[oid][f"{service}.{name}"] = _summary(doc)
        return out
    finally:
        await client.close()


_COMMAND = re.compile(r'^kasse_store_command(s|_seconds)_total\{collection="([^"]*)",command="([^"]*)",.*\}\s+(\S+)$')


def store_latency(metrics_text: str) -> tuple[int, float]:
    """(store commands, mean seconds each) from a service's /metrics: how long the store keeps it waiting."""
    count = seconds = 0.0
    for line in metrics_text.splitlines():
        m = _COMMAND.match(line)
        if m:
            if m.group(1) == "s":
                count += float(m.group(4))
            else:
                seconds += float(m.group(4))
    return int(count), (seconds / count if count else 0.0)


async def store_latencies(client: httpx.AsyncClient, urls: dict[str, str]) -> dict[str, str]:
    """Service -> 'N commands, S s each' since its (re)start; a service that does not answer says so."""
    out: dict[str, str] = {}
    for service, url in urls.items():
        try:
            r = await client.get(url + "/metrics", timeout=20)
            count, mean = store_latency(r.text)
            out[service] = f"{count} commands, {mean:.2f} s each"
        except httpx.HTTPError as exc:
            out[service] = type(exc).__name__
    return out


async def report(bootstrap: str, mongo_uri: str, namespace: Namespace, stuck: list[str], limit: int = 4) -> list[str]:
    """The probe's lines for the chaos report (each part bounded; a part that fails says so)."""
    lines: list[str] = []
    try:
        lag = await asyncio.wait_for(consumer_lag(bootstrap, namespace), 120)
        lines.append(f"consumer lag (uncommitted records per topic) {lag}")
    except Exception as exc:
        lines.append(f"consumer lag: failed {exc!r}"[:300])
    try:
        lines.append(f"outbox backlog {await asyncio.wait_for(outbox_backlog(mongo_uri, namespace), 180)}")
    except Exception as exc:
        lines.append(f"outbox backlog: failed {exc!r}"[:300])
    if stuck:
        try:
            docs = await asyncio.wait_for(order_documents(mongo_uri, namespace, stuck[:limit]), 180)
            for oid, where in docs.items():
                lines.append(f"stuck {oid}:")
                lines.extend(f"    {place}: {summary}" for place, summary in where.items())
                if not where:
                    lines.append("    no document with this _id in any service database")
        except Exception as exc:
            lines.append(f"stuck orders' documents: failed {exc!r}"[:300])
    return lines
