"""The outbox relay publishes without its periodic full scan: refused events are retried from
memory, a document another relay holds is taken over by `_id` when that relay's lease runs out, a
commit that raised but landed is published, and a relay that stopped beating (died, never restarted)
makes a survivor scan for what it left.

The scan of every pending document reads the whole collection on FerretDB v1, so it runs rarely (at
start, when a relay of the database stops beating, and every `outbox_poll_interval_s` = an hour in
production). Here the interval is an hour: whatever goes out within seconds went out without it.
"""

from __future__ import annotations

import time
from typing import Any, ClassVar

import pytest
from pydantic_settings import SettingsConfigDict
from pymongo.errors import AutoReconnect

from kasse_common.envelope import OutgoingRecord, encode
from kasse_common.mongo import StoreCommands, create_mongo_client
from kasse_common.outbox import REGISTRY, OutboxRelay
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


async def published_doc(collection: Any, doc_id: str) -> dict[str, Any] | None:
    """The document once its relay has marked it published (nothing pending), else None."""
    doc = await collection.find_one({"_id": doc_id})
    return doc if doc is not None and doc[PENDING] is False else None


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
        # The relay marks the document published after the broker took the record: wait for that write.
        doc = await wait_until(lambda: published_doc(collection, "order-1"), timeout=30)
        assert doc[OUTBOX] == {}
        await wait_until(lambda: relay.backlog == {"orders": 0}, timeout=30)
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
        await wait_until(lambda: published_doc(collection, "order-2"), timeout=30)
    finally:
        await relay.stop(drain_timeout_s=2)
        await mongo.close()


def pending_doc(doc_id: str, event: OutgoingRecord, owner: str, lease: float) -> dict[str, Any]:
    return {
        "_id": doc_id,
        "status": "placed",
        OUTBOX: {event.event_id: {**event.to_document(), "seq": 0}},
        PENDING: True,
        REV: 1,
        SINCE: time.time(),
        OWNER: owner,
        LEASE: lease,
    }


def scans(commands: StoreCommands) -> int:
    return sum(
        t.count
        for (cmd, coll, shape), t in commands.snapshot().items()
        if cmd == "find" and shape == "{_outbox_pending}"
    )


async def test_a_relay_that_stopped_beating_is_taken_over_by_a_survivor_scan(settings_for: Any) -> None:
    settings = settings_for(RelaySettings)
    commands = StoreCommands()
    mongo = create_mongo_client(settings, commands)
    db = mongo[settings.database_name]
    collection = db["orders"]
    broker = Broker()
    relay = OutboxRelay(broker, poll_interval_s=AN_HOUR, lease_s=5.0, heartbeat_s=0.3, dead_after_s=2.0)  # type: ignore[arg-type]
    relay.watch(collection)
    relay.start()
    try:
        await wait_until(lambda: scans(commands) == 1, timeout=20)  # the start's scan: nothing pending yet
        # Another replica, alive: it beats, and its documents are its own.
        await db[REGISTRY].insert_one({"_id": "alive", "beat_at": time.time() + AN_HOUR})
        # Another replica committed this, then died and never came back (its lease ran out long ago).
        event = record()
        await db[REGISTRY].insert_one({"_id": "dead", "beat_at": time.time() - 60})
        await collection.insert_one(pending_doc("order-3", event, "dead", time.time() - 30))
        await wait_until(lambda: broker.published == [event.event_id], timeout=20)
        assert relay.relays_taken_over == 1 and scans(commands) == 2
        assert {d["_id"] for d in await db[REGISTRY].find({}).to_list()} == {"alive", relay._owner}
        await relay.stop(drain_timeout_s=2)
        assert await db[REGISTRY].count_documents({"_id": relay._owner}) == 0  # stopped cleanly: unregistered
    finally:
        await relay.stop(drain_timeout_s=2)
        await mongo.close()


class _LandsThenDies:
    """The store applies the write, then dies before answering (AutoReconnect)."""

    def __init__(self, collection: Any) -> None:
        self._collection = collection

    def __getattr__(self, name: str) -> Any:
        return getattr(self._collection, name)

    async def update_one(self, *args: Any, **kw: Any) -> Any:
        await self._collection.update_one(*args, **kw)
        raise AutoReconnect("connection closed")


async def test_a_commit_that_raised_but_landed_is_published_without_a_scan(settings_for: Any) -> None:
    settings = settings_for(RelaySettings)
    commands = StoreCommands()
    mongo = create_mongo_client(settings, commands)
    collection = mongo[settings.database_name]["orders"]
    broker = Broker()
    relay = OutboxRelay(broker, poll_interval_s=AN_HOUR, lease_s=5.0)  # type: ignore[arg-type]
    relay.watch(collection)
    hint = lambda ids: relay.hint("orders", ids)  # noqa: E731
    store = DocumentStore(collection, on_commit=hint, lease=relay.lease_fields)
    relay.start()
    try:
        await store.commit("order-4", expected_version=None, state={"status": "placed"})
        await wait_until(lambda: scans(commands) == 1, timeout=20)
        dying = DocumentStore(_LandsThenDies(collection), on_commit=hint, lease=relay.lease_fields)  # type: ignore[arg-type]
        event = record()
        with pytest.raises(AutoReconnect):
            await dying.commit("order-4", expected_version=1, state={"status": "paid"}, events=[event])
        await wait_until(lambda: broker.published == [event.event_id], timeout=20)
        assert scans(commands) == 1  # found by `_id`, not by a scan
    finally:
        await relay.stop(drain_timeout_s=2)
        await mongo.close()
