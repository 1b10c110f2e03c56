"""The catalog's state in MongoDB (FerretDB v1 locally): products and reservations through the kit's
DocumentStore (state + outbox in one write), the rest in plain collections with idempotent updates.

Only operations FerretDB v1 supports are used. Notable: `$push` with `$slice` is accepted by FerretDB
but does not trim, so the lists of event ids that make counters idempotent are trimmed explicitly
(`_bound_seen`) once they are twice as long as they should be.
"""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
import re
import zlib
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from pymongo import ASCENDING, DESCENDING
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError

from kasse_catalog.application.ports import AlreadyExists, RelationKind
from kasse_catalog.domain.product import Image, Product, popularity_score
from kasse_catalog.domain.reservation import Reservation, ReservationLine, ReservationStatus, Shortfall
from kasse_catalog.domain.review import Purchase, Review, ReviewSort, ReviewStatus
from kasse_catalog.domain.search import SearchCriteria, SortOrder, relevance, stem
from kasse_common.due import DueWork
from kasse_common.envelope import OutgoingRecord
from kasse_common.errors import ConcurrencyError
from kasse_common.persistence import HEAVY_FIELDS_EXCLUDED, CommitOutcome, DocumentStore
from kasse_contracts.base import Money
from kasse_contracts.events.common import TaxClass

SEEN_KEEP = 200  # event ids remembered per counter document (redeliveries come soon after)
INTEREST_PER_WRITE = 16  # views/purchases of one product counted in one write at most
TRIM_CHECK_EVERY = 16  # look at a list's length after about one write in this many (by event id)

_SORTS: dict[SortOrder, list[tuple[str, int]]] = {
    SortOrder.PRICE_ASC: [("price_amount", ASCENDING), ("sku", ASCENDING)],
    SortOrder.PRICE_DESC: [("price_amount", DESCENDING), ("sku", ASCENDING)],
    SortOrder.NEWEST: [("created_at", DESCENDING), ("sku", ASCENDING)],
    SortOrder.RATING: [("rating_average", DESCENDING), ("rating_count", DESCENDING), ("sku", ASCENDING)],
    SortOrder.POPULARITY: [("popularity", DESCENDING), ("sku", ASCENDING)],
    # Browsing without words: "relevance" falls back to popularity.
    SortOrder.RELEVANCE: [("popularity", DESCENDING), ("sku", ASCENDING)],
}


async def _bound_seen(collection: AsyncCollection[Any], doc_id: Any, field: str, event_id: str) -> None:
    """Keep the last SEEN_KEEP event ids; only FerretDB needs it ($slice trims on MongoDB). Checked
    after a sample of writes (by event id), so a list may briefly exceed twice SEEN_KEEP. An id pushed
    between the read and the write may be dropped: that only shortens the dedupe memory."""
    if zlib.crc32(event_id.encode()) % TRIM_CHECK_EVERY:
        return
    doc = await collection.find_one({"_id": doc_id, f"{field}.{2 * SEEN_KEEP}": {"$exists": True}}, {field: 1})
    if doc is not None:
        await collection.update_one({"_id": doc_id}, {"$set": {field: doc[field][-SEEN_KEEP:]}})


def _money(amount: int | None, currency: str | None) -> Money | None:
    return None if amount is None or currency is None else Money(amount=amount, currency=currency)


def product_state(p: Product) -> dict[str, Any]:
    """The versioned fields. Counters learned from events (views, purchases) are not among them."""
    return {
        "sku": p.sku,
        "slug": p.slug,
        "name": p.name,
        "description": p.description,
        "category": p.category,
        "price_amount": p.price.amount,
        "price_currency": p.price.currency,
        "compare_at_amount": p.compare_at_price.amount if p.compare_at_price else None,
        "compare_at_currency": p.compare_at_price.currency if p.compare_at_price else None,
        "images": [{"url": i.url, "alt": i.alt} for i in p.images],
        "attributes": dict(p.attributes),
        "stock_on_hand": p.stock_on_hand,
        "stock_reserved": p.stock_reserved,
        "stock_available": p.stock_available,
        "active": p.active,
        "tax_class": p.tax_class.value,
        "created_at": p.created_at,
        "updated_at": p.updated_at,
        "rating_sum": p.rating_sum,
        "rating_count": p.rating_count,
        "rating_average": p.rating_average,
    }


def product_from_doc(doc: dict[str, Any]) -> Product:
    price = _money(doc["price_amount"], doc["price_currency"])
    assert price is not None
    return Product(
        product_id=doc["_id"],
        sku=doc["sku"],
        slug=doc["slug"],
        name=doc["name"],
        description=doc["description"],
        category=doc["category"],
        price=price,
        compare_at_price=_money(doc.get("compare_at_amount"), doc.get("compare_at_currency")),
        images=[Image(i["url"], i["alt"]) for i in doc.get("images", [])],
        attributes=dict(doc.get("attributes") or {}),
        stock_on_hand=doc["stock_on_hand"],
        tax_class=TaxClass(doc.get("tax_class") or TaxClass.STANDARD),
        stock_reserved=doc["stock_reserved"],
        active=doc["active"],
        created_at=doc["created_at"],
        updated_at=doc["updated_at"],
        rating_sum=doc.get("rating_sum", 0),
        rating_count=doc.get("rating_count", 0),
        views=doc.get("views", 0),
        purchases=doc.get("purchases", 0),
        version=doc.get("_version"),
    )


_LIGHT = {**HEAVY_FIELDS_EXCLUDED, "interest_seen": 0}


class MongoProducts:
    def __init__(self, store: DocumentStore, *, candidate_limit: int = 2000) -> None:
        self.store = store
        self.collection: AsyncCollection[Any] = store.collection
        self.candidate_limit = candidate_limit
        # record_interest: counts waiting per product, and the task writing each product's counts.
        self._interest: dict[str, list[tuple[str, int, int, asyncio.Future[None]]]] = {}
        self._interest_writers: dict[str, asyncio.Task[None]] = {}

    async def ensure_indexes(self) -> None:
        await self.collection.create_index([("sku", ASCENDING)], unique=True, name="sku_unique")
        await self.collection.create_index([("slug", ASCENDING)], unique=True, name="slug_unique")
        await self.collection.create_index([("category", ASCENDING), ("popularity", DESCENDING)], name="category_pop")

    async def get(self, product_id: str) -> Product | None:
        doc = await self.collection.find_one({"_id": product_id}, _LIGHT)
        return product_from_doc(doc) if doc else None

    async def get_by_sku(self, sku: str) -> Product | None:
        doc = await self.collection.find_one({"sku": sku}, _LIGHT)
        return product_from_doc(doc) if doc else None

    async def get_by_slug(self, slug: str) -> Product | None:
        doc = await self.collection.find_one({"slug": slug}, _LIGHT)
        return product_from_doc(doc) if doc else None

    async def get_many(self, product_ids: Sequence[str]) -> list[Product]:
        if not product_ids:
            return []
        docs = await self.collection.find({"_id": {"$in": list(product_ids)}}, _LIGHT).to_list()
        by_id = {d["_id"]: product_from_doc(d) for d in docs}
        return [by_id[pid] for pid in product_ids if pid in by_id]

    async def get_by_skus(self, skus: Sequence[str]) -> dict[str, Product]:
        return await self._by("sku", skus)

    async def get_by_slugs(self, slugs: Sequence[str]) -> dict[str, Product]:
        return await self._by("slug", slugs)

    async def _by(self, field: str, values: Sequence[str]) -> dict[str, Product]:
        if not values:
            return {}
        docs = await self.collection.find({field: {"$in": sorted(set(values))}}, _LIGHT).to_list()
        return {d[field]: product_from_doc(d) for d in docs}

    async def add(self, product: Product, events: Sequence[OutgoingRecord]) -> None:
        state = {**product_state(product), "views": 0, "purchases": 0, "popularity": 0}
        try:
            await self.store.commit(product.product_id, expected_version=None, state=state, events=events)
        except ConcurrencyError as exc:
            raise AlreadyExists(str(exc)) from None

    async def save(
        self,
        product: Product,
        events: Sequence[OutgoingRecord],
        *,
        marker: str | None = None,
        require_available: int | None = None,
        markers: Sequence[str] = (),
    ) -> bool:
        if product.version is None:
            raise ValueError("save() is for stored products; use add()")
        guard = {"stock_available": {"$gte": require_available}} if require_available is not None else None
        try:
            outcome = await self.store.commit(
                product.product_id,
                expected_version=product.version,
                state=product_state(product),
                events=events,
                consumed_event_id=marker,
                consumed_event_ids=markers,
                extra_filter=guard,
            )
        except DuplicateKeyError as exc:  # the new slug is taken
            raise AlreadyExists(str(exc)) from None
        return outcome is CommitOutcome.APPLIED

    async def was_applied(self, product_id: str, marker: str) -> bool:
        return bool(await self.store.was_processed(product_id, marker))

    def _filter(self, c: SearchCriteria) -> dict[str, Any]:
        query: dict[str, Any] = {"active": True}
        if c.category:
            query["category"] = c.category
        price: dict[str, int] = {}
        if c.min_price is not None:
            price["$gte"] = c.min_price
        if c.max_price is not None:
            price["$lte"] = c.max_price
        if price:
            query["price_amount"] = price
        if c.in_stock:
            query["stock_available"] = {"$gt": 0}
        if c.min_rating is not None:
            query["rating_average"] = {"$gte": c.min_rating}
        tokens = c.tokens
        if tokens:
            # Every word must appear in the name or the description (case-insensitive, escaped).
            query["$and"] = [
                {
                    "$or": [
                        {"name": {"$regex": re.escape(stem(t)), "$options": "i"}},
                        {"description": {"$regex": re.escape(stem(t)), "$options": "i"}},
                    ]
                }
                for t in tokens
            ]
        return query

    async def search(self, criteria: SearchCriteria) -> tuple[list[Product], int]:
        query = self._filter(criteria)
        tokens = criteria.tokens
        if criteria.sort is SortOrder.RELEVANCE and tokens:
            docs = await self.collection.find(query, _LIGHT).limit(self.candidate_limit).to_list()
            scored = sorted(
                (product_from_doc(d) for d in docs),
                key=lambda p: (-relevance(tokens, p.name, p.description), -p.popularity, p.sku),
            )
            return scored[criteria.offset : criteria.offset + criteria.page_size], len(scored)
        cursor = (
            self.collection.find(query, _LIGHT)
            .sort(_SORTS[criteria.sort])
            .skip(criteria.offset)
            .limit(criteria.page_size)
        )
        items = [product_from_doc(d) for d in await cursor.to_list()]
        if 0 < len(items) < criteria.page_size or (not items and criteria.offset == 0):
            # A short page is the last one: the total is known without another scan (FerretDB scans).
            return items, criteria.offset + len(items)
        return items, await self.collection.count_documents(query)

    async def popular(self, *, category: str | None, exclude: set[str], limit: int) -> list[Product]:
        if limit <= 0:
            return []
        query: dict[str, Any] = {"active": True}
        if category:
            query["category"] = category
        if exclude:
            query["_id"] = {"$nin": sorted(exclude)}
        cursor = self.collection.find(query, _LIGHT).sort(_SORTS[SortOrder.POPULARITY]).limit(limit)
        return [product_from_doc(d) for d in await cursor.to_list()]

    async def categories(self) -> list[tuple[str, int]]:
        pipeline: list[dict[str, Any]] = [
            {"$match": {"active": True}},
            {"$group": {"_id": "$category", "products": {"$sum": 1}}},
            {"$sort": {"_id": ASCENDING}},
        ]
        return [(d["_id"], d["products"]) for d in await (await self.collection.aggregate(pipeline)).to_list()]

    async def record_interest(self, product_id: str, *, views: int, purchases: int, event_id: str) -> None:
        """Count a view or purchase once per event id. Counts of one product that arrive while its previous
        count is being written go together in the next write (up to INTEREST_PER_WRITE): in the 100-order
        bench every order wrote its product's purchase count alone, one of catalog's ~6 writes per order
        on FerretDB's one writer per database (issue 12)."""
        waiting = self._interest.setdefault(product_id, [])
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiting.append((event_id, views, purchases, done))
        if product_id not in self._interest_writers:
            self._interest_writers[product_id] = asyncio.create_task(
                self._write_interest(product_id), name=f"interest-{product_id}", context=contextvars.Context()
            )
        await done

    async def _write_interest(self, product_id: str) -> None:
        waiting = self._interest[product_id]
        try:
            while waiting:
                batch = [w for w in waiting[:INTEREST_PER_WRITE] if not w[3].done()]
                del waiting[:INTEREST_PER_WRITE]
                if not batch:
                    continue
                try:
                    await self._count_interest(product_id, batch)
                except Exception as exc:  # every count of the batch fails alike; their handlers retry
                    for *_, done in batch:
                        if not done.done():
                            done.set_exception(exc)
                    continue
                for *_, done in batch:
                    if not done.done():
                        done.set_result(None)
        finally:
            self._interest_writers.pop(product_id, None)
            for *_, done in waiting:
                if not done.done():
                    done.cancel()
            self._interest.pop(product_id, None)

    async def _count_interest(self, product_id: str, batch: list[tuple[str, int, int, asyncio.Future[None]]]) -> None:
        counts: dict[str, tuple[int, int]] = {}
        for event_id, views, purchases, _ in batch:
            counts.setdefault(event_id, (views, purchases))  # the same event twice: counted once
        for _ in range(3):
            ids = list(counts)
            views, purchases = sum(v for v, _ in counts.values()), sum(p for _, p in counts.values())
            result = await self.collection.update_one(
                {"_id": product_id, "interest_seen": {"$nin": ids}},
                {
                    "$inc": {"views": views, "purchases": purchases, "popularity": popularity_score(views, purchases)},
                    "$push": {"interest_seen": {"$each": ids, "$slice": -SEEN_KEEP}},
                },
            )
            if result.modified_count:
                for event_id in ids:
                    await _bound_seen(self.collection, product_id, "interest_seen", event_id)
                return
            # Some were counted before (a redelivery), or there is no such product: count the others.
            doc = await self.collection.find_one({"_id": product_id}, {"interest_seen": 1})
            if doc is None:
                return
            seen = set(doc.get("interest_seen") or ())
            counts = {e: c for e, c in counts.items() if e not in seen}
            if not counts:
                return
        raise ConcurrencyError(f"interest of {product_id} kept changing")


def _reservation_state(r: Reservation) -> dict[str, Any]:
    return {
        "session_id": r.session_id,
        "customer_id": r.customer_id,
        "status": r.status.value,
        "lines": [
            {"product_id": ln.product_id, "sku": ln.sku, "quantity": ln.quantity, "taken": ln.taken} for ln in r.lines
        ],
        "shortfalls": [
            {"product_id": s.product_id, "sku": s.sku, "requested": s.requested, "available": s.available}
            for s in r.shortfalls
        ],
        "release_reason": r.release_reason,
        "requested_at": r.requested_at,
    }


class MongoReservations:
    def __init__(self, store: DocumentStore) -> None:
        self.store = store
        # Reservations still being taken, for the resume job (reservations_due_unfinished): the job reads
        # these markers, not every order. Only the insert writes a RESERVING state. Its marker is owed, not
        # written: the job's round writes the markers owed before it reads (rounds every resume delay, and
        # it reads a marker only once it is older than that delay), and a reservation settled before the
        # round withdraws its marker, so most orders cost no marker write and no delete (in the 100-order
        # bench they were 1.4 of catalog's ~10 writes per order, issue 12). A process that dies with
        # markers owed is covered like a crash between a commit and its marker: the start rebuild, or the
        # survivors' rebuild when its outbox relay stops beating (kasse_common.due).
        self.unfinished = DueWork(
            store.collection,
            "unfinished",
            has_work={"status": ReservationStatus.RESERVING.value},
            at_field="requested_at",
            pending=lambda state: state.get("status") == ReservationStatus.RESERVING.value,
        )

    async def ensure_indexes(self) -> None:
        await self.unfinished.ensure_indexes()

    async def unfinished_since(self, before: datetime, limit: int) -> list[str]:
        job = {"status": ReservationStatus.RESERVING.value, "requested_at": {"$lte": before}}
        return [str(i) for i in await self.unfinished.due(before, limit, job)]

    async def get(self, order_id: str) -> Reservation | None:
        doc = await self.store.load(order_id)
        if doc is None:
            return None
        return Reservation(
            order_id=doc["_id"],
            session_id=doc["session_id"],
            customer_id=doc.get("customer_id"),
            lines=[ReservationLine(**line) for line in doc.get("lines", [])],
            status=ReservationStatus(doc["status"]),
            shortfalls=[Shortfall(**s) for s in doc.get("shortfalls", [])],
            release_reason=doc.get("release_reason"),
            requested_at=doc.get("requested_at"),
            version=doc["_version"],
        )

    async def add(self, reservation: Reservation, events: Sequence[OutgoingRecord] = ()) -> None:
        state = _reservation_state(reservation)
        self.unfinished.owe(reservation.order_id, state)  # before the insert: one that raised may have landed
        try:
            await self.store.commit(reservation.order_id, expected_version=None, state=state, events=events)
        except ConcurrencyError as exc:
            raise AlreadyExists(str(exc)) from None

    async def save(self, reservation: Reservation, events: Sequence[OutgoingRecord] = ()) -> None:
        state = _reservation_state(reservation)
        await self.store.commit(reservation.order_id, expected_version=reservation.version, state=state, events=events)
        if state["status"] != ReservationStatus.RESERVING.value:
            self.unfinished.withdraw(reservation.order_id)


_REVIEW_SORTS: dict[ReviewSort, list[tuple[str, int]]] = {
    ReviewSort.NEWEST: [("created_at", DESCENDING), ("_id", DESCENDING)],
    ReviewSort.HIGHEST_RATED: [("rating", DESCENDING), ("created_at", DESCENDING), ("_id", DESCENDING)],
    ReviewSort.LOWEST_RATED: [("rating", ASCENDING), ("created_at", DESCENDING), ("_id", DESCENDING)],
}


def _review_from_doc(doc: dict[str, Any]) -> Review:
    return Review(
        review_id=doc["_id"],
        product_id=doc["product_id"],
        rating=doc["rating"],
        title=doc["title"],
        text=doc["text"],
        author_name=doc["author_name"],
        verified_purchase=doc["verified_purchase"],
        created_at=doc["created_at"],
        customer_id=doc.get("customer_id"),
        session_id=doc.get("session_id"),
        status=ReviewStatus(doc["status"]),
    )


class MongoReviews:
    def __init__(self, collection: AsyncCollection[Any]) -> None:
        self.collection = collection
        # The interrupted-reviews job reads the pending reviews' markers (`reviews_due_pending`), then
        # each review by `_id`: never the whole review history (FerretDB v1 would scan it every round).
        self.pending = DueWork(
            collection,
            "pending",
            has_work={"status": ReviewStatus.PENDING.value},
            at_field="created_at",
            pending=lambda state: state.get("status") == ReviewStatus.PENDING.value,
        )

    async def ensure_indexes(self) -> None:
        await self.collection.create_index(
            [("product_id", ASCENDING), ("status", ASCENDING), ("created_at", DESCENDING)], name="by_product"
        )
        await self.pending.ensure_indexes()

    async def add(self, review: Review) -> None:
        doc = {
            "_id": review.review_id,
            "product_id": review.product_id,
            "rating": review.rating,
            "title": review.title,
            "text": review.text,
            "author_name": review.author_name,
            "verified_purchase": review.verified_purchase,
            "created_at": review.created_at,
            "customer_id": review.customer_id,
            "session_id": review.session_id,
            "status": review.status.value,
        }
        try:
            await self.collection.insert_one(doc)
        except Exception:
            self.pending.owe(review.review_id, doc)  # it may have landed: the job's next round looks
            raise
        await self.pending.track(review.review_id, doc)

    async def mark_published(self, review_id: str) -> None:
        await self.collection.update_one({"_id": review_id}, {"$set": {"status": ReviewStatus.PUBLISHED.value}})

    async def for_product(self, product_id: str, sort: ReviewSort, offset: int, limit: int) -> tuple[list[Review], int]:
        query = {"product_id": product_id, "status": ReviewStatus.PUBLISHED.value}
        total = await self.collection.count_documents(query)
        docs = await self.collection.find(query).sort(_REVIEW_SORTS[sort]).skip(offset).limit(limit).to_list()
        return [_review_from_doc(d) for d in docs], total

    async def pending_since(self, before: datetime, limit: int) -> list[Review]:
        query = {"status": ReviewStatus.PENDING.value, "created_at": {"$lt": before}}
        found = [await self.collection.find_one({"_id": i}) for i in await self.pending.due(before, limit, query)]
        return [_review_from_doc(d) for d in found if d is not None]


def _pair_id(kind: RelationKind, product_id: str, other_id: str) -> str:
    # Hashed: product ids from events are arbitrary strings, so no separator is safe.
    return hashlib.sha1(f"{kind.value}\x00{product_id}\x00{other_id}".encode()).hexdigest()


class MongoSignals:
    def __init__(self, relations: AsyncCollection[Any], sessions: AsyncCollection[Any]) -> None:
        self.relations = relations
        self.sessions = sessions

    async def ensure_indexes(self) -> None:
        await self.relations.create_index(
            [("kind", ASCENDING), ("product_id", ASCENDING), ("count", DESCENDING)], name="related"
        )

    async def increment_pair(self, kind: RelationKind, product_id: str, other_id: str, event_id: str) -> None:
        pair_id = _pair_id(kind, product_id, other_id)
        try:
            # The filter misses when this event was counted already; the upsert then collides with
            # the existing document, which is exactly "already applied".
            await self.relations.update_one(
                {"_id": pair_id, "seen": {"$ne": event_id}},
                {
                    "$inc": {"count": 1},
                    "$set": {"kind": kind.value, "product_id": product_id, "other_id": other_id},
                    "$push": {"seen": {"$each": [event_id], "$slice": -SEEN_KEEP}},
                },
                upsert=True,
            )
        except DuplicateKeyError:
            return
        await _bound_seen(self.relations, pair_id, "seen", event_id)

    async def related(self, kind: RelationKind, product_id: str, limit: int) -> list[tuple[str, int]]:
        cursor = (
            self.relations.find({"kind": kind.value, "product_id": product_id}, {"other_id": 1, "count": 1})
            .sort([("count", DESCENDING), ("other_id", ASCENDING)])
            .limit(limit)
        )
        return [(d["other_id"], d["count"]) for d in await cursor.to_list()]

    async def recent_views(self, session_id: str) -> list[str]:
        doc = await self.sessions.find_one({"_id": session_id}, {"recent": 1})
        return list(doc["recent"]) if doc else []

    async def record_view(self, session_id: str, product_id: str, event_id: str, keep: int) -> None:
        for _ in range(20):
            doc = await self.sessions.find_one({"_id": session_id})
            if doc is None:
                try:
                    await self.sessions.insert_one(
                        {"_id": session_id, "recent": [product_id], "seen": [event_id], "rev": 1}
                    )
                    return
                except DuplicateKeyError:
                    continue
            if event_id in doc.get("seen", []):
                return
            recent = [product_id] + [p for p in doc.get("recent", []) if p != product_id]
            seen = [*doc.get("seen", []), event_id][-SEEN_KEEP:]
            result = await self.sessions.update_one(
                {"_id": session_id, "rev": doc["rev"]},
                {"$set": {"recent": recent[:keep], "seen": seen, "rev": doc["rev"] + 1}},
            )
            if result.matched_count == 1:
                return
        raise ConcurrencyError(f"session {session_id} kept changing")


class MongoPurchaseLedger:
    def __init__(self, collection: AsyncCollection[Any]) -> None:
        self.collection = collection

    async def ensure_indexes(self) -> None:
        await self.collection.create_index([("product_ids", ASCENDING)], name="by_product")

    async def record_order(
        self,
        order_id: str,
        customer_id: str | None,
        session_id: str,
        product_ids: Sequence[str],
        order_token_sha256: str | None = None,
    ) -> None:
        fields = {
            "customer_id": customer_id,
            "session_id": session_id,
            "product_ids": list(product_ids),
            "order_token_sha256": order_token_sha256,
        }
        await self.collection.update_one({"_id": order_id}, {"$set": fields}, upsert=True)

    async def mark_delivered(self, order_id: str, delivered_at: datetime) -> None:
        # May come before the order is known here (another topic): upsert, the order fills the rest.
        await self.collection.update_one(
            {"_id": order_id}, {"$set": {"delivered": True, "delivered_at": delivered_at}}, upsert=True
        )

    async def delivered_order_with(self, product_id: str, customer_id: str) -> str | None:
        doc = await self.collection.find_one(
            {"product_ids": product_id, "delivered": True, "customer_id": customer_id}, {"_id": 1}
        )
        return doc["_id"] if doc else None

    async def purchase(self, order_id: str) -> Purchase | None:
        doc = await self.collection.find_one({"_id": order_id})  # exactly {_id}: FerretDB's fast path
        if doc is None:
            return None
        return Purchase(
            order_id=order_id,
            product_ids=list(doc.get("product_ids") or []),
            delivered=bool(doc.get("delivered")),
            order_token_sha256=doc.get("order_token_sha256"),
        )
