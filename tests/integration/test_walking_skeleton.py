"""The walking skeleton: the kit end to end on the real broker and the real Mongo-protocol store.

An event is written through one process's outbox, crosses Kafka in the CloudEvents envelope and is
applied exactly once by a consumer running in another process that stores it — also when the record
is delivered twice and when the consumer is killed after applying but before committing its offset.
A poison record lands on the dead-letter topic and the consumer carries on.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, ClassVar

import pytest
from pydantic_settings import SettingsConfigDict
from pymongo import AsyncMongoClient

from kasse_common.persistence import processed_ids
from kasse_common.runtime import ServiceRuntime
from kasse_common.settings import ServiceSettings
from kasse_contracts import topics
from kasse_contracts.events import OrderPlaced
from kasse_testkit import Namespace, ServiceProcess, TestPublisher, free_port, wait_until
from kasse_testkit.infrastructure import Infrastructure
from kasse_testkit.samples import order_placed

pytestmark = pytest.mark.integration

SKELETON = Path(__file__).with_name("skeleton_service.py")


class ProducerSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="KASSE_SKELETON_PRODUCER_", extra="ignore", frozen=True)
    service_name: ClassVar[str] = "skeleton-producer"


def skeleton_process(infra: Infrastructure, ns: Namespace, tmp_path: Path, **env: str) -> ServiceProcess:
    port = free_port()
    return ServiceProcess(
        [sys.executable, str(SKELETON)],
        {
            "KASSE_SKELETON_KAFKA_BOOTSTRAP": infra.kafka_bootstrap,
            "KASSE_SKELETON_MONGO_URI": infra.mongo_uri,
            "KASSE_SKELETON_MONGO_DATABASE": ns.database("skeleton"),
            "KASSE_SKELETON_TOPIC_PREFIX": ns.topic_prefix,
            "KASSE_SKELETON_HTTP_PORT": str(port),
            "KASSE_SKELETON_CONSUMER_BACKOFF_INITIAL_S": "0.01",
            **env,
        },
        port=port,
        log_path=tmp_path / "skeleton.log",
    )


async def ledger(infra: Infrastructure, ns: Namespace, order_id: str) -> dict[str, Any] | None:
    client: AsyncMongoClient[Any] = AsyncMongoClient(infra.mongo_uri)
    try:
        return await client[ns.database("skeleton")]["ledger"].find_one({"_id": order_id})
    finally:
        await client.close()


async def test_outbox_event_crosses_the_broker_and_is_applied_once_across_duplicates_and_a_crash(
    kasse_infra: Infrastructure, namespace: Namespace, settings_for: Any, topic_reader: Any, tmp_path: Path
) -> None:
    first, crashing = order_placed(), order_placed()
    # The crash switch needs the id before publishing, so the event ids are chosen here.
    first_id, crashing_id = "evt-first-" + namespace.token, "evt-crash-" + namespace.token

    # Producer process (this one): state and event in one write, the relay publishes.
    producer = ServiceRuntime(settings_for(ProducerSettings), configure_logs=False)
    orders = producer.document_store("orders")
    producer.produces(OrderPlaced)
    consumer = skeleton_process(kasse_infra, namespace, tmp_path, SKELETON_CRASH_ON_EVENT_ID=crashing_id)
    async with topic_reader(topics.ORDERS) as reader:
        await producer.start()
        try:
            await consumer.start()
            await orders.commit(
                first.order_id,
                expected_version=None,
                state={"status": "placed"},
                events=[producer.encode(first, event_id=first_id)],
            )
            await wait_until(lambda: ledger(kasse_infra, namespace, first.order_id), message="first order applied")

            # On the wire: CloudEvents binary mode, aggregate id as key.
            (record,) = await reader.wait_for(lambda r: r.headers.get("ce_id") == first_id)
            assert record.key == first.order_id.encode()
            assert record.headers["ce_type"] == OrderPlaced.event_type
            assert record.headers["ce_source"] == "urn:kasse:service:skeleton-producer"
            assert record.headers["ce_subject"] == first.order_id
            assert record.headers["ce_specversion"] == "1.0"
            assert record.headers["content-type"] == "application/json"
            assert OrderPlaced.model_validate_json(record.value or b"") == first

            # The same record delivered again (a producer retry, a replay): applied once.
            async with TestPublisher(kasse_infra.kafka_bootstrap) as raw:
                await raw.publish_raw(record.topic, record.value, record.key, record.headers)
            await reader.wait_for(lambda r: r.headers.get("ce_id") == first_id, count=2)

            # The consumer dies after applying `crashing` and before committing its offset.
            await orders.commit(
                crashing.order_id,
                expected_version=None,
                state={"status": "placed"},
                events=[producer.encode(crashing, event_id=crashing_id)],
            )
            assert await consumer.wait_exit(timeout=30) == 137
            applied = await ledger(kasse_infra, namespace, crashing.order_id)
            assert applied is not None and applied["applied"] == 1

            # Restarted, it is handed the uncommitted record again, and changes nothing.
            restarted = skeleton_process(kasse_infra, namespace, tmp_path)
            await restarted.start()
            try:
                marker = order_placed()
                await orders.commit(
                    marker.order_id, expected_version=None, state={"status": "placed"}, events=[producer.encode(marker)]
                )
                # Records are consumed in order per partition, so once `marker` is applied the
                # redelivered ones before it on any partition have been seen too; wait for both.
                await wait_until(lambda: ledger(kasse_infra, namespace, marker.order_id), message="marker")
                await wait_until(lambda: _processed(kasse_infra, namespace, first.order_id, crashing.order_id))
            finally:
                await restarted.stop()
        finally:
            await consumer.stop()
            await producer.stop()

    for order, event_id in ((first, first_id), (crashing, crashing_id)):
        doc = await ledger(kasse_infra, namespace, order.order_id)
        assert doc is not None
        assert doc["applied"] == 1, f"{order.order_id} applied {doc['applied']} times"
        assert doc["total"] == order.total.amount
        assert processed_ids(doc) == {event_id}


async def _processed(infra: Infrastructure, ns: Namespace, *order_ids: str) -> bool:
    docs = [await ledger(infra, ns, oid) for oid in order_ids]
    return all(d is not None for d in docs)


async def test_poison_record_goes_to_the_dead_letter_topic_and_the_consumer_carries_on(
    kasse_infra: Infrastructure, namespace: Namespace, topic_reader: Any, tmp_path: Path
) -> None:
    consumer = skeleton_process(kasse_infra, namespace, tmp_path)
    await consumer.start()
    try:
        async with (
            topic_reader(topics.dead_letter_topic("skeleton")) as dlq,
            TestPublisher(kasse_infra.kafka_bootstrap, namespace.topic_prefix) as publisher,
        ):
            good_before, good_after = order_placed(), order_placed()
            poison_headers = {
                "ce_id": "poison-1",
                "ce_type": OrderPlaced.event_type,
                "ce_source": "urn:test",
                "ce_time": "2026-01-01T00:00:00+00:00",
                "ce_specversion": "1.0",
                "ce_subject": "x",
                "content-type": "application/json",
            }
            # All three on one partition (same key), so "carries on" means: past the poison record.
            key = b"same-partition"
            await publisher.publish_raw(
                namespace.topic(topics.ORDERS), _encoded(good_before), key, _headers(good_before, "good-before")
            )
            await publisher.publish_raw(namespace.topic(topics.ORDERS), b"{not json", key, poison_headers)
            await publisher.publish_raw(
                namespace.topic(topics.ORDERS), _encoded(good_after), key, _headers(good_after, "good-after")
            )

            (dead,) = await dlq.wait_for()
            assert dead.value == b"{not json"
            assert dead.key == key
            assert dead.headers["ce_id"] == "poison-1"
            assert dead.headers["kasse_dlq_error_type"] == "MalformedEvent"
            assert "invalid payload" in dead.headers["kasse_dlq_error"]
            assert dead.headers["kasse_dlq_topic"] == namespace.topic(topics.ORDERS)
            await wait_until(lambda: ledger(kasse_infra, namespace, good_after.order_id), message="after poison")
            assert await ledger(kasse_infra, namespace, good_before.order_id) is not None
    finally:
        await consumer.stop()


def _encoded(event: OrderPlaced) -> bytes:
    return event.model_dump_json().encode()


def _headers(event: OrderPlaced, event_id: str) -> dict[str, str]:
    from kasse_common.envelope import encode

    return encode(event, service="test", event_id=event_id).headers
