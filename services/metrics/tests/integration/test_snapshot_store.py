"""The snapshot store on the real store (FerretDB locally): an older snapshot never replaces a newer one.

A partition's owner saves its snapshot in chunks, then switches the partition's header. A save already
in flight when the partition is revoked may land after the new owner stored a newer snapshot and deleted
the segments below it; replacing that header would make a restart load the older snapshot and miss the
facts of the deleted segments.
"""

from __future__ import annotations

from typing import Any

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from kasse_metrics.adapters.mongo_checkpoints import MongoSnapshotStore, partition_scope

pytestmark = pytest.mark.integration

TOPIC = "kasse.metrics.facts-by-session.v1"


async def test_a_save_older_than_the_stored_snapshot_replaces_nothing_and_leaves_no_chunks(
    metrics_db: AsyncDatabase[Any],
) -> None:
    db = metrics_db
    chunks = db[MongoSnapshotStore.CHUNKS]
    tp = (TOPIC, 3)
    old_owner = MongoSnapshotStore(db, scope=partition_scope(tp))
    new_owner = MongoSnapshotStore(db, scope=partition_scope(tp))
    for store in (old_owner, new_owner):
        store.CHUNK_BYTES = 4  # several chunks per snapshot: each must go with its snapshot

    assert await old_owner.save({tp: 100}, b"old owner at 100")
    assert await new_owner.save({tp: 250}, b"new owner at 250")
    # The old owner's save of what it held at the revocation (200) lands only now.
    assert not await old_owner.save({tp: 200}, b"old owner at 200, late")
    assert await new_owner.load() == ({tp: 250}, b"new owner at 250")
    assert await new_owner.latest_seen() == {tp: 250}
    header = await db[MongoSnapshotStore.SNAPSHOTS].find_one({"_id": new_owner.header_id})
    assert header is not None
    assert sorted([c["_id"] async for c in chunks.find({})]) == sorted(
        f"{header['s']}:{i}" for i in range(header["n"])
    ), "only the latest snapshot's chunks are left"

    # The same offsets (a snapshot taken again) and higher ones replace it.
    assert await new_owner.save({tp: 250}, b"again at 250")
    assert await new_owner.save({tp: 400}, b"at 400")
    assert await old_owner.load() == ({tp: 400}, b"at 400")

    # Each partition has its own header: another partition's lower offsets are not compared.
    other = (TOPIC, 4)
    assert await MongoSnapshotStore(db, scope=partition_scope(other)).save({other: 7}, b"other")
    assert await MongoSnapshotStore(db, scope=partition_scope(other)).load() == ({other: 7}, b"other")


async def test_a_snapshot_of_every_partition_is_refused_when_any_stored_partition_is_further(
    metrics_db: AsyncDatabase[Any],
) -> None:
    """The unscoped store (one projection of every partition) guards each partition it covers."""
    db = metrics_db
    store = MongoSnapshotStore(db)
    a, b, c = (TOPIC, 0), (TOPIC, 1), (TOPIC, 2)
    assert await store.save({a: 10, b: 20}, b"first")
    assert not await store.save({a: 30, b: 19}, b"behind on b")
    assert await store.load() == ({a: 10, b: 20}, b"first")
    # A partition the stored snapshot does not cover yet is no reason to refuse.
    assert await store.save({a: 10, b: 20, c: 5}, b"with c")
    assert await store.load() == ({a: 10, b: 20, c: 5}, b"with c")
