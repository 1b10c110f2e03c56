"""Malformed records go to `kasse.dlq.metrics`, with the kit's `kasse_dlq_*` header conventions."""

from __future__ import annotations

import logging

from kasse_common.messaging import EventPublisher, dead_letter_headers
from kasse_metrics.application.ingest import RawRecord

log = logging.getLogger(__name__)


class KafkaDeadLetters:
    def __init__(self, publisher: EventPublisher, topic: str, consumer_group: str) -> None:
        self.publisher = publisher
        self.topic = topic
        self.consumer_group = consumer_group
        self.count = 0

    async def send(self, record: RawRecord, error: Exception) -> None:
        headers = dead_letter_headers(
            record.headers, error, record.topic, record.partition, record.offset, self.consumer_group, attempts=0
        )
        # If this raises, the batch's offsets are not raised and the record comes back: never lost.
        await self.publisher.publish_raw(self.topic, record.value, record.key, headers)
        self.count += 1
        log.error(
            "record dead-lettered: %s:%s@%s %s",
            record.topic,
            record.partition,
            record.offset,
            str(error)[:200],
            extra={
                "dlq_topic": self.topic,
                "source_topic": record.topic,
                "partition": record.partition,
                "offset": record.offset,
                "error": str(error)[:500],
            },
        )
