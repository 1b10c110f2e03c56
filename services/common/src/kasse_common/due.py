"""Due work: the documents a periodic job may have to act on, kept in a small collection of their own.

FerretDB v1 uses no secondary index: a job's filter (`{needs_work: true, updated_at: {$lte: t}}`)
reads the whole collection, so an idle shop's cost grew with every order ever stored (issue 12).
A `DueWork` keeps beside the collection one marker `{_id: <document id>, at, token}` per document
that has work now or later; the job reads the markers that are due (a scan of this small
collection), then each document by `_id` with the job's own filter, which every store answers from
one row. What the index holds is what is pending, not the history.

How it stays complete, without a multi-document transaction:
- a writer marks a document *after* committing a state that has work (`track`): a marker is never
  missing for a committed state, except when the process dies between the two writes — and every
  start rebuilds the markers from the collection once (`rebuild`, the only full read);
- writers never delete markers. The job drops a marker only when the document it points to has no
  work any more (the marker's `token` must be unchanged: a writer that marked it again meanwhile
  wins), so a marker is removed at most one round after its work is done.
On MongoDB the job's filter would use its index anyway; the markers cost one small write per
commit that leaves work, and keep the job's reads by `_id` on every store.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from pymongo import ASCENDING
from pymongo.asynchronous.collection import AsyncCollection


class DueWork:
    def __init__(
        self,
        source: AsyncCollection[Any],
        name: str,
        *,
        has_work: Mapping[str, Any],
        at_field: str,
        pending: Callable[[Mapping[str, Any]], bool],
    ) -> None:
        """`has_work`: the filter of documents with work now or later (the job's filter without its
        time condition); `pending(state)`: the same predicate on a state being written; `at_field`:
        the document's time the job compares with its threshold (the marker's `at`)."""
        self.source = source
        self.index: AsyncCollection[Any] = source.database[f"{source.name}_due_{name}"]
        self.has_work = dict(has_work)
        self.at_field = at_field
        self.pending = pending
        self._rebuilt = False

    async def ensure_indexes(self) -> None:
        await self.index.create_index([("at", ASCENDING)], name="by_time")

    async def mark(self, doc_id: Any, at: datetime) -> None:
        await self.index.update_one({"_id": doc_id}, {"$set": {"at": at, "token": uuid.uuid4().hex}}, upsert=True)

    async def track(self, doc_id: Any, state: Mapping[str, Any]) -> None:
        """After a commit of `state`: mark the document when that state leaves work to do."""
        at = state.get(self.at_field)
        if self.pending(state) and isinstance(at, datetime):
            await self.mark(doc_id, at)

    async def rebuild(self) -> int:
        """Mark every document with work (a full read: at start only, covering a crash between a
        commit and its marker)."""
        marked = 0
        async for doc in self.source.find(self.has_work, {"_id": 1, self.at_field: 1}):
            at = doc.get(self.at_field)
            await self.mark(doc["_id"], at if isinstance(at, datetime) else datetime.now(UTC))
            marked += 1
        self._rebuilt = True
        return marked

    async def due(self, until: datetime, limit: int, job_filter: Mapping[str, Any]) -> list[Any]:
        """Ids of documents matching `job_filter` whose marker is at or before `until`, oldest first.

        Each candidate is read by `_id` with the job's filter; a document without work any more
        loses its marker.
        """
        if not self._rebuilt:
            await self.rebuild()
        markers = await self.index.find({"at": {"$lte": until}}).sort("at", ASCENDING).limit(limit).to_list()
        found: list[Any] = []
        for marker in markers:
            doc_id = marker["_id"]
            if await self.source.find_one({"_id": doc_id, **job_filter}, {"_id": 1}) is not None:
                found.append(doc_id)
            elif await self.source.find_one({"_id": doc_id, **self.has_work}, {"_id": 1}) is None:
                await self.index.delete_one({"_id": doc_id, "token": marker["token"]})
            else:  # work later (a retry time ahead): behind the others, so it holds up no round
                await self.index.update_one(
                    {"_id": doc_id, "token": marker["token"]},
                    {"$set": {"at": datetime.now(UTC), "token": uuid.uuid4().hex}},
                )
        return found

    async def size(self) -> int:
        return int(await self.index.count_documents({}))
