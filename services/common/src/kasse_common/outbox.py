"""The outbox relay: publishes pending events with the idempotent producer, then marks them sent.

Per document: claim it with a short lease (so two replicas rarely publish the same events), publish
its events in `seq` order and wait for the broker's acknowledgement, then remove exactly those events
from `_outbox`. Clearing `_outbox_pending` is conditional on `_outbox_rev` being unchanged, so an event
appended meanwhile is never forgotten. A crash after publishing and before marking means the same
events (same `ce_id`) are published again: readers dedupe on `ce_id`, so nothing is applied twice.

Writers call `notify()` after a commit: the relay wakes at once, so the usual latency from commit to
broker is one produce round trip; the poll interval is only a safety net (crashes, other replicas).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any

from pymongo import ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection

from kasse_common.envelope import OutgoingRecord
from kasse_common.messaging import EventPublisher
from kasse_common.persistence import LEASE, OUTBOX, PENDING, REV, TRACEPARENT

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


class OutboxRelay:
    def __init__(
        self,
        publisher: EventPublisher,
        *,
        poll_interval_s: float = 0.5,
        batch_size: int = 100,
        lease_s: float = 10.0,
    ) -> None:
        self._publisher = publisher
        self._collections: list[tuple[AsyncCollection[Any], bool, bool]] = []
        self._poll_interval_s = poll_interval_s
        self._batch_size = batch_size
        self._lease_s = lease_s
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.published = 0

    def watch(
        self, collection: AsyncCollection[Any], *, delete_when_drained: bool = False, trace_per_document: bool = False
    ) -> None:
        self._collections.append((collection, delete_when_drained, trace_per_document))

    def notify(self) -> None:
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

    async def drain(self) -> int:
        """Publish everything pending now; returns how many events went out."""
        total = 0
        while True:
            n = await self.run_once()
            total += n
            if n == 0:
                return total

    async def run_once(self) -> int:
        sent = 0
        for collection, delete_when_drained, trace_per_document in self._collections:
            sent += await self._relay_collection(collection, delete_when_drained, trace_per_document)
        return sent

    async def _run(self) -> None:
        while not self._stopping:
            try:
                self._wake.clear()
                sent = await self.run_once()
                if sent:
                    continue  # there may be more
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("outbox relay pass failed; retrying")
                await asyncio.sleep(self._poll_interval_s)
                continue
            try:
                await asyncio.wait_for(self._wake.wait(), self._poll_interval_s)
            except TimeoutError:
                pass

    async def _relay_collection(
        self, collection: AsyncCollection[Any], delete_when_drained: bool, trace_per_document: bool
    ) -> int:
        now = time.time()
        candidates = await collection.find({PENDING: True}, {"_id": 1}, limit=self._batch_size).to_list()
        sent = 0
        for candidate in candidates:
            doc = await collection.find_one_and_update(
                {"_id": candidate["_id"], PENDING: True, "$or": [{LEASE: {"$lt": now}}, {LEASE: None}]},
                {"$set": {LEASE: now + self._lease_s}},
                return_document=ReturnDocument.AFTER,
            )
            if doc is None:
                continue  # another relay holds it, or it was drained meanwhile
            entries = sorted((doc.get(OUTBOX) or {}).values(), key=lambda e: (e.get("seq", 0), e["id"]))
            records = [OutgoingRecord.from_document(e) for e in entries]
            if trace_per_document and doc.get(TRACEPARENT):
                records = [continue_trace(r, doc[TRACEPARENT]) for r in records]
            await self._publish_all(records)
            await self._mark_sent(
                collection, doc["_id"], doc.get(REV), [r.event_id for r in records], delete_when_drained
            )
            sent += len(records)
        self.published += sent
        return sent

    async def _publish_all(self, records: Sequence[OutgoingRecord]) -> None:
        # In order, one at a time per aggregate: per-key order on the topic is part of the contract.
        for record in records:
            await self._publisher.publish(record)

    async def _mark_sent(
        self,
        collection: AsyncCollection[Any],
        doc_id: Any,
        rev: Any,
        event_ids: Sequence[str],
        delete_when_drained: bool,
    ) -> None:
        if delete_when_drained:
            result = await collection.delete_one({"_id": doc_id, REV: rev})
            if result.deleted_count == 1:
                return
        unset = {f"{OUTBOX}.{eid}": "" for eid in event_ids}
        unset[LEASE] = ""
        done = await collection.update_one({"_id": doc_id, REV: rev}, {"$unset": unset, "$set": {PENDING: False}})
        if done.matched_count == 0:
            # New events were appended while we published: keep the flag, drop only what went out.
            await collection.update_one({"_id": doc_id}, {"$unset": unset})
