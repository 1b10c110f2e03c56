"""The rate table and quoting: which methods reach a destination, what they cost, when they arrive.

Prices are integer minor units. A method's price for a basket is the price of the highest band whose
`min_subtotal` the subtotal reaches, plus `per_kg` for every started kilogram; it is zero when the
subtotal reaches the free-shipping threshold. Delivery dates follow `kasse_common.calendar` (the
same rules the cart applies to the published table).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from datetime import date, datetime
from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, model_validator

from kasse_common.calendar import delivery_window, dispatch_date
from kasse_common.errors import Unprocessable
from kasse_contracts.base import Money
from kasse_contracts.events.shipping import ShippingMethod, ShippingRate
from kasse_shipping.domain.addresses import check_postal_code

EARLIEST_ORDER_YEAR, LATEST_ORDER_YEAR = 2000, 2100


class RateTable(BaseModel):
    """Everything ShippingMethodsPublished carries except the revision (which the store assigns)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    rate_table_id: str = "default"
    origin_country: str
    origin_timezone: str
    cutoff_local_time: Annotated[str, Field(pattern=r"^\d{2}:\d{2}$")]
    holidays: list[date] = Field(default_factory=list)
    methods: Annotated[list[ShippingMethod], Field(min_length=1)]

    @model_validator(mode="after")
    def _consistent(self) -> RateTable:
        try:
            ZoneInfo(self.origin_timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {self.origin_timezone!r}") from None
        hours, minutes = (int(p) for p in self.cutoff_local_time.split(":"))
        if hours > 23 or minutes > 59:
            raise ValueError(f"cut-off {self.cutoff_local_time!r} is not a time of day")
        ids = [m.method_id for m in self.methods]
        if len(ids) != len(set(ids)):
            raise ValueError("method ids must be unique")
        for method in self.methods:
            seen: set[str] = set()
            for rate in method.rates:
                if rate.min_business_days > rate.max_business_days:
                    raise ValueError(f"{method.method_id}/{rate.zone}: min_business_days > max_business_days")
                mins = [b.min_subtotal for b in rate.price_bands]
                if mins[0] != 0 or mins != sorted(set(mins)):
                    raise ValueError(f"{method.method_id}/{rate.zone}: bands must start at 0 and ascend")
                overlap = seen & set(rate.countries)
                if overlap:
                    raise ValueError(f"{method.method_id}: {sorted(overlap)} in more than one zone")
                seen |= set(rate.countries)
        return self

    def fingerprint(self) -> str:
        """Changes exactly when the published content would change (so does the revision)."""
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()

    def method(self, method_id: str) -> ShippingMethod | None:
        return next((m for m in self.methods if m.method_id == method_id), None)

    def countries(self) -> set[str]:
        return {c for m in self.methods for r in m.rates for c in r.countries}

    def window(self, rate: ShippingRate, ordered_at: datetime) -> tuple[date, date, date]:
        """(dispatch date, earliest delivery, latest delivery) for an order placed at `ordered_at`."""
        dispatched = dispatch_date(ordered_at, self.origin_timezone, self.cutoff_local_time, self.holidays)
        earliest, latest = delivery_window(
            ordered_at,
            timezone=self.origin_timezone,
            cutoff=self.cutoff_local_time,
            holidays=self.holidays,
            min_business_days=rate.min_business_days,
            max_business_days=rate.max_business_days,
        )
        return dispatched, earliest, latest


def rate_for(method: ShippingMethod, country: str) -> ShippingRate | None:
    return next((r for r in method.rates if country in r.countries), None)


@dataclass(frozen=True)
class Basket:
    subtotal: Money
    weight_grams: int
    item_count: int

    def __post_init__(self) -> None:
        if self.item_count < 1:
            raise Unprocessable("the basket is empty: item_count must be at least 1")
        if self.weight_grams < 0:
            raise Unprocessable("weight_grams cannot be negative")


def price_for(rate: ShippingRate, basket: Basket) -> tuple[Money, bool]:
    """The shipping price and whether it is free because the threshold was reached."""
    if basket.subtotal.currency != rate.currency:
        raise Unprocessable(f"rates to {rate.zone} are in {rate.currency}; the basket is in {basket.subtotal.currency}")
    if rate.free_shipping_threshold is not None and basket.subtotal.amount >= rate.free_shipping_threshold:
        return Money(amount=0, currency=rate.currency), True
    band = max((b for b in rate.price_bands if b.min_subtotal <= basket.subtotal.amount), key=lambda b: b.min_subtotal)
    started_kg = math.ceil(basket.weight_grams / 1000)
    return Money(amount=band.price + rate.per_kg * started_kg, currency=rate.currency), False


@dataclass(frozen=True)
class MethodQuote:
    method: ShippingMethod
    rate: ShippingRate
    price: Money
    free_shipping: bool
    dispatch_date: date
    delivery_from: date
    delivery_to: date


def quote(
    table: RateTable,
    *,
    country: str,
    postal_code: str | None,
    basket: Basket,
    ordered_at: datetime,
    method_id: str | None = None,
) -> list[MethodQuote]:
    """Every method that reaches `country` (or just `method_id`), cheapest first."""
    if ordered_at.tzinfo is None:
        raise Unprocessable("ordered_at must include a time zone offset")
    if not EARLIEST_ORDER_YEAR <= ordered_at.year <= LATEST_ORDER_YEAR:
        # Business-day arithmetic near the calendar's ends would overflow; no real order is there.
        raise Unprocessable(f"ordered_at must be between {EARLIEST_ORDER_YEAR} and {LATEST_ORDER_YEAR}")
    if country not in table.countries():
        raise Unprocessable(
            f"we do not ship to {country}; destinations: {', '.join(sorted(table.countries()))}",
            field="country",
        )
    if postal_code is not None:
        check_postal_code(country, postal_code)
    methods = table.methods
    if method_id is not None:
        chosen = table.method(method_id)
        if chosen is None:
            known = ", ".join(m.method_id for m in table.methods)
            raise Unprocessable(f"unknown shipping method {method_id!r}; methods: {known}", field="method_id")
        if rate_for(chosen, country) is None:
            raise Unprocessable(f"method {method_id!r} does not deliver to {country}", field="method_id")
        methods = [chosen]
    quotes = []
    for method in methods:
        rate = rate_for(method, country)
        if rate is None:
            continue
        price, free = price_for(rate, basket)
        dispatched, earliest, latest = table.window(rate, ordered_at)
        quotes.append(MethodQuote(method, rate, price, free, dispatched, earliest, latest))
    return sorted(quotes, key=lambda q: (q.price.amount, q.delivery_to))
