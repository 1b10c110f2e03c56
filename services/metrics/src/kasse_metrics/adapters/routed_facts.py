"""The router's producer: packed facts to the internal topic, one explicit partition per record.

confluent-kafka (librdkafka batches, retries and acknowledges in C). Its delivery reports are served by
`poll`, which blocks: a thread of its own polls, and each report settles the record's asyncio future on
the event loop (`call_soon_threadsafe`), the pattern of confluent-kafka's asyncio example. The router
awaits those futures before it commits the source offsets.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer

from kasse_common.messaging import confluent_security
from kasse_common.settings import ServiceSettings


class RoutedFactsNotDelivered(Exception):
    """The broker did not acknowledge a record (after librdkafka's own retries)."""


class KafkaRoutedFacts:
    def __init__(self, settings: ServiceSettings, topic: str) -> None:
        self.settings = settings
        self.topic = topic
        self.partitions = 0  # the topic's partition count, read at start (sessions spread over all)
        self._producer: Producer | None = None
        self._polling: threading.Thread | None = None
        self._stopping = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    def _config(self) -> dict[str, Any]:
        s = self.settings
        return {
            **confluent_security(s),
            "bootstrap.servers": s.kafka_bootstrap,
            "client.id": f"kasse-{s.service_name}-router",
            "acks": "all",
            # Idempotent: a retried send is not written twice (duplicates would be skipped by id anyway).
            "enable.idempotence": True,
            "message.max.bytes": 4 * 1024 * 1024,
            "linger.ms": 1,
        }

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        producer = Producer(self._config())
        self._producer = producer
        self._stopping.clear()
        self._polling = threading.Thread(target=self._poll, args=(producer,), name="routed-facts-poll", daemon=True)
        self._polling.start()
        metadata = await self._loop.run_in_executor(None, lambda: producer.list_topics(self.topic, timeout=30))
        topic = metadata.topics.get(self.topic)
        if topic is None or topic.error is not None or not topic.partitions:
            await self.stop()
            raise RuntimeError(f"topic {self.topic} has no partitions (not created?)")
        self.partitions = len(topic.partitions)

    def _poll(self, producer: Producer) -> None:
        # Serves delivery reports (the callbacks run on this thread) until stop().
        while not self._stopping.is_set():
            producer.poll(0.1)

    async def stop(self) -> None:
        producer, self._producer = self._producer, None
        if producer is None:
            return
        loop = asyncio.get_running_loop()
        # What was produced and not acknowledged yet: delivered or failed now, its futures settled.
        await loop.run_in_executor(None, producer.flush, 10)
        self._stopping.set()
        if self._polling is not None:
            await loop.run_in_executor(None, self._polling.join)
            self._polling = None

    async def send(self, partition: int, value: bytes) -> Awaitable[Any]:
        assert self._producer is not None and self._loop is not None, "start() first"
        loop = self._loop
        acked: asyncio.Future[None] = loop.create_future()

        def settle(result: asyncio.Future[None], error: KafkaError | None) -> None:
            if result.done():  # cancelled meanwhile
                return
            if error is None:
                result.set_result(None)
            else:
                result.set_exception(RoutedFactsNotDelivered(f"{self.topic}[{partition}]: {error}"))

        def delivered(error: KafkaError | None, _message: Any) -> None:
            # Runs on the poll thread: an exception here would end that thread (and every ack after it).
            try:
                loop.call_soon_threadsafe(settle, acked, error)
            except RuntimeError:  # the event loop is closed: nobody awaits this record any more
                pass

        try:
            self._producer.produce(self.topic, value, partition=partition, on_delivery=delivered)
        except (BufferError, KafkaException) as exc:
            # BufferError: librdkafka's queue is full; not expected (a batch is a handful of records and
            # each batch waits for its acknowledgements), and the router retries the batch anyway.
            raise RoutedFactsNotDelivered(f"{self.topic}[{partition}]: {exc}") from exc
        return acked
