"""In-memory adapters with the Mongo ones' semantics (versions, consumed ids, outbox), for unit tests.

They store documents through the same translation as the Mongo repositories, so unit tests also
prove that the domain objects survive the round trip.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from kasse_cart.adapters.documents import (
    cart_from_doc,
    cart_to_doc,
    coupon_from_doc,
    coupon_to_doc,
    order_from_doc,
    order_to_doc,
)
from kasse_cart.domain.cart import Cart, CartStatus, ProductInfo
from kasse_cart.domain.order import Order, OrderStatus
from kasse_cart.domain.promotions import Coupon
from kasse_cart.domain.shipping import RateTable
from kasse_common.envelope import OutgoingRecord
from kasse_common.errors import ConcurrencyError, Conflict


class _Documents:
    def __init__(self) -> None:
        self.docs: dict[str, dict[str, Any]] = {}
        self.outbox: list[OutgoingRecord] = []  # everything ever committed, in commit order

    def load(self, doc_id: str) -> dict[str, Any] | None:
        doc = self.docs.get(doc_id)
        return copy.deepcopy(doc) if doc else None

    def insert(self, doc_id: str, state: dict[str, Any], events: Sequence[OutgoingRecord]) -> bool:
        if doc_id in self.docs:
            return False
        self.docs[doc_id] = {"_id": doc_id, **copy.deepcopy(state), "_version": 1, "_processed": set()}
        self.outbox.extend(events)
        return True

    def update(
        self, doc_id: str, version: int, state: dict[str, Any], events: Sequence[OutgoingRecord], consumed: str | None
    ) -> bool:
        doc = self.docs.get(doc_id)
        if consumed and doc is not None and consumed in doc["_processed"]:
            return False
        if doc is None or doc["_version"] != version:
            raise ConcurrencyError(f"{doc_id} changed since version {version}")
        doc.update(copy.deepcopy(state))
        doc["_version"] = version + 1
        if consumed:
            doc["_processed"].add(consumed)
        self.outbox.extend(events)
        return True

    def events(self, event_type: str | None = None) -> list[OutgoingRecord]:
        return [r for r in self.outbox if event_type is None or r.event_type == event_type]


class InMemoryCarts(_Documents):
    async def get(self, cart_id: str) -> Cart | None:
        doc = self.load(cart_id)
        return cart_from_doc(doc) if doc else None

    async def add(self, cart: Cart, events: Sequence[OutgoingRecord]) -> None:
        if not self.insert(cart.cart_id, cart_to_doc(cart), events):
            raise ConcurrencyError(f"{cart.cart_id} exists")
        cart.version = 1

    async def save(self, cart: Cart, events: Sequence[OutgoingRecord], *, consumed_event_id: str | None = None) -> bool:
        applied = self.update(cart.cart_id, cart.version, cart_to_doc(cart), events, consumed_event_id)
        if applied:
            cart.version += 1
        return applied

    async def ids_with_product(self, product_id: str) -> list[str]:
        return [
            doc_id
            for doc_id, doc in self.docs.items()
            if doc["status"] == CartStatus.OPEN.value and any(li["product_id"] == product_id for li in doc["lines"])
        ]

    async def idle_since(self, cutoff: datetime, limit: int) -> list[Cart]:
        found = [
            cart_from_doc(copy.deepcopy(doc))
            for doc in self.docs.values()
            if doc["status"] == CartStatus.OPEN.value
            and doc["item_count"] > 0
            and doc["abandoned_at"] is None
            and doc["last_activity_at"] < cutoff
        ]
        return found[:limit]


class InMemoryOrders(_Documents):
    async def get(self, order_id: str) -> Order | None:
        doc = self.load(order_id)
        return order_from_doc(doc) if doc else None

    async def add(self, order: Order, events: Sequence[OutgoingRecord]) -> bool:
        if not self.insert(order.order_id, order_to_doc(order), events):
            return False
        order.version = 1
        return True

    async def save(
        self, order: Order, events: Sequence[OutgoingRecord], *, consumed_event_id: str | None = None
    ) -> bool:
        applied = self.update(order.order_id, order.version, order_to_doc(order), events, consumed_event_id)
        if applied:
            order.version += 1
        return applied

    async def search(
        self, *, status: OrderStatus | None, email: str | None, text: str | None, limit: int, offset: int
    ) -> list[Order]:
        orders = [order_from_doc(copy.deepcopy(d)) for d in self.docs.values()]
        if status is not None:
            orders = [o for o in orders if o.status is status]
        if email:
            orders = [o for o in orders if o.email.lower() == email.strip().lower()]
        if text:
            needle = text.strip().lower()
            orders = [o for o in orders if any(needle in v.lower() for v in (o.order_id, o.email, o.cart_id))]
        orders.sort(key=lambda o: (-o.placed_at.timestamp(), o.order_id))
        return orders[offset : offset + limit]

    async def unpaid_past_deadline(self, now: datetime, limit: int) -> list[Order]:
        orders = [order_from_doc(copy.deepcopy(d)) for d in self.docs.values()]
        due = [
            o
            for o in orders
            if o.status in (OrderStatus.PLACED, OrderStatus.STOCK_RESERVED)
            and o.payment_due_at is not None
            and o.payment_due_at <= now
        ]
        return sorted(due, key=lambda o: o.payment_due_at or now)[:limit]


class InMemoryProducts:
    def __init__(self) -> None:
        self.products: dict[str, ProductInfo] = {}

    async def get(self, product_id: str) -> ProductInfo | None:
        return self.products.get(product_id)

    async def upsert(self, product: ProductInfo) -> bool:
        known = self.products.get(product.product_id)
        if known is not None and known.revision >= product.revision:
            return False
        self.products[product.product_id] = product
        return True


class InMemoryRateTables:
    def __init__(self) -> None:
        self.tables: dict[str, RateTable] = {}

    async def current(self) -> RateTable | None:
        return self.tables.get("default")

    async def upsert(self, rate_table_id: str, table: RateTable) -> bool:
        known = self.tables.get(rate_table_id)
        if known is not None and known.revision >= table.revision:
            return False
        self.tables[rate_table_id] = table
        return True


class InMemoryCoupons:
    def __init__(self) -> None:
        self.docs: dict[str, dict[str, Any]] = {}

    async def get(self, code: str, customer_key: str | None = None) -> Coupon | None:
        doc = self.docs.get(code)
        return coupon_from_doc(copy.deepcopy(doc), customer_key) if doc else None

    async def add(self, coupon: Coupon) -> None:
        if coupon.code in self.docs:
            raise Conflict(f"coupon {coupon.code} exists already")
        self.docs[coupon.code] = {"_id": coupon.code, **coupon_to_doc(coupon)}

    async def all(self) -> list[Coupon]:
        return [coupon_from_doc(copy.deepcopy(d), None) for _, d in sorted(self.docs.items())]

    async def redeem(self, coupon: Coupon, order_id: str, customer_key: str | None) -> bool:
        doc = self.docs[coupon.code]
        if order_id in doc["redemptions"]:
            return True
        if coupon.usage_limit is not None and doc["used"] >= coupon.usage_limit:
            return False
        if customer_key is not None:
            used = doc["per_customer"].get(customer_key, 0)
            if coupon.per_customer_limit is not None and used >= coupon.per_customer_limit:
                return False
            doc["per_customer"][customer_key] = used + 1
        doc["used"] += 1
        doc["redemptions"][order_id] = datetime.now(UTC)
        return True


class FixedPaymentLookup:
    def __init__(self, secret: str | None = None, status: str | None = None) -> None:
        self.secret = secret
        self.status = status
        self.asked: list[str] = []
        self.pdfs: dict[str, dict[str, bytes]] = {}  # order id -> number -> PDF

    async def payment_status(self, order_id: str) -> str | None:
        self.asked.append(order_id)
        return self.status

    async def client_secret(self, order_id: str) -> str | None:
        self.asked.append(order_id)
        return self.secret

    async def invoices(self, order_id: str) -> list[dict[str, Any]] | None:
        return [{"number": n, "kind": "invoice"} for n in self.pdfs.get(order_id, {})]

    async def invoice_pdf(self, order_id: str, number: str) -> bytes | None:
        return self.pdfs.get(order_id, {}).get(number)
