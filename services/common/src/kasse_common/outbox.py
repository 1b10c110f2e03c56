"""The outbox relay: publishes pending events with the idempotent producer, then marks them sent.

A commit takes the lease for this process's relay in the same write (`lease_fields`), so the hot
path costs the relay no claim at all. A pass over a collection: find up to `batch_size` pending
documents that are this relay's or free (a lease that expired: another process died), claim the
free ones by `_id` (concurrently; two replicas rarely publish the same events), publish every
document's events concurrently — in `seq` order within a document
and within a Kafka key, each awaiting the broker's acknowledgement — while a side task renews the
leases, then remove exactly the published events from each `_outbox`. Clearing `_outbox_pending` is
conditional on `_outbox_rev` being unchanged, so an event appended meanwhile is never forgotten. A
crash after publishing and before marking means the same events (same `ce_id`) are published
again: readers dedupe on `ce_id`, so nothing is applied twice.

A document whose events the broker refuses does not hold up the others: its lease is set to a
jittered backoff, the failure is logged and counted, and once it has failed `REPORT_AFTER` times in
a row it is reported (ERROR log, `kasse_outbox_refused_documents`) until it goes out.

Writers call `hint(collection, ids)` after a commit: the relay wakes at once and reads exactly those
documents by `_id`, so the usual latency from commit to broker is one produce round trip, whatever
the collection's size. A document the broker refused, or a pass the store failed, stays in the
relay's memory and is tried again by `_id` (with backoff), never left to the scan.

The scan of all pending documents (`{_outbox_pending: true}`) is only the safety net for what no
live process holds in memory. On FerretDB v1 that filter reads the whole collection, so an idle
shop's cost grew with every order stored (issue 12); it runs only when something may have been left:
- when the relay starts (its own process may have died with events pending);
- when another relay of the same database stopped beating: every relay registers in
  `outbox_relays` (`{_id: owner, beat_at}`, renewed every `heartbeat_s` by its own loop, so a hung
  relay stops beating too) and reads that small collection; a registration older than
  `dead_after_s` is removed by one survivor, which then scans (a false alarm costs one scan);
- every `poll_interval_s` (an hour in production), the belt for anything the above missed.
What no scan is needed for: this process's commits (hinted, read by `_id`, also a commit that raised
but may have landed), refused documents (retried from memory) and documents held by another relay
(looked at again by `_id` when that lease runs out). The backlog (pending documents) and the age of
the oldest unpublished event are measured by the scan and kept current in between from memory.

Before (issue 12, 100 concurrent orders): claim, publish each event, mark — one document after the
other, so a burst queued behind the sum of all round trips (and on FerretDB every one of those
filtered writes read the whole collection; deploy/local/stack.py now pushes `_id` down).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pymongo import ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection

from kasse_common.envelope import OutgoingRecord
from kasse_common.messaging import EventPublisher
from kasse_common.persistence import LEASE, OUTBOX, OWNER, PENDING, REV, SINCE, TRACEPARENT
from kasse_common.retry import backoff_delay

log = logging.getLogger(__name__)


def continue_trace(record: OutgoingRecord, traceparent: str) -> OutgoingRecord:
    """Attach an event written outside its document's trace (a webhook, a timer) to that trace.

    Events written inside the document's trace keep their own, more precise, parent span.
    """
    own = record.headers.get("traceparent", "")
    if own.split("-")[1:2] == traceparent.split("-")[1:2]:
        return record
    headers = {**record.headers, "traceparent": traceparent}
    headers.pop("tracestate", None)
    return OutgoingRecord(record.event_id, record.event_type, record.topic, record.key, record.value, headers)


# A document whose events failed to publish this many times in a row is reported (ERROR, gauge).
REPORT_AFTER = 5
# Where the relays of a database say they are alive (see the module docstring).
REGISTRY = "outbox_relays"


@dataclass
class _Watched:
    collection: AsyncCollection[Any]
    delete_when_drained: bool
    trace_per_document: bool
    oldest_age_s: float = 0.0
    failures: dict[Any, int] = field(default_factory=dict)  # doc id -> failed passes in a row
    hinted: dict[Any, None] = field(default_factory=dict)  # ids committed with events here, oldest first
    retry_at: dict[Any, float] = field(default_factory=dict)  # refused doc id -> when to try again (monotonic)
    since: dict[Any, float] = field(default_factory=dict)  # refused doc id -> its oldest event (epoch s)
    rescan_at: float | None = None  # the last scan found more than a batch: scan again then
    scanned_pending: set[Any] = field(default_factory=set)  # pending at the last scan, not sent since


class OutboxRelay:
    def __init__(
        self,
        publisher: EventPublisher,
        *,
        poll_interval_s: float = 300.0,
        batch_size: int = 100,
        lease_s: float = 10.0,
        retry_max_s: float = 300.0,
        heartbeat_s: float = 30.0,
        dead_after_s: float = 120.0,
    ) -> None:
        self._publisher = publisher
        self._registry: AsyncCollection[Any] | None = None  # `outbox_relays` of the watched database
        self._heartbeat_s = heartbeat_s
        self._dead_after_s = dead_after_s
        self._beat_at = -1e9  # monotonic time of this relay's last beat
        self.relays_taken_over = 0
        # Called when this relay found another relay of the database dead (its process died for good).
        self.on_relay_died: Callable[[], object] | None = None
        self._watched: list[_Watched] = []
        self._poll_interval_s = poll_interval_s
        self._batch_size = batch_size
        self._lease_s = lease_s
        self._retry_max_s = retry_max_s
        self._scanned_at = -1e9
        self._owner = uuid.uuid4().hex  # this relay's name on the leases it holds (commits write it too)
        self._wake = asyncio.Event()
        self._pass = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.published = 0
        self.publish_failures = 0
        self.lease_renewals = 0

    def watch(
        self, collection: AsyncCollection[Any], *, delete_when_drained: bool = False, trace_per_document: bool = False
    ) -> None:
        self._watched.append(_Watched(collection, delete_when_drained, trace_per_document))
        if self._registry is None:
            self._registry = collection.database[REGISTRY]

    # -- what Prometheus shows ------------------------------------------------------------------------
    @property
    def backlog(self) -> dict[str, int]:
        """Pending documents per collection (the last scan's count, or what this relay retries if more)."""
        return {w.collection.name: len(w.scanned_pending | w.retry_at.keys() | w.hinted.keys()) for w in self._watched}

    @property
    def oldest_age_s(self) -> dict[str, float]:
        """Age of the oldest unpublished event per collection, seconds (0 when none)."""
        now = time.time()
        return {
            w.collection.name: max(w.oldest_age_s, max((now - t for t in w.since.values()), default=0.0))
            for w in self._watched
        }

    @property
    def refused(self) -> dict[str, int]:
        """Documents whose events failed to publish `REPORT_AFTER` times or more in a row."""
        return {w.collection.name: sum(1 for n in w.failures.values() if n >= REPORT_AFTER) for w in self._watched}

    def notify(self) -> None:
        self._wake.set()

    def hint(self, collection: str, doc_ids: Sequence[Any]) -> None:
        """A commit in this process wrote events to these documents: publish them now, without a scan."""
        for w in self._watched:
            if w.collection.name == collection:
                w.hinted.update(dict.fromkeys(doc_ids))
        self._wake.set()

    def start(self) -> None:
        if self._task is None:
            self._stopping = False
            self._task = asyncio.create_task(self._run(), name="outbox-relay")

    async def stop(self, drain_timeout_s: float = 10.0) -> None:
        """Graceful: let the pass in progress finish (it may hold leases), publish what is pending."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), drain_timeout_s)
            except TimeoutError:
                self._task.cancel()
                try:
                    await self._task
                except asyncio.CancelledError:
                    pass
            self._task = None
        try:
            await asyncio.wait_for(self.drain(), drain_timeout_s)
        except TimeoutError:
            log.warning("outbox not fully drained at shutdown; the next start publishes the rest")
            return  # registered still: when it stops beating, another relay scans for the rest
        except Exception as exc:  # the broker or the store is away: the next start publishes it
            log.warning("outbox not drained at shutdown", extra={"error": repr(exc)[:300]})
            return
        if self._registry is not None:  # left nothing behind: no other relay need scan for it
            try:
                await self._registry.delete_one({"_id": self._owner})
            except Exception as exc:
                log.warning("outbox relay not unregistered", extra={"error": repr(exc)[:300]})

    async def heartbeat(self) -> None:
        """Say this relay is alive; find relays that stopped beating (died or hang) and scan for
        the events they left (one survivor removes the registration, and scans)."""
        if self._registry is None:
            return
        now = time.time()
        await self._registry.update_one({"_id": self._owner}, {"$set": {"beat_at": now}}, upsert=True)
        self._beat_at = time.monotonic()
        for other in await self._registry.find({}).to_list():  # a document per relay of this database
            beat_at = other.get("beat_at") or 0.0
            if other["_id"] == self._owner or beat_at >= now - self._dead_after_s:
                continue
            gone = await self._registry.delete_one({"_id": other["_id"], "beat_at": other.get("beat_at")})
            if gone.deleted_count == 1:
                log.warning(
                    "an outbox relay stopped beating; scanning for the events it left",
                    extra={"relay": str(other["_id"]), "silent_s": round(now - beat_at, 1)},
                )
                self.relays_taken_over += 1
                self._scanned_at = -1e9  # the next pass scans
                if self.on_relay_died is not None:
                    self.on_relay_died()  # e.g. the runtime's DueWork rebuilds (kasse_common.due.rebuild_soon)

    async def drain(self) -> int:
        """Publish everything pending now (what the broker refuses stays pending); how many went out."""
        total = 0
        while True:
            n = await self.run_once(scan=True)
            total += n
            if n == 0:
                return total

    async def run_once(self, *, scan: bool = True) -> int:
        """One pass over every collection: the hinted documents, and with `scan` every pending one."""
        sent = 0
        async with self._pass:  # `drain()` and the background loop never publish the same lease twice
            for watched in self._watched:
                sent += await self._relay_collection(watched, scan)
        return sent

    def _scan_due(self) -> bool:
        now = time.monotonic()
        if now - self._scanned_at >= self._poll_interval_s:
            return True
        return any(w.rescan_at is not None and w.rescan_at <= now for w in self._watched)

    def _next_wake_s(self) -> float:
        """Seconds until the next scan or retry is due."""
        now = time.monotonic()
        due = [self._scanned_at + self._poll_interval_s, self._beat_at + self._heartbeat_s]
        for w in self._watched:
            due.extend(w.retry_at.values())
            if w.rescan_at is not None:
                due.append(w.rescan_at)
        return max(0.01, min(due) - now)

    async def _run(self) -> None:
        failures = 0
        while not self._stopping:
            try:
                self._wake.clear()
                if time.monotonic() - self._beat_at >= self._heartbeat_s:
                    await self.heartbeat()
                scan = self._scan_due()
                sent = await self.run_once(scan=scan)
                if scan:
                    self._scanned_at = time.monotonic()
                failures = 0
                if sent or any(w.hinted for w in self._watched):
                    continue  # there may be more
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the store is away: what was hinted stays hinted, the next pass tries
                failures += 1
                log.warning("outbox relay pass failed; retrying", extra={"error": repr(exc)[:300]})
                await asyncio.sleep(backoff_delay(failures, initial_s=0.5, max_s=10.0))
                continue
            try:
                await asyncio.wait_for(self._wake.wait(), self._next_wake_s())
            except TimeoutError:
                pass

    def lease_fields(self) -> dict[str, Any]:
        """Written with a commit's events: this relay holds them already and publishes them at once."""
        return {LEASE: time.time() + self._lease_s, OWNER: self._owner}

    async def _relay_collection(self, w: _Watched, scan: bool) -> int:
        """Publish a batch of this collection's pending documents.

        Hinted documents (committed here) are read by `_id`, which every store answers from one row.
        The scan (`{_outbox_pending: true}`, a full read on FerretDB v1) runs only every poll interval,
        as the safety net for documents other processes left behind, and measures the backlog.
        """
        now = time.time()
        due_retries = [i for i, at in w.retry_at.items() if at <= time.monotonic()]
        wanted = [*list(w.hinted)[: self._batch_size], *due_retries[: self._batch_size]]
        for doc_id in wanted:
            w.hinted.pop(doc_id, None)
            w.retry_at.pop(doc_id, None)
        try:
            return await self._relay_documents(w, dict.fromkeys(wanted), scan, now)
        except BaseException:
            # The store (or broker) failed mid-pass: these documents stay this relay's to try again.
            for doc_id in wanted:
                w.hinted.setdefault(doc_id, None)
            raise

    async def _relay_documents(self, w: _Watched, known: dict[Any, None], scan: bool, now: float) -> int:
        collection = w.collection
        if scan:
            pending = await collection.find({PENDING: True}, {"_id": 1, SINCE: 1, OWNER: 1, LEASE: 1}).to_list()
            w.scanned_pending = {p["_id"] for p in pending}
            since = [p[SINCE] for p in pending if isinstance(p.get(SINCE), int | float)]
            w.oldest_age_s = max(0.0, now - min(since)) if since else 0.0
            w.rescan_at = None
            for p in pending:
                lease = p.get(LEASE) or 0
                if p.get(OWNER) == self._owner or lease < now:
                    if len(known) < self._batch_size:
                        known.setdefault(p["_id"], None)
                    else:
                        w.rescan_at = time.monotonic()  # more than a batch: scan again at once
                elif p["_id"] not in w.retry_at:
                    # Another relay's lease: if that process died, the document is free at expiry;
                    # look at it again then, by `_id` (not by another full scan).
                    w.retry_at[p["_id"]] = time.monotonic() + max(0.0, lease - now) + 0.5
        if not known:
            return 0

        async def take(doc_id: Any) -> dict[str, Any] | None:
            doc: dict[str, Any] | None = await collection.find_one({"_id": doc_id})
            if doc is None or not doc.get(PENDING):
                return None  # drained meanwhile
            if doc.get(OWNER) == self._owner and (doc.get(LEASE) or 0) >= now:
                return doc  # committed by this process with its lease: no claim needed
            # Free (its writer died or gave it up): claim it, by `_id` like every write here.
            claimed: dict[str, Any] | None = await collection.find_one_and_update(
                {"_id": doc_id, PENDING: True, "$or": [{LEASE: {"$lt": now}}, {LEASE: None}]},
                {"$set": {LEASE: now + self._lease_s, OWNER: self._owner}},
                return_document=ReturnDocument.AFTER,
            )
            lease = doc.get(LEASE) or 0
            if claimed is None and lease >= now:
                # Still leased (another relay, or our own refusal's backoff whose lease outlived the
                # retry time on a descheduled process): try again by `_id` when that lease runs out,
                # rather than leaving it to the next full scan minutes away.
                w.retry_at[doc_id] = time.monotonic() + max(0.0, lease - time.time()) + 0.1
            return claimed

        docs = [d for d in await asyncio.gather(*(take(i) for i in known)) if d is not None]
        if not docs:
            return 0
        renewing = asyncio.create_task(
            self._renew_leases(collection, [d["_id"] for d in docs]), name="outbox-lease-renewal"
        )
        try:
            outcomes = await asyncio.gather(*(self._publish_chain(w, chain) for chain in _chains(w, docs)))
        finally:
            renewing.cancel()
        sent = sum(outcomes)
        self.published += sent
        return sent

    async def _renew_leases(self, collection: AsyncCollection[Any], doc_ids: list[Any]) -> None:
        """Keep the batch's leases while a slow broker takes its time, so no other relay takes them over."""
        while True:
            await asyncio.sleep(self._lease_s / 3)
            until = time.time() + self._lease_s
            await asyncio.gather(
                *(collection.update_one({"_id": i, OWNER: self._owner}, {"$set": {LEASE: until}}) for i in doc_ids)
            )
            self.lease_renewals += 1

    async def _publish_chain(self, w: _Watched, chain: list[dict[str, Any]]) -> int:
        """Documents sharing a Kafka key, one after another; a refused one stops the rest of its chain."""
        sent = 0
        for doc in chain:
            entries = sorted((doc.get(OUTBOX) or {}).values(), key=lambda e: (e.get("seq", 0), e["id"]))
            records = [OutgoingRecord.from_document(e) for e in entries]
            if w.trace_per_document and doc.get(TRACEPARENT):
                records = [continue_trace(r, doc[TRACEPARENT]) for r in records]
            try:
                # In order, one at a time per aggregate: per-key order on the topic is part of the contract.
                for record in records:
                    await self._publisher.publish(record)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                await self._refused(w, doc, records, exc)
                return sent
            w.failures.pop(doc["_id"], None)
            w.since.pop(doc["_id"], None)
            w.retry_at.pop(doc["_id"], None)  # a retry scheduled while it was leased is moot now
            w.scanned_pending.discard(doc["_id"])
            await self._mark_sent(w, doc["_id"], doc.get(REV), [r.event_id for r in records])
            sent += len(records)
        return sent

    async def _refused(
        self, w: _Watched, doc: dict[str, Any], records: Sequence[OutgoingRecord], exc: Exception
    ) -> None:
        failures = w.failures.get(doc["_id"], 0) + 1
        w.failures[doc["_id"]] = failures
        self.publish_failures += 1
        delay = backoff_delay(failures, initial_s=1.0, max_s=self._retry_max_s)
        extra = {
            "collection": w.collection.name,
            "document": str(doc["_id"]),
            "event_types": sorted({r.event_type for r in records}),
            "event_ids": [r.event_id for r in records][:10],
            "failures": failures,
            "retry_in_s": round(delay, 1),
            "error": repr(exc)[:500],
        }
        if failures >= REPORT_AFTER:
            log.error("the broker keeps refusing these outbox events", extra=extra)
        else:
            log.warning("outbox events not published; retrying later", extra=extra)
        # This relay tries it again by `_id` (no scan), just after the lease below has run out.
        w.retry_at[doc["_id"]] = time.monotonic() + delay + 0.1
        if isinstance(doc.get(SINCE), int | float):
            w.since[doc["_id"]] = doc[SINCE]
        try:  # not before the backoff: the lease says so to every relay
            await w.collection.update_one(
                {"_id": doc["_id"]}, {"$set": {LEASE: time.time() + delay}, "$unset": {OWNER: ""}}
            )
        except Exception:
            log.warning("could not postpone the refused document", extra={"document": str(doc["_id"])})

    async def _mark_sent(self, w: _Watched, doc_id: Any, rev: Any, event_ids: Sequence[str]) -> None:
        collection = w.collection
        if w.delete_when_drained:
            result = await collection.delete_one({"_id": doc_id, REV: rev})
            if result.deleted_count == 1:
                return
        unset = {f"{OUTBOX}.{eid}": "" for eid in event_ids}
        drained = {**unset, LEASE: "", OWNER: "", SINCE: ""}
        done = await collection.update_one({"_id": doc_id, REV: rev}, {"$unset": drained, "$set": {PENDING: False}})
        if done.matched_count == 0:
            # New events were appended while we published: keep the flag (and the lease the new commit
            # took), drop only what went out.
            await collection.update_one({"_id": doc_id}, {"$unset": unset})


def _chains(w: _Watched, docs: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Group documents that must go out one after another: an aggregate's document is its own chain;
    standalone events (one document each) sharing a Kafka key share a chain, oldest first."""
    if not w.delete_when_drained:
        return [[doc] for doc in docs]
    by_key: dict[str, list[dict[str, Any]]] = {}
    for doc in docs:
        entries = list((doc.get(OUTBOX) or {}).values())
        key = entries[0].get("key", "") if entries else ""
        by_key.setdefault(key, []).append(doc)
    return [sorted(chain, key=lambda d: d.get(SINCE) or 0.0) for chain in by_key.values()]
