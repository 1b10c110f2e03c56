"""The outbox relay publishes without its full scan: refused events are retried from memory, and a
document another relay left behind is taken over when that relay's lease runs out.

The scan of every pending document reads the whole collection on FerretDB v1, so it runs rarely (at
start, every `outbox_poll_interval_s` = 300 s in production, and when a lease it saw runs out). Here
the interval is an hour: whatever goes out within seconds went out without it.
"""

from __future__ import annotations

import time
from typing import Any, ClassVar

import pytest
from pydantic_settings import SettingsConfigDict

from kasse_common.envelope import OutgoingRecord, encode
from kasse_common.mongo import create_mongo_client
from kasse_common.outbox import OutboxRelay
from kasse_common.persistence import LEASE, OUTBOX, OWNER, PENDING, REV, SINCE, DocumentStore
from kasse_common.settings import ServiceSettings
from kasse_testkit import wait_until
from kasse_testkit.samples import order_placed

pytestmark = pytest.mark.integration

AN_HOUR = 3600.0


class RelaySettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="KASSE_RELAY_TEST_", extra="ignore", frozen=True)
    service_name: ClassVar[str] = "relay"


class Broker:
    """Stands in for the kit's publisher: refuses the first `refusals` records, then takes them."""

    def __init__(self, refusals: int = 0) -> None:
        self.refusals = refusals
        self.published: list[str] = []

    async def publish(self, record: OutgoingRecord) -> None:
        if self.refusals > 0:
            self.refusals -= 1
            raise ConnectionError("broker away")
        self.published.append(record.event_id)


def record() -> OutgoingRecord:
    return encode(order_placed(), service="relay")


async def test_a_refused_event_is_retried_from_memory_without_waiting_for_the_scan(settings_for: Any) -> None:
    settings = settings_for(RelaySettings)
    mongo = create_mongo_client(settings)
    broker = Broker(refusals=2)
    relay = OutboxRelay(broker, poll_interval_s=AN_HOUR, lease_s=5.0)  # type: ignore[arg-type]
    collection = mongo[settings.database_name]["orders"]
    relay.watch(collection)
    store = DocumentStore(collection, on_commit=lambda ids: relay.hint("orders", ids), lease=relay.lease_fields)
    relay.start()
    try:
        event = record()
        await store.commit("order-1", expected_version=None, state={"status": "placed"}, events=[event])
        await wait_until(lambda: broker.published == [event.event_id], timeout=20)
        assert relay.publish_failures == 2
        doc = await collection.find_one({"_id": "order-1"})
        assert doc is not None and doc[PENDING] is False and doc[OUTBOX] == {}
        assert relay.backlog == {"orders": 0}
    finally:
        await relay.stop(drain_timeout_s=2)
        await mongo.close()


async def test_a_document_left_by_a_dead_relay_is_published_when_its_lease_runs_out(settings_for: Any) -> None:
    settings = settings_for(RelaySettings)
    mongo = create_mongo_client(settings)
    collection = mongo[settings.database_name]["orders"]
    event = record()
    # A process committed this and died before publishing: its relay's lease runs for 3 more seconds.
    await collection.insert_one(
        {
            "_id": "order-2",
            "status": "placed",
            OUTBOX: {event.event_id: {**event.to_document(), "seq": 0}},
            PENDING: True,
            REV: 1,
            SINCE: time.time(),
            OWNER: "a-relay-that-died",
            LEASE: time.time() + 3,
        }
    )
    broker = Broker()
    relay = OutboxRelay(broker, poll_interval_s=AN_HOUR, lease_s=5.0)  # type: ignore[arg-type]
    relay.watch(collection)
    relay.start()  # its first scan sees the foreign lease and looks again when it has run out
    try:
        await wait_until(lambda: broker.published == [event.event_id], timeout=20)
        doc = await collection.find_one({"_id": "order-2"})
        assert doc is not None and doc[PENDING] is False
    finally:
        await relay.stop(drain_timeout_s=2)
        await mongo.close()
