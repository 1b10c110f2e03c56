"""The checkpoint store on the real store (FerretDB locally): pruning the segments below a snapshot deletes
every writer's segments of that partition at or below the offset (a writer killed before it pruned leaves some
that its successor never read), and no other partition's."""

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


async def test_a_prune_deletes_every_writers_segments_below_the_offset_of_that_partition_only(
    kasse_infra: Infrastructure, namespace: Namespace
) -> None:
    mongo: AsyncMongoClient[Any] = AsyncMongoClient(kasse_infra.mongo_uri)
    try:
        db = mongo[namespace.database("metrics")]
        segments = db[MongoCheckpointStore.SEGMENTS]

        async def stored() -> list[tuple[int, int]]:
            return sorted([(d["p"], d["s"]) async for d in segments.find({}, {"p": 1, "s": 1})])

        tp = (TOPIC, 1)
        predecessor = MongoCheckpointStore(db)  # a process killed before it pruned
        await predecessor.write([_segment(1, 0, 10), _segment(1, 10, 20)])
        owner = MongoCheckpointStore(db)
        await owner.write([_segment(1, 20, 30), _segment(1, 30, 40), _segment(2, 0, 10)])

        assert await owner.prune({tp: 30}) == 3
        assert await stored() == [(1, 30), (2, 0)]
        assert [f.offset for f in await owner.read(tp, 30, 40)] == list(range(30, 40))
        assert await owner.prune({tp: 40, (TOPIC, 2): 10}) == 2
        assert await stored() == []
    finally:
        await mongo.close()
