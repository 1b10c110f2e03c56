"""The cart: lines, quantities, the coupon and the shopper's checkout choices. Plain Python.

Prices on a line are the read model's current price; `previous_unit_price` keeps the price the
shopper saw when the line was added (or last touched) so a change is flagged before they pay.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from kasse_common.errors import Conflict, Unprocessable
from kasse_contracts.events.common import TaxClass


class CartStatus(StrEnum):
    OPEN = "open"
    ORDERED = "ordered"  # an order was placed from it; it can no longer change


@dataclass(frozen=True)
class CartLimits:
    max_quantity_per_line: int = 20
    max_lines: int = 50


@dataclass(frozen=True)
class ProductInfo:
    """The cart's read model of one product (from ProductChanged)."""

    product_id: str
    sku: str
    name: str
    category: str
    price: int
    currency: str
    stock_available: int
    active: bool
    revision: int
    tax_class: TaxClass = TaxClass.STANDARD


@dataclass
class CartLine:
    product_id: str
    sku: str
    name: str
    category: str
    quantity: int
    unit_price: int
    previous_unit_price: int | None = None  # set when the price changed since the shopper saw it
    available: bool = True  # the catalog still sells this quantity (checkout refuses otherwise)
    tax_class: TaxClass = TaxClass.STANDARD  # the catalog's VAT class; the rate follows from it and the destination

    @property
    def line_total(self) -> int:
        return self.unit_price * self.quantity

    @property
    def price_changed(self) -> bool:
        return self.previous_unit_price is not None and self.previous_unit_price != self.unit_price


REPLIES_KEPT = 10  # answers kept per cart for requests with an Idempotency-Key (the newest)


@dataclass
class IdempotentReply:
    """The first answer to a request made with an Idempotency-Key, replayed to its retries."""

    key: str
    request: str  # a digest of what was asked: the same key with another request is refused
    answer: str  # the answer as sent (JSON text)


def request_digest(*parts: object) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()


@dataclass
class CheckoutDetails:
    email: str
    address: dict[str, str | None]
    shipping_method_id: str
    billing_country: str | None
    quoted_total: int
    started_at: datetime


@dataclass
class Cart:
    cart_id: str
    token_hash: str
    session_id: str
    currency: str
    created_at: datetime
    last_activity_at: datetime
    customer_id: str | None = None
    email: str | None = None
    lines: list[CartLine] = field(default_factory=list)
    coupon_code: str | None = None
    status: CartStatus = CartStatus.OPEN
    checkout: CheckoutDetails | None = None
    order_id: str | None = None
    abandoned_at: datetime | None = None
    # The last REPLIES_KEPT requests made with an Idempotency-Key, newest last: a client that lost the answer
    # to an add and sends it again gets the first answer, and the product is not added twice.
    replies: list[IdempotentReply] = field(default_factory=list)
    version: int = 0  # optimistic concurrency: the stored version this object was loaded at

    # -- tokens ---------------------------------------------------------------------------------
    @staticmethod
    def new_token() -> tuple[str, str]:
        """A fresh unguessable token and the hash that is all the cart keeps of it."""
        token = secrets.token_urlsafe(32)
        return token, hash_token(token)

    def token_matches(self, token: str | None) -> bool:
        if not token:
            return False
        return hmac.compare_digest(self.token_hash, hash_token(token))

    # -- idempotent requests ----------------------------------------------------------------------
    def reply_for(self, key: str, request: str) -> str | None:
        """The first answer to `key`, or None when the key is new. The key with another request: refused."""
        for reply in self.replies:
            if reply.key == key:
                if reply.request != request:
                    raise Unprocessable(
                        "this Idempotency-Key was used for another request on this cart; use a new key",
                        reason="idempotency_key_reused",
                    )
                return reply.answer
        return None

    def remember_reply(self, key: str, request: str, answer: str) -> None:
        self.replies = [*self.replies, IdempotentReply(key, request, answer)][-REPLIES_KEPT:]

    # -- reading --------------------------------------------------------------------------------
    def line(self, product_id: str) -> CartLine | None:
        return next((line for line in self.lines if line.product_id == product_id), None)

    @property
    def item_count(self) -> int:
        return sum(line.quantity for line in self.lines)

    @property
    def subtotal(self) -> int:
        return sum(line.line_total for line in self.lines)

    # -- changing -------------------------------------------------------------------------------
    def _ensure_open(self) -> None:
        if self.status is not CartStatus.OPEN:
            raise Conflict(f"cart {self.cart_id} has been ordered and can no longer change", order_id=self.order_id)

    def _touched(self, now: datetime) -> None:
        self.last_activity_at = now
        # Any change to the basket invalidates the quote the shopper saw: checkout must be begun again.
        self.checkout = None

    def add(
        self, product: ProductInfo | None, quantity: int, limits: CartLimits, now: datetime
    ) -> tuple[CartLine, int]:
        """Add `quantity` of a product (merging into its line). Returns the line and the delta."""
        self._ensure_open()
        _check_quantity(quantity, limits)
        product = _sellable(product)
        if product.currency != self.currency:
            raise Unprocessable(
                f"product {product.product_id} is priced in {product.currency}, the cart is in {self.currency}"
            )
        existing = self.line(product.product_id)
        new_quantity = quantity + (existing.quantity if existing else 0)
        if new_quantity > limits.max_quantity_per_line:
            raise Unprocessable(
                f"at most {limits.max_quantity_per_line} of one product per cart "
                f"(the cart has {existing.quantity if existing else 0})"
            )
        _check_stock(product, new_quantity)
        if existing is None:
            if len(self.lines) >= limits.max_lines:
                raise Unprocessable(f"a cart holds at most {limits.max_lines} different products")
            existing = CartLine(
                product_id=product.product_id,
                sku=product.sku,
                name=product.name,
                category=product.category,
                quantity=new_quantity,
                unit_price=product.price,
                tax_class=product.tax_class,
            )
            self.lines.append(existing)
        else:
            existing.quantity = new_quantity
            _refresh(existing, product)
        self._touched(now)
        return existing, quantity

    def set_quantity(
        self, product_id: str, quantity: int, product: ProductInfo | None, limits: CartLimits, now: datetime
    ) -> tuple[CartLine, int]:
        self._ensure_open()
        _check_quantity(quantity, limits)
        existing = self._existing(product_id)
        delta = quantity - existing.quantity
        if delta > 0:
            # Buying more needs a sellable product; buying fewer never does.
            product = _sellable(product)
            _check_stock(product, quantity)
        existing.quantity = quantity
        if product is not None:
            _refresh(existing, product)
        self._touched(now)
        return existing, delta

    def remove(self, product_id: str, now: datetime) -> CartLine:
        self._ensure_open()
        existing = self._existing(product_id)
        self.lines.remove(existing)
        self._touched(now)
        return existing

    def clear(self, now: datetime) -> int:
        self._ensure_open()
        removed = self.item_count
        self.lines.clear()
        self.coupon_code = None
        self._touched(now)
        return removed

    def set_coupon(self, code: str | None, now: datetime) -> None:
        self._ensure_open()
        self.coupon_code = code
        self._touched(now)

    def reprice(self, product: ProductInfo) -> CartLine | None:
        """The catalog changed a product's price: the line shows the new price, flagged. Not shopper activity."""
        if self.status is not CartStatus.OPEN:
            return None
        existing = self.line(product.product_id)
        if existing is None or existing.unit_price == product.price or product.currency != self.currency:
            return None
        if existing.previous_unit_price is None:
            existing.previous_unit_price = existing.unit_price
        existing.unit_price = product.price
        if existing.previous_unit_price == existing.unit_price:
            existing.previous_unit_price = None  # back to what the shopper saw: nothing to flag
        self.checkout = None
        return existing

    def mark_availability(self, product: ProductInfo) -> bool:
        """The catalog's stock or availability changed: flag the line. True when the flag changed."""
        existing = self.line(product.product_id)
        if existing is None or self.status is not CartStatus.OPEN:
            return False
        available = product.active and product.stock_available >= existing.quantity
        if available == existing.available:
            return False
        existing.available = available
        return True

    def _existing(self, product_id: str) -> CartLine:
        existing = self.line(product_id)
        if existing is None:
            raise Unprocessable(f"product {product_id} is not in the cart")
        return existing


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _check_quantity(quantity: int, limits: CartLimits) -> None:
    if isinstance(quantity, bool) or not isinstance(quantity, int) or not 1 <= quantity <= limits.max_quantity_per_line:
        raise Unprocessable(f"quantity must be a whole number from 1 to {limits.max_quantity_per_line}")


def _sellable(product: ProductInfo | None) -> ProductInfo:
    if product is None:
        raise Unprocessable("unknown product: it is not in the catalog")
    if not product.active:
        raise Unprocessable(f"product {product.product_id} is not available for sale")
    return product


def _check_stock(product: ProductInfo, quantity: int) -> None:
    if quantity > product.stock_available:
        raise Unprocessable(
            f"only {product.stock_available} of product {product.product_id} in stock",
            available=product.stock_available,
        )


def _refresh(line: CartLine, product: ProductInfo) -> None:
    """The shopper acted on the line: it shows the current price and the change counts as seen."""
    line.unit_price = product.price
    line.previous_unit_price = None
    line.available = product.active and product.stock_available >= line.quantity
    line.name = product.name
    line.sku = product.sku
    line.category = product.category
    line.tax_class = product.tax_class
