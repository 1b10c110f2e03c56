"""The Mongo adapters' idempotency tricks on the real FerretDB (no Kafka needed)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import pytest
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from kasse_catalog.adapters import mongo
from kasse_catalog.application.ports import RelationKind
from kasse_catalog.application.products import ProductCatalog
from kasse_catalog.application.stock import StockKeeper
from kasse_catalog.domain.product import Product, ProductDetails
from kasse_catalog.domain.reservation import ReservationStatus
from kasse_common.envelope import encode
from kasse_common.persistence import DocumentStore
from kasse_contracts.base import Money
from kasse_testkit import Namespace, samples
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
    monkeypatch.setattr(mongo, "TRIM_CHECK_EVERY", 1)
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


async def test_the_purchase_ledger_finds_delivered_orders_by_customer(db: AsyncDatabase[Any]) -> None:
    ledger = mongo.MongoPurchaseLedger(db["purchases"])
    await ledger.mark_delivered("o1", datetime.now(UTC))  # delivery known before the order
    await ledger.record_order("o1", "c1", "s1", ["p1", "p2"])
    await ledger.record_order("o2", "c2", "s2", ["p1"])
    assert await ledger.delivered_order_with("p2", "c1") == "o1"
    assert await ledger.delivered_order_with("p1", "c2") is None  # not delivered
    assert await ledger.delivered_order_with("p3", "c1") is None
    assert await ledger.delivered_order_with("p1", "s1") is None  # a session id proves nothing


def _stock_keeper(db: AsyncDatabase[Any], products: mongo.MongoProducts) -> StockKeeper:
    reservations = mongo.MongoReservations(DocumentStore(db["reservations"]))
    return StockKeeper(products, reservations, partial(encode, service="catalog"), lambda: datetime.now(UTC))


async def _product(db: AsyncDatabase[Any], sku: str, stock: int) -> tuple[mongo.MongoProducts, Product]:
    products = mongo.MongoProducts(DocumentStore(db["products"]))
    catalog = ProductCatalog(products, partial(encode, service="catalog"), lambda: datetime.now(UTC))
    details = ProductDetails(sku=sku, name=sku, description="", category="c", price=Money(amount=100, currency="EUR"))
    details.stock_on_hand = stock
    return products, await catalog.create(details)


async def test_fifty_use_cases_racing_on_ferretdb_reserve_exactly_the_stock(db: AsyncDatabase[Any]) -> None:
    products, p = await _product(db, "RACE", 10)
    keeper = _stock_keeper(db, products)
    orders = [samples.order_placed(lines=[samples.line_item(p.product_id, sku=p.sku)]) for _ in range(50)]
    results = await asyncio.gather(*(keeper.reserve(o, f"evt-{o.order_id}") for o in orders))
    assert sum(r.status is ReservationStatus.RESERVED for r in results) == 10
    stored = await products.get(p.product_id)
    assert stored is not None and (stored.stock_reserved, stored.stock_available) == (10, 0)
    # Every reservation settled before a resume round: no marker was written for any of them.
    assert await db["reservations_due_unfinished"].count_documents({}) == 0
    assert await keeper.resume_unfinished(older_than_s=0) == 0
    assert await db["reservations_due_unfinished"].count_documents({}) == 0


async def test_a_take_is_applied_once_per_marker_even_from_a_stale_copy(db: AsyncDatabase[Any]) -> None:
    products, p = await _product(db, "MARK", 5)
    first, stale = await products.get(p.product_id), await products.get(p.product_id)
    assert first is not None and stale is not None
    now = datetime.now(UTC)
    first.reserve(2, now)
    assert await products.save(first, [], marker="take-1", require_available=2) is True
    stale.reserve(2, now)
    assert await products.save(stale, [], marker="take-1", require_available=2) is False  # already applied
    fresh = await products.get(p.product_id)
    assert fresh is not None
    fresh.reserve(2, now)
    assert await products.save(fresh, [], marker="take-1") is False
    stored = await products.get(p.product_id)
    assert stored is not None and stored.stock_available == 3 and await products.was_applied(p.product_id, "take-1")


class _DiesAfterFirstSave(mongo.MongoProducts):
    died = False

    async def save(self, product: Product, events: Any, **kw: Any) -> bool:
        applied = await super().save(product, events, **kw)
        if not self.died:
            self.died = True
            raise ConnectionError("process died after the take, before the reservation noted it")
        return applied


async def test_a_reservation_interrupted_after_a_take_resumes_on_ferretdb(db: AsyncDatabase[Any]) -> None:
    _, a = await _product(db, "RES-A", 5)
    _, b = await _product(db, "RES-B", 5)
    dying = _DiesAfterFirstSave(DocumentStore(db["products"]))
    keeper = _stock_keeper(db, dying)
    placed = samples.order_placed(
        lines=[samples.line_item(a.product_id, sku=a.sku, quantity=2), samples.line_item(b.product_id, sku=b.sku)]
    )
    with pytest.raises(ConnectionError):
        await keeper.reserve(placed, "evt-1")
    result = await keeper.reserve(placed, "evt-1")  # the redelivery after the restart
    assert result.status is ReservationStatus.RESERVED
    after_a, after_b = await dying.get(a.product_id), await dying.get(b.product_id)
    assert after_a is not None and after_b is not None
    assert (after_a.stock_available, after_b.stock_available) == (3, 4)


async def test_an_interrupted_reservation_is_found_by_its_due_marker_and_finished_by_the_resume_job(
    db: AsyncDatabase[Any],
) -> None:
    _, a = await _product(db, "RESUME-A", 5)
    _, b = await _product(db, "RESUME-B", 5)
    dying = _DiesAfterFirstSave(DocumentStore(db["products"]))
    keeper = _stock_keeper(db, dying)
    placed = samples.order_placed(
        lines=[samples.line_item(a.product_id, sku=a.sku, quantity=2), samples.line_item(b.product_id, sku=b.sku)]
    )
    # Stored RESERVING (as the code before 2026-12-07 did, and `request` does), then interrupted: no
    # redelivery this time, only the resume job can finish it.
    await keeper.request(placed, "evt-1")
    with pytest.raises(ConnectionError):
        await keeper.advance(placed.order_id)
    # Its marker is owed, not written yet (a run that settles before the job's round writes none) ...
    assert await db["reservations_due_unfinished"].find_one({"_id": placed.order_id}) is None
    # ... and the process died with it: a restarted one finds the reservation by its start rebuild.
    keeper = _stock_keeper(db, dying)
    assert await keeper.resume_unfinished(older_than_s=30) == 0  # it may still be running somewhere
    assert await db["reservations_due_unfinished"].find_one({"_id": placed.order_id}) is not None
    later = datetime.now(UTC) + timedelta(seconds=60)
    keeper.clock = lambda: later
    assert await keeper.resume_unfinished(older_than_s=30) == 1
    reservation = await keeper.reservations.get(placed.order_id)
    assert reservation is not None and reservation.status is ReservationStatus.RESERVED
    after_a, after_b = await dying.get(a.product_id), await dying.get(b.product_id)
    assert after_a is not None and after_b is not None
    assert (after_a.stock_available, after_b.stock_available) == (3, 4)
    assert await keeper.resume_unfinished(older_than_s=30) == 0
    assert await db["reservations_due_unfinished"].find_one({"_id": placed.order_id}) is None  # marker dropped


class _CountingUpdates:
    """The products collection, counting update_one calls (the learner's interest writes)."""

    def __init__(self, collection: Any) -> None:
        self._collection = collection
        self.updates = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._collection, name)

    async def update_one(self, *args: Any, **kw: Any) -> Any:
        self.updates += 1
        return await self._collection.update_one(*args, **kw)


async def test_purchases_of_one_product_are_counted_once_each_in_a_few_writes(db: AsyncDatabase[Any]) -> None:
    # Every order used to write its product's purchase count alone (one write per order and product).
    products, p = await _product(db, "HOT", 5)
    counting = _CountingUpdates(products.collection)
    products.collection = counting  # type: ignore[assignment]
    events = [f"evt-{n}" for n in range(30)]
    await asyncio.gather(
        *(products.record_interest(p.product_id, views=0, purchases=1, event_id=e) for e in events),
        products.record_interest(p.product_id, views=0, purchases=1, event_id=events[0]),  # redelivered meanwhile
    )
    assert counting.updates <= 10, counting.updates
    # A later batch holding one id counted before counts only the others.
    await asyncio.gather(
        products.record_interest(p.product_id, views=1, purchases=0, event_id="view-1"),
        products.record_interest(p.product_id, views=0, purchases=1, event_id=events[5]),
    )
    await products.record_interest(p.product_id, views=0, purchases=1, event_id=events[7])  # alone, again
    doc = await db["products"].find_one({"_id": p.product_id})
    assert doc is not None
    assert (doc["purchases"], doc["views"], doc["popularity"]) == (30, 1, 301)
    assert set(events) | {"view-1"} <= set(doc["interest_seen"])
