"""Checkpoints in the Mongo-protocol store (FerretDB v1 locally, MongoDB in prod).

`segments`: one small document per partition per checkpoint, where it lies (offsets [s, e)), and
`segment_facts`: under the same `_id`, what it holds, the compact facts as one MessagePack blob of typed
facts (`domain.facts`). `partition_offsets`: one document with every partition's next offset, raised with
`$max` after the segments are stored.

Why two collections: FerretDB v1 reads and parses every document of a collection for any filter but
`{_id}`. The range filters (which segments to read, which to delete below a snapshot) used to parse every
blob; at 5M events in the bench each such delete took 2.4-4.8 s under the store's write lock, and the
state stage stood still behind it. They now scan documents of ~100 bytes and reach the blobs by `_id` (a
lookup on both stores), and the range semantics stay: a prune deletes every writer's segments below the
offset, those of a writer killed before its offsets moved too.
"""

from __future__ import annotations

import asyncio
import uuid
import zlib
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from bson import ObjectId
from pymongo import ASCENDING
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from kasse_metrics.adapters.mongo_commands import delete_by_id
from kasse_metrics.application.ingest import Segment, TopicPartition
from kasse_metrics.domain.facts import Fact, decode_facts, encode_facts, join_packed

OFFSETS_DOC = "next_offsets"


def partition_scope(tp: TopicPartition) -> str:
    """The key of one internal partition's documents (snapshot, readers, partial aggregates)."""
    return _offset_field(tp)


def _offset_field(tp: TopicPartition) -> str:
    """`topic|partition` with the topic's dots escaped: a dot in a field name would mean nesting."""
    return f"{tp[0].replace('%', '%25').replace('.', '%2E')}|{tp[1]}"


def _offset_key(field: str) -> TopicPartition:
    topic, partition = field.rsplit("|", 1)
    return topic.replace("%2E", ".").replace("%25", "%"), int(partition)


def segment_documents(s: Segment) -> tuple[dict[str, Any], dict[str, Any]]:
    """Where the segment lies and what it holds, under one fresh `_id`.

    A fresh `_id`, not one derived from the range: two writers of the same range (a replay after a crash
    between the writes, a zombie owner during a rebalance) both keep theirs; readers skip repeated event ids.
    The facts are one MessagePack blob (typed, tagged structs): cheap to encode and to read back. Those the
    router packed are joined as they came (~2 % of the service's CPU went to encoding them again)."""
    blob = join_packed(s.packed) if s.packed is not None else encode_facts(s.facts)
    segment_id = ObjectId()
    return (
        {"_id": segment_id, "t": s.topic, "p": s.partition, "s": s.start, "e": s.end, "n": len(s.facts)},
        {"_id": segment_id, "b": blob},
    )


class MongoCheckpointStore:
    SEGMENTS = "segments"
    SEGMENT_FACTS = "segment_facts"
    OFFSETS = "partition_offsets"
    # Blobs fetched at once by a read (one `_id` lookup each): a restart's catch-up reads hundreds.
    CONCURRENT_FETCHES = 32

    def __init__(self, db: AsyncDatabase[Any]) -> None:
        self.segments = db[self.SEGMENTS]
        self.facts = db[self.SEGMENT_FACTS]
        self.offsets = db[self.OFFSETS]

    async def ensure_indexes(self) -> None:
        await self.segments.create_index([("t", ASCENDING), ("p", ASCENDING), ("e", ASCENDING)], name="position")

    async def write(self, segments: Sequence[Segment]) -> None:
        """Where the segments lie, then what they hold, then the offsets. A writer killed before the facts
        leaves a segment without them, which its offsets never covered: its records are consumed again and
        stored by another segment (readers skip such a one), and the next prune below it deletes it. (The
        other order would leave facts that no range finds, kept forever.)"""
        if not segments:
            return
        documents = [segment_documents(s) for s in segments]
        await self.segments.insert_many([where for where, _ in documents], ordered=True)
        await self.facts.insert_many([held for _, held in documents], ordered=True)
        # One document holds every partition's next offset: one atomic `$max` per checkpoint.
        next_offsets: dict[str, int] = {}
        for s in segments:
            key = _offset_field(s.tp)
            next_offsets[key] = max(next_offsets.get(key, 0), s.end)
        await self.offsets.update_one({"_id": OFFSETS_DOC}, {"$max": next_offsets}, upsert=True)

    async def committed_offsets(self) -> dict[TopicPartition, int]:
        doc = await self.offsets.find_one({"_id": OFFSETS_DOC})
        return {_offset_key(k): v for k, v in (doc or {}).items() if k != "_id"}

    async def read(self, tp: TopicPartition, start: int, end: int) -> list[Fact]:
        topic, partition = tp
        cursor = self.segments.find({"t": topic, "p": partition, "e": {"$gt": start}, "s": {"$lt": end}}).sort(
            "s", ASCENDING
        )
        found = [doc async for doc in cursor]
        blobs: list[bytes] = []
        for i in range(0, len(found), self.CONCURRENT_FETCHES):
            batch = found[i : i + self.CONCURRENT_FETCHES]
            held = await asyncio.gather(*(self._blob(doc) for doc in batch))
            blobs.extend(b for b in held if b is not None)
        return [f for blob in blobs for f in decode_facts(blob)]

    async def _blob(self, segment: Mapping[str, Any]) -> bytes | None:
        """The segment's facts; None for a segment whose writer was killed before it stored them (its
        offsets never covered it, so other segments hold its records)."""
        if "b" in segment:  # a segment stored before the facts had a collection of their own
            blob: bytes = segment["b"]
            return blob
        held = await self.facts.find_one({"_id": segment["_id"]})
        return None if held is None else held["b"]

    async def prune(self, below: Mapping[TopicPartition, int]) -> int:
        """Delete the segments that end at or below `below[tp]` (held by the latest snapshot and every live
        reader), whoever wrote them: the facts first, then where they lay, both by `_id`. A prune
        interrupted in between leaves segments without facts below the offset, which the next one finds by
        range again. (Deleting by `_id` only what this process wrote or read left a killed writer's segments
        behind: session 7, see the metrics README.)

        `below` must not pass the committed offsets (`ProjectionSync.prune`): a write under way, between
        its two inserts, lies above them, and deleted then its facts would outlive it. Only a zombie owner
        still flushing below the new owner's offsets during a rebalance could meet a prune that way: one
        checkpoint's facts at most, left behind."""
        deleted = 0
        for (topic, partition), offset in sorted(below.items()):
            if offset <= 0:
                continue
            below_offset = self.segments.find({"t": topic, "p": partition, "e": {"$lte": offset}}, {"_id": 1})
            ids = [d["_id"] async for d in below_offset]
            await delete_by_id(self.facts, ids)
            deleted += await delete_by_id(self.segments, ids)
        return deleted


class MongoReaderRegistry:
    """Which instances read the segments, and how far each has read (`seen` per partition).

    Segments are deleted only below what every live reader holds, so a reader behind the latest snapshot
    never finds a hole. A reader silent for longer than the time-to-live is dropped; its next heartbeat
    finds its document gone and it starts again from the latest snapshot.
    """

    READERS = "projection_readers"

    def __init__(self, db: AsyncDatabase[Any], scope: str = "") -> None:
        self.readers = db[self.READERS]
        # Readers of one internal partition (its owners, old and new) hold back only its segments.
        self.scope = scope

    async def register(self, reader_id: str, seen: Mapping[TopicPartition, int]) -> None:
        await self.readers.replace_one({"_id": reader_id}, self._doc(reader_id, seen), upsert=True)

    async def heartbeat(self, reader_id: str, seen: Mapping[TopicPartition, int]) -> bool:
        """Record progress; False when this reader was dropped as dead (it must start again)."""
        result = await self.readers.replace_one({"_id": reader_id}, self._doc(reader_id, seen))
        return result.matched_count == 1

    async def unregister(self, reader_id: str) -> None:
        await self.readers.delete_one({"_id": reader_id})

    async def live_seen(self, ttl_s: float) -> list[dict[TopicPartition, int]]:
        """Every live reader's progress, after dropping the readers silent for longer than `ttl_s`."""
        horizon = datetime.now(UTC) - timedelta(seconds=ttl_s)
        await self.readers.delete_many({"at": {"$lt": horizon}})
        return [
            {_offset_key(k): v for k, v in doc["seen"].items()}
            async for doc in self.readers.find({"at": {"$gte": horizon}, "scope": self.scope})
        ]

    def _doc(self, reader_id: str, seen: Mapping[TopicPartition, int]) -> dict[str, Any]:
        return {
            "_id": reader_id,
            "scope": self.scope,
            "at": datetime.now(UTC),
            "seen": {_offset_field(tp): o for tp, o in seen.items()},
        }


class MongoSnapshotStore:
    """The latest projection snapshot, in chunks (a document holds at most 16 MB).

    Chunks of a new snapshot are written first under a fresh id, then the `latest` header is
    switched to it in one write, then the previous snapshot's chunks are deleted: a reader never sees
    a half-written snapshot (one whose chunks vanished under it retries).
    """

    SNAPSHOTS = "projection_snapshots"
    CHUNKS = "projection_snapshot_chunks"
    CHUNK_BYTES = 8 * 1024 * 1024

    def __init__(self, db: AsyncDatabase[Any], scope: str = "") -> None:
        self.headers = db[self.SNAPSHOTS]
        self.chunks = db[self.CHUNKS]
        # One latest snapshot per internal partition (`latest|<topic>|<partition>`): each owner its own.
        self.header_id = f"latest|{scope}" if scope else "latest"

    async def save(self, seen: dict[TopicPartition, int], blob: bytes) -> bool:
        """Store the snapshot unless the stored one covers more of some partition; False then.

        A save in flight when its partition was revoked (chunks of a large snapshot take seconds) must not
        replace a newer snapshot of the new owner: the segments below that one may be deleted already. So
        the header is switched only if none of its offsets is above this snapshot's (a header without
        the partition, or an empty collection, qualifies); otherwise the upsert's insert of the existing
        `_id` fails as a duplicate and this snapshot's chunks are deleted."""
        snapshot_id = uuid.uuid4().hex
        # Compressed (zlib level 1, in a thread: zlib releases the GIL): FerretDB stores a binary field as
        # base64 in JSON, and reading a partition's 11 MB snapshot took 0.5-2.2 s of a 15 s restart (2M
        # events); the bytes written every 30 s per partition shrink as much.
        blob = await asyncio.to_thread(zlib.compress, blob, 1)
        parts = [blob[i : i + self.CHUNK_BYTES] for i in range(0, len(blob), self.CHUNK_BYTES)] or [b""]
        await self.chunks.insert_many(
            [{"_id": f"{snapshot_id}:{i}", "s": snapshot_id, "i": i, "b": part} for i, part in enumerate(parts)]
        )
        fields = {_offset_field(tp): o for tp, o in seen.items()}
        not_newer: dict[str, Any] = {f"seen.{f}": {"$not": {"$gt": o}} for f, o in fields.items()}
        try:
            previous = await self.headers.find_one_and_replace(
                {"_id": self.header_id, **not_newer},
                {"_id": self.header_id, "s": snapshot_id, "n": len(parts), "z": "zlib", "seen": fields},
                upsert=True,
            )
        except DuplicateKeyError:
            await delete_by_id(self.chunks, (f"{snapshot_id}:{i}" for i in range(len(parts))))
            return False
        if previous is not None:
            await delete_by_id(self.chunks, (f"{previous['s']}:{i}" for i in range(previous["n"])))
        return True

    async def latest_seen(self) -> dict[TopicPartition, int] | None:
        header = await self.headers.find_one({"_id": self.header_id}, {"seen": 1})
        return None if header is None else {_offset_key(k): v for k, v in header["seen"].items()}

    async def load(self) -> tuple[dict[TopicPartition, int], bytes] | None:
        for _ in range(5):
            header = await self.headers.find_one({"_id": self.header_id})
            if header is None:
                return None
            # One `_id` lookup per chunk, all at once: FerretDB serves exactly `{_id: v}` without a scan
            # (a filter on `s` scans and sorts the collection), and the chunks come in concurrently.
            chunks = await asyncio.gather(
                *(self.chunks.find_one({"_id": f"{header['s']}:{i}"}) for i in range(header["n"]))
            )
            if all(c is not None for c in chunks):
                blob = b"".join(c["b"] for c in chunks if c is not None)
                if header.get("z") == "zlib":  # snapshots stored before compression have no "z"
                    blob = await asyncio.to_thread(zlib.decompress, blob)
                return {_offset_key(k): v for k, v in header["seen"].items()}, blob
        raise RuntimeError("the latest snapshot kept changing while it was read")
