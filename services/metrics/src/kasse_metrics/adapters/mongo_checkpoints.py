"""Checkpoints in the Mongo-protocol store (FerretDB v1 locally, MongoDB in prod).

`segments`: one document per partition per checkpoint, the compact facts of offsets [s, e) as one
MessagePack blob of typed facts (`domain.facts`). `partition_offsets`: one
document with every partition's next offset, raised with `$max` after the segments are stored.
"""

from __future__ import annotations

import asyncio
import uuid
import zlib
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

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


def segment_to_document(s: Segment) -> dict[str, Any]:
    # _id left to the driver: two writers of the same range (a replay after a crash between the two
    # writes, a zombie owner during a rebalance) both keep theirs; readers skip repeated event ids.
    # The facts are one MessagePack blob (typed, tagged structs): cheap to encode and to read back. Those the
    # router packed are joined as they came (~2 % of the service's CPU went to encoding them again).
    blob = join_packed(s.packed) if s.packed is not None else encode_facts(s.facts)
    return {"t": s.topic, "p": s.partition, "s": s.start, "e": s.end, "n": len(s.facts), "b": blob}


class MongoCheckpointStore:
    SEGMENTS = "segments"
    OFFSETS = "partition_offsets"

    def __init__(self, db: AsyncDatabase[Any]) -> None:
        self.segments = db[self.SEGMENTS]
        self.offsets = db[self.OFFSETS]

    async def ensure_indexes(self) -> None:
        await self.segments.create_index([("t", ASCENDING), ("p", ASCENDING), ("e", ASCENDING)], name="position")

    async def write(self, segments: Sequence[Segment]) -> None:
        if not segments:
            return
        await self.segments.insert_many([segment_to_document(s) for s in segments], ordered=True)
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
        return [f async for seg in cursor for f in decode_facts(seg["b"])]

    async def prune(self, below: Mapping[TopicPartition, int]) -> int:
        """Delete the segments that end at or below `below[tp]` (held by the latest snapshot and every live reader),
        whoever wrote them. (A range filter: an index scan on MongoDB, but FerretDB v1 reads every segment for it;
        deleting by `_id` what this process wrote or read was tried in session 7 and left a killed writer's
        segments behind, see the metrics README.)"""
        deleted = 0
        for (topic, partition), offset in sorted(below.items()):
            if offset > 0:
                result = await self.segments.delete_many({"t": topic, "p": partition, "e": {"$lte": offset}})
                deleted += result.deleted_count
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
