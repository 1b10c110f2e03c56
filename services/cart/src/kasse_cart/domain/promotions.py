"""Coupons and automatic promotions, and the totals they lead to. Plain Python, integer minor units."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum

from kasse_common.errors import Unprocessable
from kasse_common.money.basket import BasketLine, PricedBasket, price_basket


class CouponKind(StrEnum):
    PERCENT = "percent"  # value: whole percent, 1..100
    FIXED = "fixed"  # value: minor units of `currency`


@dataclass(frozen=True)
class Coupon:
    code: str
    kind: CouponKind
    value: int
    currency: str
    min_subtotal: int = 0
    valid_from: datetime | None = None
    valid_until: datetime | None = None
    usage_limit: int | None = None  # overall redemptions
    per_customer_limit: int | None = None
    used: int = 0
    used_by_customer: int = 0  # redemptions by the customer asking, when known

    def refusal(self, subtotal: int, currency: str, now: datetime) -> str | None:
        """Why the coupon cannot apply to this basket now, or None when it can."""
        if self.valid_from is not None and now < self.valid_from:
            return f"coupon {self.code} is not valid before {self.valid_from.isoformat()}"
        if self.valid_until is not None and now >= self.valid_until:
            return f"coupon {self.code} expired on {self.valid_until.isoformat()}"
        if currency != self.currency:
            return f"coupon {self.code} is for baskets in {self.currency}"
        if subtotal < self.min_subtotal:
            return f"coupon {self.code} needs a basket of at least {format_money(self.min_subtotal, self.currency)}"
        if self.usage_limit is not None and self.used >= self.usage_limit:
            return f"coupon {self.code} has been used up"
        if self.per_customer_limit is not None and self.used_by_customer >= self.per_customer_limit:
            return f"coupon {self.code} was already used the maximum number of times by this customer"
        return None

    def discount(self, subtotal: int) -> int:
        if self.kind is CouponKind.PERCENT:
            return subtotal * self.value // 100  # rounds down: never more than the percentage
        return min(self.value, subtotal)

    def description(self) -> str:
        if self.kind is CouponKind.PERCENT:
            return f"{self.value}% off with {self.code}"
        return f"{format_money(self.value, self.currency)} off with {self.code}"


def normalise_code(code: str) -> str:
    cleaned = code.strip().upper()
    if not cleaned or len(cleaned) > 40 or not all(c.isalnum() or c in "-_" for c in cleaned):
        raise Unprocessable("a coupon code is 1 to 40 letters, digits, '-' or '_'")
    return cleaned


@dataclass(frozen=True)
class FreeShippingPromotion:
    """Automatic: shipping is free when the items (after item discounts) reach the threshold."""

    threshold: int
    currency: str

    def applies(self, discounted_subtotal: int, currency: str) -> bool:
        return currency == self.currency and discounted_subtotal >= self.threshold

    def description(self) -> str:
        return f"Free shipping from {format_money(self.threshold, self.currency)}"


@dataclass(frozen=True)
class Discount:
    code: str | None
    description: str
    amount: int
    applies_to: str  # "items" or "shipping"


@dataclass(frozen=True)
class Totals:
    """`total = subtotal + shipping_total - discount_total`; `shipping_total` is before its discount."""

    currency: str
    subtotal: int
    discounts: tuple[Discount, ...]
    shipping_total: int | None  # None until a shipping method is chosen
    free_shipping: bool
    coupon_notice: str | None  # why an applied coupon gives nothing (now)

    @property
    def discount_total(self) -> int:
        return sum(d.amount for d in self.discounts)

    @property
    def item_discount_total(self) -> int:
        return sum(d.amount for d in self.discounts if d.applies_to == "items")

    @property
    def shipping_discount_total(self) -> int:
        return sum(d.amount for d in self.discounts if d.applies_to == "shipping")

    @property
    def total(self) -> int:
        return self.subtotal + (self.shipping_total or 0) - self.discount_total

    def priced(self, lines: Sequence[BasketLine], country: str, on: date) -> PricedBasket:
        """These totals per line and per VAT rate for a destination (the kit's basket rules)."""
        return price_basket(
            lines,
            item_discount=self.item_discount_total,
            shipping_price=self.shipping_total or 0,
            shipping_discount=self.shipping_discount_total,
            country=country,
            on=on,
        )


def compute_totals(
    *,
    subtotal: int,
    currency: str,
    coupon: Coupon | None,
    free_shipping: FreeShippingPromotion | None,
    shipping_price: int | None,
    rate_free_threshold: int | None,
    now: datetime,
) -> Totals:
    discounts: list[Discount] = []
    notice = None
    if coupon is not None:
        notice = coupon.refusal(subtotal, currency, now)
        if notice is None:
            amount = coupon.discount(subtotal)
            if amount > 0:
                discounts.append(Discount(coupon.code, coupon.description(), amount, "items"))
    discounted = subtotal - sum(d.amount for d in discounts)
    promotion_applies = free_shipping is not None and free_shipping.applies(discounted, currency)
    rate_applies = rate_free_threshold is not None and discounted >= rate_free_threshold
    is_free = subtotal > 0 and (promotion_applies or rate_applies)
    if is_free and shipping_price:
        description = (
            free_shipping.description()
            if promotion_applies and free_shipping is not None
            else f"Free shipping from {format_money(rate_free_threshold or 0, currency)}"
        )
        discounts.append(Discount(None, description, shipping_price, "shipping"))
    return Totals(
        currency=currency,
        subtotal=subtotal,
        discounts=tuple(discounts),
        shipping_total=shipping_price,
        free_shipping=is_free,
        coupon_notice=notice,
    )


def format_money(amount: int, currency: str) -> str:
    return f"{amount // 100}.{amount % 100:02d} {currency}"
