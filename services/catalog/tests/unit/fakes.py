"""In-memory adapters for unit tests: the same contracts as the Mongo ones, events kept in lists.

Each await yields to the event loop first, so concurrent use cases interleave as they would
against a database."""

from __future__ import annotations

import asyncio
import copy
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime

from kasse_catalog.application.ports import AlreadyExists, RelationKind
from kasse_catalog.domain.product import Product, popularity_score
from kasse_catalog.domain.reservation import Reservation
from kasse_catalog.domain.review import Purchase, Review, ReviewSort, ReviewStatus
from kasse_catalog.domain.search import SearchCriteria, SortOrder, relevance, stem
from kasse_common.envelope import OutgoingRecord
from kasse_common.errors import ConcurrencyError


async def _hop() -> None:
    await asyncio.sleep(0)


class MemoryProducts:
    def __init__(self) -> None:
        self.docs: dict[str, Product] = {}
        self.markers: dict[str, set[str]] = defaultdict(set)
        self.outbox: list[OutgoingRecord] = []
        self.interest_seen: dict[str, set[str]] = defaultdict(set)
        self.saves = 0  # product writes that landed (tests count round trips)

    def _copy(self, p: Product | None) -> Product | None:
        return p.copy() if p else None

    async def get(self, product_id: str) -> Product | None:
        await _hop()
        return self._copy(self.docs.get(product_id))

    async def get_by_sku(self, sku: str) -> Product | None:
        await _hop()
        return self._copy(next((p for p in self.docs.values() if p.sku == sku), None))

    async def get_by_slug(self, slug: str) -> Product | None:
        await _hop()
        return self._copy(next((p for p in self.docs.values() if p.slug == slug), None))

    async def get_many(self, product_ids: Sequence[str]) -> list[Product]:
        await _hop()
        return [p.copy() for pid in product_ids if (p := self.docs.get(pid))]

    async def get_by_skus(self, skus: Sequence[str]) -> dict[str, Product]:
        await _hop()
        return {p.sku: p.copy() for p in self.docs.values() if p.sku in skus}

    async def get_by_slugs(self, slugs: Sequence[str]) -> dict[str, Product]:
        await _hop()
        return {p.slug: p.copy() for p in self.docs.values() if p.slug in slugs}

    async def add(self, product: Product, events: Sequence[OutgoingRecord]) -> None:
        await _hop()
        if product.product_id in self.docs or any(
            p.sku == product.sku or p.slug == product.slug for p in self.docs.values()
        ):
            raise AlreadyExists(product.product_id)
        stored = product.copy()
        stored.version = 1
        self.docs[product.product_id] = stored
        self.outbox.extend(events)

    async def save(
        self,
        product: Product,
        events: Sequence[OutgoingRecord],
        *,
        marker: str | None = None,
        require_available: int | None = None,
        markers: Sequence[str] = (),
    ) -> bool:
        await _hop()
        current = self.docs.get(product.product_id)
        remembered = [*([marker] if marker else []), *markers]
        if any(m in self.markers[product.product_id] for m in remembered):
            return False
        if current is None or current.version != product.version:
            raise ConcurrencyError(product.product_id)
        if require_available is not None and current.stock_available < require_available:
            raise ConcurrencyError(product.product_id)
        stored = product.copy()
        stored.version = (product.version or 0) + 1
        stored.views, stored.purchases = current.views, current.purchases
        self.docs[product.product_id] = stored
        self.markers[product.product_id].update(remembered)
        self.outbox.extend(events)
        self.saves += 1
        return True

    async def was_applied(self, product_id: str, marker: str) -> bool:
        await _hop()
        return marker in self.markers[product_id]

    async def search(self, criteria: SearchCriteria) -> tuple[list[Product], int]:
        await _hop()
        tokens = criteria.tokens
        found = [
            p
            for p in self.docs.values()
            if p.active
            and (criteria.category is None or p.category == criteria.category)
            and (criteria.min_price is None or p.price.amount >= criteria.min_price)
            and (criteria.max_price is None or p.price.amount <= criteria.max_price)
            and (not criteria.in_stock or p.stock_available > 0)
            and (criteria.min_rating is None or p.rating_average >= criteria.min_rating)
            and all(stem(t) in p.name.lower() or stem(t) in p.description.lower() for t in tokens)
        ]
        keys = {
            SortOrder.PRICE_ASC: lambda p: (p.price.amount, p.sku),
            SortOrder.PRICE_DESC: lambda p: (-p.price.amount, p.sku),
            SortOrder.NEWEST: lambda p: (-p.created_at.timestamp(), p.sku),
            SortOrder.RATING: lambda p: (-p.rating_average, -p.rating_count, p.sku),
            SortOrder.POPULARITY: lambda p: (-p.popularity, p.sku),
            SortOrder.RELEVANCE: (
                (lambda p: (-relevance(tokens, p.name, p.description), -p.popularity, p.sku))
                if tokens
                else (lambda p: (-p.popularity, p.sku))
            ),
        }
        found.sort(key=keys[criteria.sort])
        return [p.copy() for p in found[criteria.offset : criteria.offset + criteria.page_size]], len(found)

    async def popular(self, *, category: str | None, exclude: set[str], limit: int) -> list[Product]:
        await _hop()
        found = [
            p
            for p in self.docs.values()
            if p.active and p.product_id not in exclude and (category is None or p.category == category)
        ]
        found.sort(key=lambda p: (-p.popularity, p.sku))
        return [p.copy() for p in found[:limit]]

    async def categories(self) -> list[tuple[str, int]]:
        await _hop()
        counts: dict[str, int] = defaultdict(int)
        for p in self.docs.values():
            if p.active:
                counts[p.category] += 1
        return sorted(counts.items())

    async def record_interest(self, product_id: str, *, views: int, purchases: int, event_id: str) -> None:
        await _hop()
        product = self.docs.get(product_id)
        if product is None or event_id in self.interest_seen[product_id]:
            return
        self.interest_seen[product_id].add(event_id)
        product.views += views
        product.purchases += purchases
        assert product.popularity == popularity_score(product.views, product.purchases)


class MemoryReservations:
    def __init__(self) -> None:
        self.docs: dict[str, Reservation] = {}
        self.outbox: list[OutgoingRecord] = []
        self.writes = 0

    async def get(self, order_id: str) -> Reservation | None:
        await _hop()
        found = self.docs.get(order_id)
        return copy.deepcopy(found) if found else None

    async def add(self, reservation: Reservation, events: Sequence[OutgoingRecord] = ()) -> None:
        await _hop()
        if reservation.order_id in self.docs:
            raise AlreadyExists(reservation.order_id)
        stored = copy.deepcopy(reservation)
        stored.version = 1
        self.docs[reservation.order_id] = stored
        self.outbox.extend(events)
        self.writes += 1

    async def save(self, reservation: Reservation, events: Sequence[OutgoingRecord] = ()) -> None:
        await _hop()
        current = self.docs.get(reservation.order_id)
        if current is None or current.version != reservation.version:
            raise ConcurrencyError(reservation.order_id)
        stored = copy.deepcopy(reservation)
        stored.version = (reservation.version or 0) + 1
        self.docs[reservation.order_id] = stored
        self.outbox.extend(events)
        self.writes += 1

    async def unfinished_since(self, before: datetime, limit: int) -> list[str]:
        await _hop()
        unfinished = [
            r for r in self.docs.values() if r.in_progress and r.requested_at is not None and r.requested_at <= before
        ]
        return [r.order_id for r in sorted(unfinished, key=lambda r: r.requested_at or before)[:limit]]


class MemoryReviews:
    def __init__(self) -> None:
        self.docs: dict[str, Review] = {}

    async def add(self, review: Review) -> None:
        await _hop()
        self.docs[review.review_id] = copy.deepcopy(review)

    async def mark_published(self, review_id: str) -> None:
        await _hop()
        self.docs[review_id].status = ReviewStatus.PUBLISHED

    async def for_product(self, product_id: str, sort: ReviewSort, offset: int, limit: int) -> tuple[list[Review], int]:
        await _hop()
        found = [r for r in self.docs.values() if r.product_id == product_id and r.status is ReviewStatus.PUBLISHED]
        found.sort(key=lambda r: (r.created_at, r.review_id), reverse=True)
        if sort is ReviewSort.HIGHEST_RATED:
            found.sort(key=lambda r: -r.rating)
        elif sort is ReviewSort.LOWEST_RATED:
            found.sort(key=lambda r: r.rating)
        return found[offset : offset + limit], len(found)

    async def pending_since(self, before: datetime, limit: int) -> list[Review]:
        await _hop()
        return [r for r in self.docs.values() if r.status is ReviewStatus.PENDING and r.created_at < before][:limit]


class MemorySignals:
    def __init__(self) -> None:
        self.pairs: dict[tuple[str, str, str], int] = defaultdict(int)
        self.pair_seen: dict[tuple[str, str, str], set[str]] = defaultdict(set)
        self.sessions: dict[str, list[str]] = {}
        self.session_seen: dict[str, set[str]] = defaultdict(set)

    async def increment_pair(self, kind: RelationKind, product_id: str, other_id: str, event_id: str) -> None:
        await _hop()
        key = (kind.value, product_id, other_id)
        if event_id not in self.pair_seen[key]:
            self.pair_seen[key].add(event_id)
            self.pairs[key] += 1

    async def related(self, kind: RelationKind, product_id: str, limit: int) -> list[tuple[str, int]]:
        await _hop()
        found = [(o, n) for (k, p, o), n in self.pairs.items() if k == kind.value and p == product_id]
        return sorted(found, key=lambda x: (-x[1], x[0]))[:limit]

    async def recent_views(self, session_id: str) -> list[str]:
        await _hop()
        return list(self.sessions.get(session_id, []))

    async def record_view(self, session_id: str, product_id: str, event_id: str, keep: int) -> None:
        await _hop()
        if event_id in self.session_seen[session_id]:
            return
        self.session_seen[session_id].add(event_id)
        recent = [product_id] + [p for p in self.sessions.get(session_id, []) if p != product_id]
        self.sessions[session_id] = recent[:keep]


class MemoryPurchaseLedger:
    def __init__(self) -> None:
        self.orders: dict[str, dict[str, object]] = defaultdict(dict)

    async def record_order(
        self,
        order_id: str,
        customer_id: str | None,
        session_id: str,
        product_ids: Sequence[str],
        order_token_sha256: str | None = None,
    ) -> None:
        await _hop()
        self.orders[order_id].update(
            customer_id=customer_id,
            session_id=session_id,
            product_ids=list(product_ids),
            order_token_sha256=order_token_sha256,
        )

    async def mark_delivered(self, order_id: str, delivered_at: datetime) -> None:
        await _hop()
        self.orders[order_id]["delivered"] = True

    async def delivered_order_with(self, product_id: str, customer_id: str) -> str | None:
        await _hop()
        for order_id, o in self.orders.items():
            if not o.get("delivered") or product_id not in o.get("product_ids", []):  # type: ignore[operator]
                continue
            if o.get("customer_id") == customer_id:
                return order_id
        return None

    async def purchase(self, order_id: str) -> Purchase | None:
        await _hop()
        o = self.orders.get(order_id)
        if o is None:
            return None
        return Purchase(
            order_id=order_id,
            product_ids=list(o.get("product_ids", [])),  # type: ignore[call-overload]
            delivered=bool(o.get("delivered")),
            order_token_sha256=o.get("order_token_sha256"),  # type: ignore[arg-type]
        )


class MemoryEvents:
    def __init__(self) -> None:
        self.records: list[OutgoingRecord] = []

    async def add(self, *records: OutgoingRecord) -> None:
        await _hop()
        self.records.extend(records)
