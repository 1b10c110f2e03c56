"""Products: their data, the rules for changing them, and their stock.

Stock: `stock_on_hand` is what the warehouse holds, `stock_reserved` what open orders hold, and
`stock_available` (on hand minus reserved) what a shopper can still buy. Money is integer minor units.
"""

from __future__ import annotations

import re
import unicodedata
import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from kasse_common.errors import Conflict, Unprocessable
from kasse_contracts.base import Money
from kasse_contracts.events.catalog import ProductChangeKind
from kasse_contracts.events.common import TaxClass

_PRODUCT_ID_NAMESPACE = uuid.UUID("3b0c3f5e-4f57-4d0b-a7a2-2d4c2f3a9c11")
SLUG_PATTERN = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")


def product_id_for_sku(sku: str) -> str:
    """Deterministic: importing the same sku twice (even concurrently) lands on the same product."""
    return "prd_" + uuid.uuid5(_PRODUCT_ID_NAMESPACE, sku.upper()).hex[:16]


def slugify(text: str) -> str:
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")
    return slug[:120].strip("-") or "product"


class InsufficientStock(Exception):
    def __init__(self, requested: int, available: int) -> None:
        super().__init__(f"requested {requested}, available {available}")
        self.requested = requested
        self.available = available


@dataclass(frozen=True)
class Image:
    url: str
    alt: str


@dataclass
class ProductDetails:
    """What an admin (or the import) says a product is; validated by `check`."""

    sku: str
    name: str
    description: str
    category: str
    price: Money
    compare_at_price: Money | None = None
    images: list[Image] = field(default_factory=list)
    attributes: dict[str, str] = field(default_factory=dict)
    slug: str | None = None
    stock_on_hand: int = 0
    active: bool = True
    tax_class: TaxClass = TaxClass.STANDARD  # the VAT class; the rate follows from it and the destination

    def check(self) -> None:
        check_prices(self.price, self.compare_at_price)
        if self.stock_on_hand < 0:
            raise Unprocessable("stock_on_hand must not be negative", field="stock_on_hand")
        if self.slug is not None and not SLUG_PATTERN.match(self.slug):
            raise Unprocessable("slug must be lower-case words joined by '-'", field="slug")


def check_prices(price: Money, compare_at: Money | None) -> None:
    if compare_at is None:
        return
    if compare_at.currency != price.currency:
        raise Unprocessable(
            f"compare_at_price is in {compare_at.currency} but price is in {price.currency}",
            field="compare_at_price",
        )
    if compare_at.amount <= price.amount:
        raise Unprocessable(
            "compare_at_price must be higher than price (it is the 'was' price of a sale)",
            field="compare_at_price",
        )


@dataclass
class Product:
    product_id: str
    sku: str
    slug: str
    name: str
    description: str
    category: str
    price: Money
    compare_at_price: Money | None
    images: list[Image]
    attributes: dict[str, str]
    stock_on_hand: int
    stock_reserved: int
    active: bool
    created_at: datetime
    updated_at: datetime
    rating_sum: int = 0
    rating_count: int = 0
    # Learned from events, written by atomic increments outside the versioned state.
    views: int = 0
    purchases: int = 0
    version: int | None = None  # None: not stored yet
    tax_class: TaxClass = TaxClass.STANDARD

    @classmethod
    def create(cls, details: ProductDetails, now: datetime) -> Product:
        details.check()
        return cls(
            product_id=product_id_for_sku(details.sku),
            sku=details.sku,
            slug=details.slug or slugify(details.name),
            name=details.name,
            description=details.description,
            category=details.category,
            price=details.price,
            compare_at_price=details.compare_at_price,
            images=list(details.images),
            attributes=dict(details.attributes),
            stock_on_hand=details.stock_on_hand,
            stock_reserved=0,
            active=details.active,
            tax_class=details.tax_class,
            created_at=now,
            updated_at=now,
        )

    # -- read ---------------------------------------------------------------------------------
    @property
    def stock_available(self) -> int:
        return max(self.stock_on_hand - self.stock_reserved, 0)

    @property
    def rating_average(self) -> float:
        return round(self.rating_sum / self.rating_count, 2) if self.rating_count else 0.0

    @property
    def popularity(self) -> int:
        return popularity_score(self.views, self.purchases)

    @property
    def revision(self) -> int:
        """ProductChanged.revision: the stored version, which grows with every change."""
        return self.version or 1

    # -- change -------------------------------------------------------------------------------
    def update(self, now: datetime, **changes: Any) -> list[ProductChangeKind]:
        """Apply the given fields; returns what kind of change it was (empty: nothing changed)."""
        allowed = {
            "name", "description", "category", "price", "compare_at_price", "images", "attributes", "slug", "active",
            "stock_on_hand", "tax_class",
        }  # fmt: skip
        unknown = set(changes) - allowed
        if unknown:
            raise Unprocessable(f"cannot change {', '.join(sorted(unknown))}")
        price = changes.get("price", self.price)
        compare_at = changes.get("compare_at_price", self.compare_at_price)
        check_prices(price, compare_at)
        if "slug" in changes and (changes["slug"] is None or not SLUG_PATTERN.match(changes["slug"])):
            raise Unprocessable("slug must be lower-case words joined by '-'", field="slug")
        kinds: list[ProductChangeKind] = []
        if price != self.price or compare_at != self.compare_at_price:
            kinds.append(ProductChangeKind.PRICE)
        if "stock_on_hand" in changes and changes["stock_on_hand"] != self.stock_on_hand:
            self._set_on_hand(changes.pop("stock_on_hand"))
            kinds.append(ProductChangeKind.STOCK)
        changes.pop("stock_on_hand", None)
        if "active" in changes and changes["active"] != self.active:
            kinds.append(ProductChangeKind.AVAILABILITY)
        details = [
            k for k in ("name", "description", "category", "images", "attributes", "slug", "tax_class") if k in changes
        ]
        if any(changes[k] != getattr(self, k) for k in details):
            kinds.append(ProductChangeKind.DETAILS)
        if not kinds:
            return []
        for key, value in changes.items():
            setattr(self, key, list(value) if key == "images" else dict(value) if key == "attributes" else value)
        self.updated_at = now
        return kinds

    def deactivate(self, now: datetime) -> list[ProductChangeKind]:
        return self.update(now, active=False)

    def adjust_stock(self, delta: int, now: datetime) -> list[ProductChangeKind]:
        """A stock count or delivery: on hand moves by `delta`; reserved units stay reserved."""
        if delta == 0:
            return []
        self._set_on_hand(self.stock_on_hand + delta)
        self.updated_at = now
        return [ProductChangeKind.STOCK]

    def _set_on_hand(self, on_hand: int) -> None:
        if on_hand < 0:
            raise Unprocessable(f"stock on hand cannot go below 0 (it would be {on_hand})", field="stock_on_hand")
        if on_hand < self.stock_reserved:
            raise Conflict(
                f"{self.stock_reserved} units are reserved by open orders; stock on hand cannot go below that",
                field="stock_on_hand",
            )
        self.stock_on_hand = on_hand

    def reserve(self, quantity: int, now: datetime) -> None:
        if not self.active or quantity > self.stock_available:
            raise InsufficientStock(quantity, self.stock_available if self.active else 0)
        self.stock_reserved += quantity
        self.updated_at = now

    def release(self, quantity: int, now: datetime) -> None:
        self.stock_reserved = max(self.stock_reserved - quantity, 0)
        self.updated_at = now

    def left_unreserved(self, quantity: int, now: datetime) -> None:
        """Units left the warehouse whose reservation had already been given back (a cancellation that
        shipping refused after dispatch): on hand goes down; never below zero."""
        self.stock_on_hand = max(self.stock_on_hand - quantity, 0)
        self.updated_at = now

    def fulfil(self, quantity: int, now: datetime) -> None:
        """Reserved units were delivered: they leave stock on hand and the reservation together."""
        taken = min(quantity, self.stock_reserved)
        self.stock_reserved -= taken
        self.stock_on_hand = max(self.stock_on_hand - taken, 0)
        self.updated_at = now

    def add_rating(self, rating: int) -> None:
        if not 1 <= rating <= 5:
            raise Unprocessable("rating must be between 1 and 5", field="rating")
        self.rating_sum += rating
        self.rating_count += 1

    def copy(self) -> Product:
        return replace(self, images=list(self.images), attributes=dict(self.attributes))


def popularity_score(views: int, purchases: int) -> int:
    """A purchase says more than a view."""
    return views + 10 * purchases
