"""The checkpoint store on the real store (FerretDB locally): pruning the segments below a snapshot deletes
every writer's segments of that partition at or below the offset (a writer killed before it pruned leaves some
that its successor never read), facts and all, and no other partition's; a segment whose writer was killed
before its facts were stored is skipped by readers and pruned like the others."""

from __future__ import annotations

from typing import Any

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from kasse_metrics.adapters.mongo_checkpoints import MongoCheckpointStore
from kasse_metrics.application.ingest import Segment
from kasse_metrics.domain.facts import Viewed, encode_facts

pytestmark = pytest.mark.integration

TOPIC = "kasse.metrics.facts-by-session.v1"


def _segment(partition: int, start: int, end: int) -> Segment:
    facts = tuple(Viewed(f"e-{partition}-{o}", 60_000 * o, o, f"s-{o}", "prod_a") for o in range(start, end))
    return Segment(TOPIC, partition, start, end, facts)


async def test_a_prune_deletes_every_writers_segments_below_the_offset_of_that_partition_only(
    metrics_db: AsyncDatabase[Any],
) -> None:
    db = metrics_db
    segments, facts = db[MongoCheckpointStore.SEGMENTS], db[MongoCheckpointStore.SEGMENT_FACTS]

    async def stored() -> list[tuple[int, int]]:
        located = sorted([(d["p"], d["s"]) async for d in segments.find({}, {"p": 1, "s": 1})])
        # Every segment's facts are there, and no facts without their segment.
        assert await facts.count_documents({}) == len(located)
        return located

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


async def test_a_segment_without_its_facts_is_skipped_and_pruned_and_one_in_the_former_layout_is_read(
    metrics_db: AsyncDatabase[Any],
) -> None:
    db = metrics_db
    segments, facts = db[MongoCheckpointStore.SEGMENTS], db[MongoCheckpointStore.SEGMENT_FACTS]
    tp = (TOPIC, 3)
    store = MongoCheckpointStore(db)
    # Stored before the facts had a collection of their own: one document, the blob inside.
    former = _segment(3, 0, 5)
    await segments.insert_one(
        {"t": TOPIC, "p": 3, "s": 0, "e": 5, "n": len(former.facts), "b": encode_facts(former.facts)}
    )
    # A writer killed between the two inserts: located, but its facts never stored (nor its offsets).
    await store.write([_segment(3, 5, 10)])
    killed = await segments.find_one({"s": 5})
    assert killed is not None
    await facts.delete_one({"_id": killed["_id"]})
    # Its successor consumed those records again and stored them, then more.
    await store.write([_segment(3, 5, 12)])

    read = [f.offset for f in await store.read(tp, 0, 12)]
    assert read == list(range(12))  # every offset once: nothing from the segment without facts

    assert await store.prune({tp: 10}) == 2  # the former layout's and the one without facts
    assert sorted([(d["s"], d["e"]) async for d in segments.find({})]) == [(5, 12)]
    assert await facts.count_documents({}) == 1
    assert await store.prune({tp: 12}) == 1
    assert await segments.count_documents({}) == 0 and await facts.count_documents({}) == 0
