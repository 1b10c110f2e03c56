"""State and the events it causes, written together in one single-document atomic write.

FerretDB v1 has no multi-document transactions, so Kasse's outbox lives *inside* the document whose
state changed: a map `_outbox` of encoded events, a flag `_outbox_pending`, and a counter
`_outbox_rev` that grows with every append. The same update also records the id of the event being
consumed in `_dedupe`, which makes consumers idempotent: a redelivered event matches no document
and changes nothing.

The dedupe window is bounded by count, in the same write and without reading the document first:
commits are numbered by `_version`, and generation g = version // `dedupe_window` writes its ids
into map `_dedupe.g<g % 3>`, checks all three maps, and empties `_dedupe.g<(g + 1) % 3>` (the
generation before the previous one). So a document holds at most 2 x `dedupe_window` consumed ids
(`dedupe_window` is 1,000 by default: about 120 KB of ids) whatever the number of orders, and a
redelivered event is recognised while fewer than `dedupe_window` (at least) to 2 x `dedupe_window`
(at most) later commits changed the same document. Redeliveries come within seconds to minutes (a
rebalance, a crash before the offset commit); a hot product document takes a few commits per
order. The former unbounded map `_processed` is still checked and is dropped at a generation change.
A commit may record several consumed ids at once (`consumed_event_ids`: catalog writes a product's
stock changes of several orders in one write); then a generation holds up to `dedupe_window` commits
times the most ids one commit records, so a caller batching ids caps its batch (catalog: 8).

A crash anywhere leaves either the old document or the new one with its events;
the relay (kasse_common.outbox) publishes what is pending.

Document fields owned by this module all start with `_` and are never part of domain state:
`_version` (optimistic concurrency), `_outbox`, `_outbox_pending`, `_outbox_rev`, `_outbox_lease`,
`_outbox_owner`, `_outbox_since`, `_dedupe` (and the former `_processed`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from enum import Enum
from typing import Any, Protocol

from pymongo import ASCENDING
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError

from kasse_common.envelope import OutgoingRecord, current_trace_headers
from kasse_common.errors import ConcurrencyError as ConcurrencyError  # re-exported: stores raise it

VERSION = "_version"
OUTBOX = "_outbox"
PENDING = "_outbox_pending"
REV = "_outbox_rev"
LEASE = "_outbox_lease"
OWNER = "_outbox_owner"  # which relay's claim the lease is (kasse_common.outbox)
SINCE = "_outbox_since"  # epoch seconds of the oldest unpublished event (the relay's age metric)
PROCESSED = "_processed"  # before the bounded window: checked, no longer written, dropped at a generation change
DEDUPE = "_dedupe"
DEDUPE_WINDOW = 1000  # commits per dedupe generation (see the module docstring)
TRACEPARENT = "_traceparent"  # the trace the document was created in (see OutboxRelay, trace_per_document)
INTERNAL_FIELDS = (VERSION, OUTBOX, PENDING, REV, LEASE, OWNER, SINCE, PROCESSED, DEDUPE, TRACEPARENT)
# A projection for reads that need the state only: the outbox and the dedupe ids can be large.
HEAVY_FIELDS_EXCLUDED: dict[str, int] = {OUTBOX: 0, PROCESSED: 0, DEDUPE: 0}


class CommitOutcome(Enum):
    APPLIED = "applied"
    DUPLICATE = "duplicate"  # the consumed event was applied before: nothing changed


def _outbox_fields(events: Sequence[OutgoingRecord], base_seq: int) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for i, record in enumerate(events):
        doc = record.to_document()
        doc["seq"] = base_seq + i
        fields[f"{OUTBOX}.{record.event_id}"] = doc
    return fields


def _generation(version: int, window: int) -> int:
    return version // window


def _seen(event_id: str) -> list[str]:
    """Where a consumed id may be recorded: the three generations and the former flat map."""
    return [f"{DEDUPE}.g{k}.{event_id}" for k in range(3)] + [f"{PROCESSED}.{event_id}"]


def processed_ids(doc: Mapping[str, Any]) -> set[str]:
    """Every consumed event id a document remembers (tests and operators)."""
    ids = {k for k, v in (doc.get(PROCESSED) or {}).items() if not isinstance(v, dict)}
    for generation in (doc.get(DEDUPE) or {}).values():
        ids.update(generation)
    return ids


def strip_internal(doc: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k not in INTERNAL_FIELDS}


async def ensure_outbox_indexes(collection: AsyncCollection[Any]) -> None:
    await collection.create_index([(PENDING, ASCENDING)], name="outbox_pending")


class CommitWatcher(Protocol):
    """Follows a store's commits (the kit's DueWork)."""

    def track_soon(self, doc_id: Any, state: Mapping[str, Any]) -> None: ...

    def owe(self, doc_id: Any, state: Mapping[str, Any]) -> None: ...


class DocumentStore:
    """Commits aggregates to one collection with their events and the consumed event's id.

    Repositories in each service translate domain objects to documents and call `commit`.
    """

    def __init__(
        self,
        collection: AsyncCollection[Any],
        on_commit: Callable[[Sequence[Any]], None] | None = None,
        lease: Callable[[], Mapping[str, Any]] | None = None,
        dedupe_window: int = DEDUPE_WINDOW,
        on_created: Callable[[Any], None] | None = None,
    ) -> None:
        self.collection = collection
        self._on_commit = on_commit  # tells the outbox relay which documents have events now
        # A new aggregate exists: the runtime applies events parked for it at once (not a round later).
        self._on_created = on_created
        self._lease = lease  # the relay's lease, taken in the same write (it need not claim the document)
        self.dedupe_window = dedupe_window
        self._watchers: list[CommitWatcher] = []

    def watch(self, watcher: CommitWatcher) -> None:
        """Tell `watcher` (a kit DueWork) of every commit: applied states, and states whose write
        raised but may have landed."""
        self._watchers.append(watcher)

    async def load(self, doc_id: Any) -> dict[str, Any] | None:
        return await self.collection.find_one({"_id": doc_id}, HEAVY_FIELDS_EXCLUDED)

    async def commit(
        self,
        doc_id: Any,
        *,
        expected_version: int | None,
        state: Mapping[str, Any],
        events: Sequence[OutgoingRecord] = (),
        consumed_event_id: str | None = None,
        extra_filter: Mapping[str, Any] | None = None,
        inc: Mapping[str, int] | None = None,
        consumed_event_ids: Sequence[str] = (),
    ) -> CommitOutcome:
        """Write `state` (the fields to set) and `events` atomically.

        expected_version None: the document must not exist yet (insert). Otherwise it must still be at
        that version. `extra_filter` adds a guard (a conditional update, e.g. enough stock); `inc`
        adds atomic increments. Raises ConcurrencyError when the guard or version does not hold.
        `consumed_event_ids` records more consumed ids in the same write; DUPLICATE then means that at
        least one of them was applied before and nothing changed (`was_processed` says which).
        """
        consumed = list(dict.fromkeys([*([consumed_event_id] if consumed_event_id else []), *consumed_event_ids]))
        try:
            outcome = await self._commit(
                doc_id,
                expected_version=expected_version,
                state=state,
                events=events,
                consumed=consumed,
                extra_filter=extra_filter,
                inc=inc,
            )
        except ConcurrencyError:
            raise
        except BaseException:
            # The store may have applied the write before the failure (it died before answering);
            # a redelivery would then be recognised as done and write nothing more. So the watchers
            # owe its markers, and the relay is told of its events (it reads the document by `_id`
            # and finds them pending or not): no full scan has to find them.
            for watcher in self._watchers:
                watcher.owe(doc_id, state)
            self._committed(doc_id, events)
            raise
        if outcome is CommitOutcome.APPLIED:
            # Off the writer's path: a marker is owed at once and written beside it (DueWork.track_soon).
            for watcher in self._watchers:
                watcher.track_soon(doc_id, state)
        return outcome

    async def _commit(
        self,
        doc_id: Any,
        *,
        expected_version: int | None,
        state: Mapping[str, Any],
        events: Sequence[OutgoingRecord],
        consumed: Sequence[str],
        extra_filter: Mapping[str, Any] | None,
        inc: Mapping[str, int] | None,
    ) -> CommitOutcome:
        now = datetime.now(UTC)
        new_version = 1 if expected_version is None else expected_version + 1
        if expected_version is None:
            doc: dict[str, Any] = {"_id": doc_id, **state, VERSION: 1, OUTBOX: {}, PENDING: bool(events), REV: 1}
            if events:
                doc[SINCE] = now.timestamp()
                doc.update(self._lease() if self._lease else {})
            for i, record in enumerate(events):
                entry = record.to_document()
                entry["seq"] = i
                doc[OUTBOX][record.event_id] = entry
            doc[DEDUPE] = {"g0": {event_id: now for event_id in consumed}} if consumed else {}
            traceparent = current_trace_headers().get("traceparent")
            if traceparent:
                doc[TRACEPARENT] = traceparent
            for field, amount in (inc or {}).items():
                doc[field] = doc.get(field, 0) + amount
            try:
                await self.collection.insert_one(doc)
            except DuplicateKeyError:
                if consumed and await self._was_processed(doc_id, *consumed):
                    return CommitOutcome.DUPLICATE
                raise ConcurrencyError(f"{doc_id!r} exists already") from None
            self._committed(doc_id, events)
            if self._on_created is not None:
                self._on_created(doc_id)
            return CommitOutcome.APPLIED

        query: dict[str, Any] = {"_id": doc_id, VERSION: expected_version, **(extra_filter or {})}
        for event_id in consumed:
            query.update({seen: {"$exists": False} for seen in _seen(event_id)})
        to_set: dict[str, Any] = {**state, VERSION: new_version}
        generation = _generation(new_version, self.dedupe_window)
        # The generation before the previous one goes, in this write: the ids stay bounded.
        to_unset: dict[str, Any] = {f"{DEDUPE}.g{(generation + 1) % 3}": ""}
        if new_version % self.dedupe_window == 0:
            to_unset[PROCESSED] = ""  # the former unbounded map: older than a whole window by now
        update: dict[str, Any] = {"$set": to_set, "$unset": to_unset}
        if events:
            to_set.update(_outbox_fields(events, base_seq=new_version * 1000))
            to_set[PENDING] = True
            update["$inc"] = {REV: 1}
            update["$min"] = {SINCE: now.timestamp()}
            to_set.update(self._lease() if self._lease else {})
        for event_id in consumed:
            to_set[f"{DEDUPE}.g{generation % 3}.{event_id}"] = now
        if inc:
            update.setdefault("$inc", {}).update(inc)
        result = await self.collection.update_one(query, update)
        if result.matched_count == 1:
            self._committed(doc_id, events)
            return CommitOutcome.APPLIED
        if consumed and await self._was_processed(doc_id, *consumed):
            return CommitOutcome.DUPLICATE
        raise ConcurrencyError(f"{doc_id!r} changed since version {expected_version} (or its guard failed)")

    async def was_processed(self, doc_id: Any, event_id: str) -> bool:
        return await self._was_processed(doc_id, event_id)

    async def _was_processed(self, doc_id: Any, *event_ids: str) -> bool:
        """Whether any of `event_ids` was consumed by the document."""
        found = await self.collection.find_one(
            {"_id": doc_id, "$or": [{seen: {"$exists": True}} for e in event_ids for seen in _seen(e)]}, {"_id": 1}
        )
        return found is not None

    def _committed(self, doc_id: Any, events: Sequence[OutgoingRecord]) -> None:
        if events and self._on_commit is not None:
            self._on_commit([doc_id])


class StandaloneEvents:
    """Events with no state change behind them (a product view): one tiny document per event.

    The insert is the atomic write; the relay publishes it and deletes the document.
    """

    COLLECTION = "outbox_events"

    def __init__(
        self,
        collection: AsyncCollection[Any],
        on_commit: Callable[[Sequence[Any]], None] | None = None,
        lease: Callable[[], Mapping[str, Any]] | None = None,
    ) -> None:
        self.collection = collection
        self._on_commit = on_commit
        self._lease = lease

    async def add(self, *records: OutgoingRecord) -> None:
        if not records:
            return
        docs = [
            {
                "_id": r.event_id,
                OUTBOX: {r.event_id: {**r.to_document(), "seq": 0}},
                PENDING: True,
                REV: 1,
                SINCE: time.time(),
                **(self._lease() if self._lease else {}),
            }
            for r in records
        ]
        try:
            await self.collection.insert_many(docs, ordered=False)
        except Exception as exc:  # a retried insert of the same event id is fine
            from pymongo.errors import BulkWriteError

            if not isinstance(exc, BulkWriteError) or any(
                e.get("code") != 11000 for e in exc.details.get("writeErrors", [])
            ):
                if self._on_commit is not None:  # some may have landed: the relay looks by `_id`
                    self._on_commit([r.event_id for r in records])
                raise
        if self._on_commit is not None:
            self._on_commit([r.event_id for r in records])
