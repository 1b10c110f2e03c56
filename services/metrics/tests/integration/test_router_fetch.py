"""The router's consumer on the real broker: a backlog is read without stalls.

librdkafka postpones a partition's next fetch by `fetch.queue.backoff.ms` (1 s by default) whenever its
local queue is over the bounds the router sets (`queued.min.messages`, `queued.max.messages.kbytes`, kept
small for memory). With the default, draining a backlog went: one fetch, a few polls that found nothing for
their whole timeout, the next fetch a second later: the router waited in empty polls ~70 % of the time
and the bench's service routed 15,000 events/s instead of 34,000.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from kasse_metrics.application.routing import Router
from kasse_metrics.entrypoints.router import RouterConsumer
from kasse_metrics.settings import MetricsSettings
from kasse_testkit import Namespace
from kasse_testkit.infrastructure import Infrastructure

pytestmark = pytest.mark.integration

RECORDS = 40_000
VALUE = b"x" * 600  # ~ a contract event's size: the queue bounds are reached as with real traffic


class _NoDeadLetters:
    count = 0

    async def send(self, record: Any, error: Exception) -> None:  # pragma: no cover - nothing is decoded here
        raise AssertionError("not used")


class _NoSender:
    partitions = 1

    async def send(self, partition: int, value: bytes) -> Any:  # pragma: no cover - not routed here
        raise AssertionError("not used")


def _fill(bootstrap: str, topic: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)]).values():
        future.result(30)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "acks": 1})
    for i in range(RECORDS):
        while True:
            try:
                producer.produce(topic, VALUE, key=str(i).encode())
                break
            except BufferError:
                producer.poll(0.05)
    assert producer.flush(60) == 0, "the backlog was not written"


def test_a_backlog_is_read_without_polls_that_wait_for_a_postponed_fetch(
    kasse_infra: Infrastructure, namespace: Namespace, settings_for: Any
) -> None:
    topic = namespace.topic(f"router-fetch-{uuid.uuid4().hex[:6]}")
    _fill(kasse_infra.kafka_bootstrap, topic)
    settings = settings_for(MetricsSettings)
    router = RouterConsumer(settings, Router(_NoDeadLetters(), _NoSender()), None, [topic])  # type: ignore[arg-type]
    consumer = Consumer(router._config())
    consumer.subscribe([topic])
    # Longer than any fetch round trip of a loaded test machine, shorter than a postponed fetch (1 s by
    # default): only a fetch held back by the backoff leaves a poll empty for this long.
    timeout_s = 0.5
    try:
        read = 0
        empty_after_first = 0
        for _ in range(2_000):  # bounded: 40,000 records come in far fewer takes
            batch = router._take(consumer, 2_000, timeout_s)
            if not batch:
                if read:
                    empty_after_first += 1
                continue
            read += len(batch)
            if read >= RECORDS:
                break
        assert read == RECORDS
        assert empty_after_first == 0, f"{empty_after_first} polls of {timeout_s} s found nothing with a backlog queued"
    finally:
        consumer.close()
