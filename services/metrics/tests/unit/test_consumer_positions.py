"""The ingest consumer after a seek: records handed out below the sought offset are stored already."""

from __future__ import annotations

from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord

from kasse_metrics.application.ingest import Checkpoints, Ingest, ProjectionSync, contract_decode
from kasse_metrics.domain.kpis import Projection
from kasse_metrics.entrypoints.consumer import IngestConsumer
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
