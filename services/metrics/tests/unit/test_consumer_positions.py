"""The ingest consumer after a seek: records handed out below the sought offset are stored already."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord

from kasse_metrics.application.ingest import Checkpoints, Ingest, ProjectionSync, contract_decode
from kasse_metrics.domain.kpis import Projection
from kasse_metrics.entrypoints.consumer import IngestConsumer, _SeekToStoredOffsets
from kasse_metrics.settings import MetricsSettings

from .fakes import InMemoryCheckpointStore, RecordingDeadLetters
from .test_kpis import _views

pytestmark = pytest.mark.unit


def _consumer_record(topic: str, partition: int, offset: int, value: bytes, headers: dict[str, str]) -> Any:
    return ConsumerRecord(
        topic, partition, offset, 0, 0, b"k", value, None, len(value), -1, [(k, v.encode()) for k, v in headers.items()]
    )


async def test_records_below_the_sought_offset_are_skipped_and_readiness_follows_the_real_position() -> None:
    store = InMemoryCheckpointStore()
    projection = Projection()
    ingest = Ingest(ProjectionSync(store, projection), Checkpoints(store), contract_decode(RecordingDeadLetters()))
    consumer = IngestConsumer(MetricsSettings(profile="development"), store, ingest)
    tp = TopicPartition("kasse.storefront.v1", 0)
    views = _views(6)
    # Assigned and sought to the stored offset 4 (the partition's end is 6) ...
    consumer.next_offsets[(tp.topic, tp.partition)] = 4
    consumer.ends_at_assignment[(tp.topic, tp.partition)] = 6
    consumer.consumer = object()  # type: ignore[assignment]  # assigned: caught_up() looks at the positions
    # ... but the client hands out a batch it fetched from the reset position (the beginning) first.
    stale = {tp: [_consumer_record(v.topic, v.partition, v.offset, v.value or b"", v.headers) for v in views[:4]]}
    await consumer._ingest(stale)
    assert consumer.records_total == 0 and consumer.next_offsets[(tp.topic, tp.partition)] == 4
    assert consumer.caught_up() == "catching up: 2 records behind"
    await consumer._ingest(
        {tp: [_consumer_record(v.topic, v.partition, v.offset, v.value or b"", v.headers) for v in views]}
    )
    assert consumer.records_total == 2 and consumer.next_offsets[(tp.topic, tp.partition)] == 6
    assert consumer.caught_up() == "ok"


class _AssignedClient:
    """The aiokafka consumer as the rebalance listener uses it: every partition empty (end 0)."""

    def seek(self, tp: TopicPartition, offset: int) -> None:
        pass

    async def seek_to_beginning(self, tp: TopicPartition) -> None:
        pass

    async def end_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: 0 for tp in tps}


async def test_not_ready_while_the_assigned_partitions_state_is_being_built() -> None:
    # Everything checkpointed: the sought positions equal the partitions' ends as soon as the seek is
    # done, while the state (snapshot, segments) is still being loaded by the listener.
    store = InMemoryCheckpointStore()
    ingest = Ingest(ProjectionSync(store, Projection()), Checkpoints(store), contract_decode(RecordingDeadLetters()))
    loading, release = asyncio.Event(), asyncio.Event()

    async def build_state(tps: list[tuple[str, int]]) -> None:
        loading.set()
        await release.wait()

    consumer = IngestConsumer(MetricsSettings(profile="development"), store, ingest, on_assigned=build_state)
    consumer.consumer = _AssignedClient()  # type: ignore[assignment]
    listener = _SeekToStoredOffsets(consumer)
    assigned = [TopicPartition("kasse.metrics.facts-by-session.v1", p) for p in range(2)]
    task = asyncio.create_task(listener.on_partitions_assigned(assigned))
    await asyncio.wait_for(loading.wait(), 10)
    assert consumer.next_offsets and consumer.ends_at_assignment  # sought: positions == ends
    assert consumer.caught_up() == "catching up: loading the assigned partitions' state"
    release.set()
    await asyncio.wait_for(task, 10)
    assert consumer.caught_up() == "ok"


async def test_the_consumer_waits_for_the_store_once_too_many_facts_are_pending() -> None:
    # Few records (a router record packs up to a thousand facts), many facts: the facts bound stores them
    # before the next poll.
    store = InMemoryCheckpointStore()
    ingest = Ingest(ProjectionSync(store, Projection()), Checkpoints(store), contract_decode(RecordingDeadLetters()))
    settings = MetricsSettings(profile="development", checkpoint_max_pending_facts=5)
    consumer = IngestConsumer(settings, store, ingest)
    consumer.consumer = object()  # type: ignore[assignment]
    tp = TopicPartition("kasse.storefront.v1", 0)
    views = _views(6)
    records = {tp: [_consumer_record(v.topic, v.partition, v.offset, v.value or b"", v.headers) for v in views[:4]]}
    await consumer._ingest(records)
    await consumer._bound_pending()
    assert store.segments == [] and ingest.checkpoints.pending_facts == 4  # below the bound: the timer stores
    records = {tp: [_consumer_record(v.topic, v.partition, v.offset, v.value or b"", v.headers) for v in views[4:]]}
    await consumer._ingest(records)
    await consumer._bound_pending()
    assert ingest.checkpoints.pending_facts == 0
    assert sum(len(s.facts) for s in store.segments) == 6 and store.offsets[(tp.topic, tp.partition)] == 6
