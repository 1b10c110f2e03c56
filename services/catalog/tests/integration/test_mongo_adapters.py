"""The Mongo adapters' idempotency tricks on the real FerretDB (no Kafka needed)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from kasse_catalog.adapters import mongo
from kasse_catalog.application.ports import RelationKind
from kasse_testkit import Namespace
from kasse_testkit.infrastructure import Infrastructure

pytestmark = pytest.mark.integration


@pytest.fixture
async def db(kasse_infra: Infrastructure, namespace: Namespace) -> AsyncIterator[AsyncDatabase[Any]]:
    client: AsyncMongoClient[Any] = AsyncMongoClient(kasse_infra.mongo_uri, tz_aware=True)
    try:
        yield client[namespace.database("catalog")]
    finally:
        await client.close()


async def test_pair_counters_count_each_event_once_and_keep_their_memory_bounded(
    db: AsyncDatabase[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(mongo, "SEEN_KEEP", 3)
    signals = mongo.MongoSignals(db["relations"], db["sessions"])
    for i in range(8):
        await signals.increment_pair(RelationKind.BOUGHT_TOGETHER, "a", "b", f"e{i}")
    await signals.increment_pair(RelationKind.BOUGHT_TOGETHER, "a", "b", "e7")  # redelivered
    await signals.increment_pair(RelationKind.VIEWED_TOGETHER, "a", "c", "e7")  # same event, other pair
    assert await signals.related(RelationKind.BOUGHT_TOGETHER, "a", 5) == [("b", 8)]
    assert await signals.related(RelationKind.VIEWED_TOGETHER, "a", 5) == [("c", 1)]
    doc = await db["relations"].find_one({"kind": "bought_together", "product_id": "a"})
    assert doc is not None and len(doc["seen"]) <= 2 * 3 and doc["seen"][-1] == "e7"


async def test_session_views_keep_the_latest_first_once_per_event(db: AsyncDatabase[Any]) -> None:
    signals = mongo.MongoSignals(db["relations"], db["sessions"])
    for event_id, product_id in (("v1", "p1"), ("v2", "p2"), ("v3", "p1"), ("v3", "p1"), ("v4", "p3")):
        await signals.record_view("s1", product_id, event_id, keep=2)
    assert await signals.recent_views("s1") == ["p3", "p1"]
    assert await signals.recent_views("nobody") == []


async def test_the_purchase_ledger_finds_delivered_orders_by_customer_or_session(db: AsyncDatabase[Any]) -> None:
    ledger = mongo.MongoPurchaseLedger(db["purchases"])
    await ledger.mark_delivered("o1", datetime.now(UTC))  # delivery known before the order
    await ledger.record_order("o1", "c1", "s1", ["p1", "p2"])
    await ledger.record_order("o2", "c2", "s2", ["p1"])
    assert await ledger.delivered_order_with("p2", "c1", None) == "o1"
    assert await ledger.delivered_order_with("p1", None, "s1") == "o1"
    assert await ledger.delivered_order_with("p1", "c2", "s2") is None  # not delivered
    assert await ledger.delivered_order_with("p3", "c1", "s1") is None
    assert await ledger.delivered_order_with("p1", None, None) is None
