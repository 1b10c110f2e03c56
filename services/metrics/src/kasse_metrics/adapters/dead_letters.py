"""Malformed records go to `kasse.dlq.metrics`, with the kit's `kasse_dlq_*` header conventions."""

from __future__ import annotations

import logging
import traceback
from datetime import UTC, datetime

from kasse_common.messaging import EventPublisher
from kasse_metrics.application.ingest import RawRecord

log = logging.getLogger(__name__)


class KafkaDeadLetters:
    def __init__(self, publisher: EventPublisher, topic: str, consumer_group: str) -> None:
        self.publisher = publisher
        self.topic = topic
        self.consumer_group = consumer_group
        self.count = 0

    async def send(self, record: RawRecord, error: Exception) -> None:
        headers = dict(record.headers)
        headers.update(
            {
                "kasse_dlq_error": str(error)[:2000],
                "kasse_dlq_error_type": type(error).__name__,
                "kasse_dlq_stacktrace": "".join(traceback.format_exception(error))[-4000:],
                "kasse_dlq_topic": record.topic,
                "kasse_dlq_partition": str(record.partition),
                "kasse_dlq_offset": str(record.offset),
                "kasse_dlq_consumer_group": self.consumer_group,
                "kasse_dlq_attempts": "0",
                "kasse_dlq_time": datetime.now(UTC).isoformat(),
            }
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
