"""Repositories on the kit's DocumentStore (state + outbox in one write) and plain collections."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from pymongo import ASCENDING, DESCENDING
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError

from kasse_cart.adapters.documents import (
    cart_from_doc,
    cart_to_doc,
    coupon_from_doc,
    coupon_to_doc,
    order_from_doc,
    order_to_doc,
    product_from_doc,
    product_to_doc,
    rate_table_from_doc,
    rate_table_to_doc,
)
from kasse_cart.domain.cart import Cart, CartStatus, ProductInfo
from kasse_cart.domain.order import Order, OrderStatus
from kasse_cart.domain.promotions import Coupon
from kasse_cart.domain.shipping import RateTable
from kasse_common.due import DueWork
from kasse_common.envelope import OutgoingRecord
from kasse_common.errors import ConcurrencyError, Conflict
from kasse_common.persistence import HEAVY_FIELDS_EXCLUDED, CommitOutcome, DocumentStore

_LISTED = HEAVY_FIELDS_EXCLUDED


_ABANDONABLE = {"status": CartStatus.OPEN.value, "item_count": {"$gt": 0}, "abandoned_at": None}
_UNPAID = {"status": {"$in": [OrderStatus.PLACED.value, OrderStatus.STOCK_RESERVED.value]}}


class MongoCartRepository:
    def __init__(self, store: DocumentStore) -> None:
        self.store = store
        # Open carts with items, apart from every cart ever made (the abandonment job's candidates).
        self.abandonable = DueWork(  # the store marks each commit that leaves work
            store,
            "abandon",
            has_work=_ABANDONABLE,
            at_field="last_activity_at",
            pending=lambda s: (
                s.get("status") == CartStatus.OPEN.value
                and (s.get("item_count") or 0) > 0
                and s.get("abandoned_at") is None
            ),
        )

    async def ensure_indexes(self) -> None:
        await self.abandonable.ensure_indexes()
        await self.store.collection.create_index([("lines.product_id", ASCENDING)], name="by_product")
        await self.store.collection.create_index(
            [("status", ASCENDING), ("last_activity_at", ASCENDING)], name="by_activity"
        )

    async def get(self, cart_id: str) -> Cart | None:
        doc = await self.store.load(cart_id)
        return cart_from_doc(doc) if doc else None

    async def add(self, cart: Cart, events: Sequence[OutgoingRecord]) -> None:
        state = cart_to_doc(cart)
        await self.store.commit(cart.cart_id, expected_version=None, state=state, events=events)
        cart.version = 1

    async def save(self, cart: Cart, events: Sequence[OutgoingRecord], *, consumed_event_id: str | None = None) -> bool:
        state = cart_to_doc(cart)
        applied = await _commit_at_version(self.store, cart.cart_id, cart.version, state, events, consumed_event_id)
        cart.version += int(applied)
        return applied

    async def ids_with_product(self, product_id: str) -> list[str]:
        cursor = self.store.collection.find(
            {"status": CartStatus.OPEN.value, "lines.product_id": product_id}, {"_id": 1}
        )
        return [doc["_id"] async for doc in cursor]

    async def idle_since(self, cutoff: datetime, limit: int) -> list[Cart]:
        ids = await self.abandonable.due(cutoff, limit, {**_ABANDONABLE, "last_activity_at": {"$lt": cutoff}})
        carts = [await self.get(cart_id) for cart_id in ids]
        return [c for c in carts if c is not None]


class MongoOrderRepository:
    def __init__(self, store: DocumentStore) -> None:
        self.store = store
        # Orders still waiting for payment, apart from every order ever placed (the deadline job's).
        self.unpaid = DueWork(  # the store marks each commit that leaves work
            store,
            "payment",
            has_work=_UNPAID,
            at_field="payment_due_at",
            pending=lambda s: s.get("status") in _UNPAID["status"]["$in"],
        )

    async def ensure_indexes(self) -> None:
        coll = self.store.collection
        await self.unpaid.ensure_indexes()
        await coll.create_index([("status", ASCENDING), ("placed_at", DESCENDING)], name="by_status")
        await coll.create_index([("email", ASCENDING)], name="by_email")
        await coll.create_index([("placed_at", DESCENDING)], name="by_time")
        await coll.create_index([("status", ASCENDING), ("payment_due_at", ASCENDING)], name="by_payment_deadline")

    async def get(self, order_id: str) -> Order | None:
        doc = await self.store.load(order_id)
        return order_from_doc(doc) if doc else None

    async def add(self, order: Order, events: Sequence[OutgoingRecord]) -> bool:
        state = order_to_doc(order)
        try:
            await self.store.commit(order.order_id, expected_version=None, state=state, events=events)
        except ConcurrencyError:
            return False
        order.version = 1
        return True

    async def save(
        self, order: Order, events: Sequence[OutgoingRecord], *, consumed_event_id: str | None = None
    ) -> bool:
        state = order_to_doc(order)
        applied = await _commit_at_version(self.store, order.order_id, order.version, state, events, consumed_event_id)
        order.version += int(applied)
        return applied

    async def search(
        self, *, status: OrderStatus | None, email: str | None, text: str | None, limit: int, offset: int
    ) -> list[Order]:
        query: dict[str, Any] = {}
        if status is not None:
            query["status"] = status.value
        if email:
            query["email"] = {"$regex": f"^{re.escape(email.strip())}$", "$options": "i"}
        if text:
            pattern = {"$regex": re.escape(text.strip()), "$options": "i"}
            query["$or"] = [{"_id": pattern}, {"email": pattern}, {"cart_id": pattern}]
        cursor = (
            self.store.collection.find(query, _LISTED)
            .sort([("placed_at", DESCENDING), ("_id", ASCENDING)])
            .skip(offset)
            .limit(limit)
        )
        return [order_from_doc(doc) async for doc in cursor]

    async def unpaid_past_deadline(self, now: datetime, limit: int) -> list[Order]:
        ids = await self.unpaid.due(now, limit, {**_UNPAID, "payment_due_at": {"$lte": now}})
        orders = [await self.get(order_id) for order_id in ids]
        return [o for o in orders if o is not None]


class MongoProductReadModel:
    def __init__(self, collection: AsyncCollection[Any]) -> None:
        self.collection = collection

    async def get(self, product_id: str) -> ProductInfo | None:
        doc = await self.collection.find_one({"_id": product_id})
        return product_from_doc(doc) if doc else None

    async def upsert(self, product: ProductInfo) -> bool:
        return await _keep_newest(self.collection, product.product_id, product.revision, product_to_doc(product))


class MongoRateTableReadModel:
    def __init__(self, collection: AsyncCollection[Any], table_id: str = "default") -> None:
        self.collection = collection
        self.table_id = table_id

    async def current(self) -> RateTable | None:
        doc = await self.collection.find_one({"_id": self.table_id})
        return rate_table_from_doc(doc) if doc else None

    async def upsert(self, rate_table_id: str, table: RateTable) -> bool:
        return await _keep_newest(self.collection, rate_table_id, table.revision, rate_table_to_doc(table))


async def _keep_newest(collection: AsyncCollection[Any], doc_id: str, revision: int, doc: dict[str, Any]) -> bool:
    """Replace the document only with a higher revision: late or repeated events change nothing."""
    result = await collection.update_one({"_id": doc_id, "revision": {"$lt": revision}}, {"$set": doc})
    if result.matched_count:
        return True
    try:
        await collection.insert_one({"_id": doc_id, **doc})
    except DuplicateKeyError:
        return False  # the stored revision is as new or newer
    return True


def _customer_hash(customer_key: str | None) -> str | None:
    # Hashed: an e-mail address is no field name (dots), and the coupon need not hold it.
    return hashlib.sha256(customer_key.encode()).hexdigest()[:32] if customer_key else None


class MongoCouponRepository:
    def __init__(self, collection: AsyncCollection[Any]) -> None:
        self.collection = collection

    async def get(self, code: str, customer_key: str | None = None) -> Coupon | None:
        doc = await self.collection.find_one({"_id": code}, {"redemptions": 0})
        return coupon_from_doc(doc, _customer_hash(customer_key)) if doc else None

    async def add(self, coupon: Coupon) -> None:
        try:
            await self.collection.insert_one({"_id": coupon.code, **coupon_to_doc(coupon)})
        except DuplicateKeyError:
            raise Conflict(f"coupon {coupon.code} exists already") from None

    async def all(self) -> list[Coupon]:
        cursor = self.collection.find({}, {"redemptions": 0}).sort([("_id", ASCENDING)])
        return [coupon_from_doc(doc, None) async for doc in cursor]

    async def redeem(self, coupon: Coupon, order_id: str, customer_key: str | None) -> bool:
        redeemed = f"redemptions.{order_id}"
        query: dict[str, Any] = {"_id": coupon.code, redeemed: {"$exists": False}}
        inc: dict[str, int] = {"used": 1}
        if coupon.usage_limit is not None:
            query["used"] = {"$lt": coupon.usage_limit}
        who = _customer_hash(customer_key)
        if who is not None:
            inc[f"per_customer.{who}"] = 1
            if coupon.per_customer_limit is not None:
                query[f"per_customer.{who}"] = {"$not": {"$gte": coupon.per_customer_limit}}
        result = await self.collection.update_one(query, {"$inc": inc, "$set": {redeemed: datetime.now(UTC)}})
        if result.matched_count:
            return True
        # Counted already for this very order (a retried place-order) is a success too.
        return await self.collection.find_one({"_id": coupon.code, redeemed: {"$exists": True}}, {"_id": 1}) is not None


async def _commit_at_version(
    store: DocumentStore,
    doc_id: str,
    version: int,
    state: dict[str, Any],
    events: Sequence[OutgoingRecord],
    consumed_event_id: str | None,
) -> bool:
    """Commit at the loaded version; False when the consumed event was applied before (a redelivery)."""
    outcome = await store.commit(
        doc_id, expected_version=version, state=state, events=events, consumed_event_id=consumed_event_id
    )
    return outcome is not CommitOutcome.DUPLICATE
