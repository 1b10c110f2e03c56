"""Due work: the documents a periodic job may have to act on, kept in a small collection of their own.

FerretDB v1 uses no secondary index: a job's filter (`{needs_work: true, updated_at: {$lte: t}}`)
reads the whole collection, so an idle shop's cost grew with every order ever stored (issue 12).
A `DueWork` keeps beside the collection one marker `{_id: <document id>, at, token}` per document
that has work now or later; the job reads the markers that are due (a scan of this small
collection), then each document by `_id` with the job's own filter, which every store answers from
one row. What the index holds is what is pending, not the history.

How it stays complete, without a multi-document transaction:
- built on the service's `DocumentStore` (`DueWork(store, ...)`), the store marks a document
  *after* every commit of a state that has work (`track_soon`): the marker is owed in memory at
  once and written by a background task moments later, not awaited by the writer (a consumer's
  record or an HTTP request no longer waits one more round trip per commit). Marker writes of one
  DueWork go one batch at a time (a lock), so the job's round, which writes what is owed first,
  never races a late write of a marker it has just dropped. A marker is never missing for a
  committed state:
  - a marker write that fails (the store went away right after the commit) is owed: kept in
    memory and written by the job's next round, not raised to the writer (whose commit stands);
  - a commit that raised may still have landed (the store died before it answered): its marker
    is owed the same way, and the job's read by `_id` decides whether there is work;
  - a redelivery the store recognises as done writes nothing, so neither of the above may rely
    on a retry of the writer (the chaos run's stuck parcel, issue 12);
  - the process dies between the two writes: every start rebuilds the markers from the
    collection (`rebuild`, the only full read), and so does every DueWork of the database in a
    surviving process when another process of it dies for good (`rebuild_soon(database)`, called by
    the runtime when its outbox relay finds a relay of the database that stopped beating), a round
    after owed markers overflowed, and every `rebuild_every_s` (a day by default: a belt for what
    nothing saw; it was an hour, ~2 % of a core amortised after 10,000 orders on FerretDB v1);
- writers never delete markers. The job drops a marker only when the document it points to has no
  work any more (the marker's `token` must be unchanged: a writer that marked it again meanwhile
  wins), so a marker is removed at most one round after its work is done.
On MongoDB the job's filter would use its index anyway; the markers cost one small write per
commit that leaves work, and keep the job's reads by `_id` on every store.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
import weakref
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from pymongo import ASCENDING, UpdateOne
from pymongo.asynchronous.collection import AsyncCollection

from kasse_common.persistence import DocumentStore

log = logging.getLogger(__name__)

# Owed markers beyond this many (a long outage under traffic) are dropped for one full rebuild.
MAX_OWED = 10_000

A_DAY = 86_400.0

# Marker writes go to the store this many to a command: one round trip per marker made a rebuild of a
# few hundred pending orders outlast the job's round (minutes at ~3 s a command on a loaded store), and
# a cancelled rebuild started again from the first one — the 300-order chaos run's jobs never ran
# again after the store's restart. Well below 100: an update command of 100 or more statements hangs
# FerretDB 1.24 for every client.
MARKERS_PER_WRITE = 50

# A round's candidates are read by `_id` this many at a time (each read is a round trip).
CANDIDATE_READS_AT_ONCE = 8

# Every DueWork of this process, so that a process dying for good makes the survivors rebuild.
_instances: weakref.WeakSet[DueWork] = weakref.WeakSet()


def rebuild_soon(database: str) -> int:
    """Every DueWork of `database` in this process rebuilds its markers at its next round (another process
    of the database died, maybe between a commit and its marker); how many."""
    found = [work for work in list(_instances) if work.source.database.name == database]
    asked = time.monotonic()
    for work in found:
        work._rebuild_asked_at = asked  # also after a rebuild already under way (it may have read too early)
    return len(found)


class DueWork:
    def __init__(
        self,
        source: DocumentStore | AsyncCollection[Any],
        name: str,
        *,
        has_work: Mapping[str, Any],
        at_field: str,
        pending: Callable[[Mapping[str, Any]], bool],
        rebuild_every_s: float = A_DAY,
    ) -> None:
        """`has_work`: the filter of documents with work now or later (the job's filter without its
        time condition); `pending(state)`: the same predicate on a state being written; `at_field`:
        the document's time the job compares with its threshold (the marker's `at`).

        Given the `DocumentStore`, the store tracks every commit itself (writers call nothing);
        given a bare collection, writers `track` after their commits.
        """
        if isinstance(source, DocumentStore):
            source.watch(self)
            source = source.collection
        self.source = source
        self.index: AsyncCollection[Any] = source.database[f"{source.name}_due_{name}"]
        self.has_work = dict(has_work)
        self.at_field = at_field
        self.pending = pending
        self.rebuild_every_s = rebuild_every_s
        self._rebuilt_at: float | None = None  # monotonic time the last complete rebuild started
        self._rebuild_asked_at: float | None = None  # `rebuild_soon`: another process of the database died
        self._owed: dict[Any, datetime] = {}  # markers not written yet (soon, or by the next round)
        self._writing = asyncio.Lock()  # one batch of marker writes at a time
        self._writer: asyncio.Task[None] | None = None
        _instances.add(self)

    async def ensure_indexes(self) -> None:
        await self.index.create_index([("at", ASCENDING)], name="by_time")

    async def mark(self, doc_id: Any, at: datetime) -> None:
        await self.index.update_one({"_id": doc_id}, {"$set": {"at": at, "token": uuid.uuid4().hex}}, upsert=True)

    async def mark_many(self, markers: list[tuple[Any, datetime]]) -> None:
        """Write `markers` (document id, at), `MARKERS_PER_WRITE` to a command."""
        for start in range(0, len(markers), MARKERS_PER_WRITE):
            batch = markers[start : start + MARKERS_PER_WRITE]
            await self.index.bulk_write(
                [
                    UpdateOne({"_id": doc_id}, {"$set": {"at": at, "token": uuid.uuid4().hex}}, upsert=True)
                    for doc_id, at in batch
                ],
                ordered=False,
            )

    def _due_at(self, state: Mapping[str, Any]) -> datetime | None:
        at = state.get(self.at_field)
        return at if self.pending(state) and isinstance(at, datetime) else None

    async def track(self, doc_id: Any, state: Mapping[str, Any]) -> None:
        """After a commit of `state`: mark the document when that state leaves work to do.

        Never raises for the store: the commit stands, and a marker that cannot be written now is
        owed to the next round.
        """
        at = self._due_at(state)
        if at is None:
            return
        try:
            await self.mark(doc_id, at)
        except Exception as exc:
            log.warning(
                "due marker not written; the next round writes it",
                extra={"collection": self.index.name, "doc_id": str(doc_id), "error": repr(exc)[:300]},
            )
            self.owe(doc_id, state)

    def track_soon(self, doc_id: Any, state: Mapping[str, Any]) -> None:
        """After a commit of `state` (the store calls it): owe the document's marker when that state
        leaves work, and write it in the background — the writer does not wait for it. A write that
        fails stays owed for the job's next round."""
        if self._due_at(state) is None:
            return
        self.owe(doc_id, state)
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(
                self._write_owed_soon(), name=f"due-markers-{self.index.name}"
            )

    async def _write_owed_soon(self) -> None:
        try:
            while self._owed:
                await self._write_owed()
        except Exception as exc:
            log.warning(
                "due markers not written; the next round writes them",
                extra={"collection": self.index.name, "owed": len(self._owed), "error": repr(exc)[:300]},
            )

    def owe(self, doc_id: Any, state: Mapping[str, Any]) -> None:
        """Remember a marker for `state` that may be missing (a failed marker write, or a commit
        that raised but may have landed); the job's next round writes it."""
        at = self._due_at(state)
        if at is None:
            return
        earlier = self._owed.get(doc_id)
        self._owed[doc_id] = at if earlier is None else min(at, earlier)
        if len(self._owed) > MAX_OWED:
            self._owed.clear()
            self._rebuilt_at = None  # too many to keep: the next round reads them all instead

    def withdraw(self, doc_id: Any) -> None:
        """The document's work is done: a marker still owed for it need not be written any more. (One
        written already is dropped by the job's round, as always.) With `owe` at the commit, a writer
        whose work usually ends within a round writes no marker at all: catalog owes each reservation's
        marker at its insert and withdraws it when the reservation settles; only runs still under way
        at a round (or a crash: the start rebuild) cost a marker write."""
        self._owed.pop(doc_id, None)

    async def _write_owed(self) -> None:
        async with self._writing:
            owed = list(self._owed.items())
            for start in range(0, len(owed), MARKERS_PER_WRITE):
                # Skip what the batch before this one wrote or what was owed again (a later batch).
                batch = [
                    (doc_id, at)
                    for doc_id, at in owed[start : start + MARKERS_PER_WRITE]
                    if self._owed.get(doc_id) == at
                ]
                if not batch:
                    continue
                await self.mark_many(batch)
                for doc_id, at in batch:
                    if self._owed.get(doc_id) == at:  # not owed again meanwhile
                        del self._owed[doc_id]

    def _rebuild_due(self) -> bool:
        if self._rebuilt_at is None or time.monotonic() - self._rebuilt_at >= self.rebuild_every_s:
            return True
        return self._rebuild_asked_at is not None and self._rebuild_asked_at >= self._rebuilt_at

    async def rebuild(self) -> int:
        """Mark every document with work that has no marker, or one later than its work (a full read:
        at start, when another process of the database died (`rebuild_soon`), then every
        `rebuild_every_s`, covering a crash between a commit and its marker); how many it wrote.

        The markers already there are read in one query and kept: after a restart nearly all are, so
        the rebuild writes what is missing, in batches, and a rebuild cut short (the round's timeout,
        the store going away) leaves what it wrote for the next one.
        """
        started = time.monotonic()
        present = {marker["_id"]: marker.get("at") async for marker in self.index.find({}, {"at": 1})}
        missing: list[tuple[Any, datetime]] = []
        async for doc in self.source.find(self.has_work, {"_id": 1, self.at_field: 1}):
            at = doc.get(self.at_field)
            marked_at = present.get(doc["_id"])
            if marked_at is None:
                missing.append((doc["_id"], at if isinstance(at, datetime) else datetime.now(UTC)))
            elif isinstance(at, datetime) and isinstance(marked_at, datetime) and marked_at > at:
                missing.append((doc["_id"], at))  # its marker says later than its work: earlier
        await self.mark_many(missing)
        self._rebuilt_at = started
        return len(missing)

    async def due(self, until: datetime, limit: int, job_filter: Mapping[str, Any]) -> list[Any]:
        """Ids of documents matching `job_filter` whose marker is at or before `until`, oldest first.

        Each candidate is read by `_id` with the job's filter; a document without work any more
        loses its marker.
        """
        if self._rebuild_due():
            await self.rebuild()
        await self._write_owed()
        markers = await self.index.find({"at": {"$lte": until}}).sort("at", ASCENDING).limit(limit).to_list()
        reads = asyncio.Semaphore(CANDIDATE_READS_AT_ONCE)

        async def candidate(marker: Mapping[str, Any]) -> bool:
            doc_id = marker["_id"]
            async with reads:
                if await self.source.find_one({"_id": doc_id, **job_filter}, {"_id": 1}) is not None:
                    return True
                if await self.source.find_one({"_id": doc_id, **self.has_work}, {"_id": 1}) is None:
                    await self.index.delete_one({"_id": doc_id, "token": marker["token"]})
                else:  # work later (a retry time ahead): behind the others, so it holds up no round
                    await self.index.update_one(
                        {"_id": doc_id, "token": marker["token"]},
                        {"$set": {"at": datetime.now(UTC), "token": uuid.uuid4().hex}},
                    )
                return False

        # Side by side; every read ends before the round does (a failure is raised after the others
        # finished, as itself: the round's retry tells a transient one); oldest first as in `markers`.
        chosen = await asyncio.gather(*(candidate(marker) for marker in markers), return_exceptions=True)
        for outcome in chosen:
            if isinstance(outcome, BaseException):
                raise outcome
        return [marker["_id"] for marker, ok in zip(markers, chosen, strict=True) if ok is True]

    async def size(self) -> int:
        return int(await self.index.count_documents({}))
