"""The checkpoint store on the real store (FerretDB locally): pruning the segments below a snapshot.

A prune deletes by `_id` the segments this process wrote or read (FerretDB v1 serves a range filter by
reading every segment, holding the write lock every checkpoint needs); the first prune of a partition's
owner also sweeps by range what other processes left below the snapshot.
"""

from __future__ import annotations

from typing import Any

import pytest
from pymongo import AsyncMongoClient

from kasse_metrics.adapters.mongo_checkpoints import MongoCheckpointStore
from kasse_metrics.application.ingest import Segment
from kasse_metrics.domain.facts import Viewed
from kasse_testkit import Namespace
from kasse_testkit.infrastructure import Infrastructure

pytestmark = pytest.mark.integration

TOPIC = "kasse.metrics.facts-by-session.v1"


def _segment(partition: int, start: int, end: int) -> Segment:
    facts = tuple(Viewed(f"e-{partition}-{o}", 60_000 * o, o, f"s-{o}", "prod_a") for o in range(start, end))
    return Segment(TOPIC, partition, start, end, facts)


async def test_a_prune_deletes_what_this_process_wrote_or_read_and_a_sweep_what_others_left(
    kasse_infra: Infrastructure, namespace: Namespace
) -> None:
    mongo: AsyncMongoClient[Any] = AsyncMongoClient(kasse_infra.mongo_uri)
    try:
        db = mongo[namespace.database("metrics")]
        segments = db[MongoCheckpointStore.SEGMENTS]

        async def stored() -> list[tuple[int, int]]:
            return sorted([(d["p"], d["s"]) async for d in segments.find({}, {"p": 1, "s": 1})])

        tp = (TOPIC, 1)
        predecessor = MongoCheckpointStore(db)  # a process that died before it pruned
        await predecessor.write([_segment(1, 0, 10), _segment(1, 10, 20)])
        owner = MongoCheckpointStore(db)
        await owner.write([_segment(1, 20, 30), _segment(1, 30, 40), _segment(2, 0, 10)])

        # Its own segments at or below the offset, of that partition only.
        assert await owner.prune({tp: 30}) == 1
        assert await stored() == [(1, 0), (1, 10), (1, 30), (2, 0)]
        # The sweep: what the predecessor left below the offset too.
        assert await owner.prune({tp: 30}, sweep=True) == 2
        assert await stored() == [(1, 30), (2, 0)]

        # A segment this process only read (a successor catching up) is known by its `_id` too.
        successor = MongoCheckpointStore(db)
        assert [f.offset for f in await successor.read(tp, 30, 40)] == list(range(30, 40))
        assert await successor.prune({tp: 40}) == 1
        assert await stored() == [(2, 0)]
        # Deleting again what is gone already is no error.
        assert await owner.prune({tp: 40, (TOPIC, 2): 10}) == 1
        assert await stored() == []
    finally:
        await mongo.close()
