"""The interrupted-reviews job on the real FerretDB: it finishes every review left pending — also one
stored without its marker (the process died between the two writes) — and reads reviews only by
`_id`, never the review history (FerretDB v1 would scan the whole collection every 30 s)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import pytest
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from kasse_catalog.adapters import mongo
from kasse_catalog.application.products import ProductCatalog
from kasse_catalog.application.reviews import ReviewDraft, Reviews
from kasse_catalog.domain.product import Product, ProductDetails
from kasse_catalog.domain.review import ReviewStatus
from kasse_common.envelope import encode
from kasse_common.mongo import StoreCommands
from kasse_common.persistence import DocumentStore
from kasse_contracts.base import Money
from kasse_testkit import Namespace
from kasse_testkit.infrastructure import Infrastructure

pytestmark = pytest.mark.integration


@pytest.fixture
async def commands() -> StoreCommands:
    return StoreCommands()


@pytest.fixture
async def db(
    kasse_infra: Infrastructure, namespace: Namespace, commands: StoreCommands
) -> AsyncIterator[AsyncDatabase[Any]]:
    client: AsyncMongoClient[Any] = AsyncMongoClient(kasse_infra.mongo_uri, tz_aware=True, event_listeners=[commands])
    try:
        yield client[namespace.database("catalog")]
    finally:
        await client.close()


class _DiesBeforeCounting(mongo.MongoProducts):
    """The process dies after the review is stored, before the product's rating counts it."""

    async def save(self, product: Product, events: Any, **kw: Any) -> bool:
        raise ConnectionError("process died")


def _reviews(db: AsyncDatabase[Any], products: mongo.MongoProducts) -> tuple[Reviews, mongo.MongoReviews]:
    repo = mongo.MongoReviews(db["reviews"])  # a process: its DueWork rebuilds at its first round
    ledger = mongo.MongoPurchaseLedger(db["purchases"])
    return Reviews(products, repo, ledger, partial(encode, service="catalog"), lambda: datetime.now(UTC)), repo


async def test_every_interrupted_review_is_finished_reading_reviews_by_id_only(
    db: AsyncDatabase[Any], commands: StoreCommands
) -> None:
    products = mongo.MongoProducts(DocumentStore(db["products"]))
    details = ProductDetails(
        sku="REV", name="REV", description="", category="c", price=Money(amount=100, currency="EUR")
    )
    product = await ProductCatalog(products, partial(encode, service="catalog"), lambda: datetime.now(UTC)).create(
        details
    )
    long_ago = datetime.now(UTC) - timedelta(days=30)
    # The history: published reviews, which the job must never read.
    await db["reviews"].insert_many(
        [
            {"_id": f"rev_old{i}", "product_id": product.product_id, "rating": 4, "title": "t", "text": "x"}
            | {"author_name": "a", "verified_purchase": False, "created_at": long_ago, "status": "published"}
            for i in range(60)
        ]
    )
    dying, _ = _reviews(db, _DiesBeforeCounting(DocumentStore(db["products"])))
    with pytest.raises(ConnectionError):
        await dying.submit(
            product.product_id, ReviewDraft(2, "Meh", "Stored, not counted.", "Al"), customer_id=None, session_id=None
        )
    # Stored without its marker: the process died between the review's write and the marker's.
    await db["reviews"].insert_one(
        {"_id": "rev_unmarked", "product_id": product.product_id, "rating": 5, "title": "Top", "text": "!"}
        | {"author_name": "Bo", "verified_purchase": False, "created_at": long_ago, "status": "pending"}
    )

    reviews, repo = _reviews(db, products)  # the restarted process
    assert await reviews.finish_pending(timedelta(seconds=-1)) == 2
    counted = await products.get(product.product_id)
    assert counted is not None and (counted.rating_count, counted.rating_average) == (2, 3.5)
    assert await db["reviews"].count_documents({"status": ReviewStatus.PENDING.value}) == 0

    # A later round: both markers go (their reviews are published), and nothing is counted twice.
    before = commands.snapshot()
    assert await reviews.finish_pending(timedelta(seconds=-1)) == 0
    assert await repo.pending.size() == 0
    counted = await products.get(product.product_id)
    assert counted is not None and counted.rating_count == 2
    # ...reading the reviews by `_id` only (the markers' collection is the only other read).
    reads = {
        key
        for key, totals in commands.snapshot().items()
        if key[0] in ("find", "aggregate") and totals.count > before.get(key, type(totals)()).count
    }
    assert {(c, shape) for c, coll, shape in reads if coll == "reviews" and "_id" not in shape} == set()
    assert any(coll == "reviews_due_pending" for _, coll, _ in reads)
