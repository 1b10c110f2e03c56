"""Shipping choices from the rate table shipping publishes, and address rules. Plain Python."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from kasse_common.calendar import delivery_window
from kasse_common.errors import Unprocessable


@dataclass(frozen=True)
class ShippingQuote:
    method_id: str
    name: str
    carrier: str
    price: int
    currency: str
    free_shipping_threshold: int | None
    promised_from: date
    promised_to: date


@dataclass(frozen=True)
class RateTable:
    """The cart's read model of ShippingMethodsPublished (the whole table, latest revision)."""

    revision: int
    origin_timezone: str
    cutoff_local_time: str
    holidays: tuple[date, ...]
    methods: tuple[dict[str, Any], ...]  # ShippingMethod as plain data

    def quote(
        self, method_id: str, country: str, currency: str, discounted_subtotal: int, now: datetime
    ) -> ShippingQuote:
        method = next((m for m in self.methods if m["method_id"] == method_id), None)
        if method is None:
            known = ", ".join(m["method_id"] for m in self.methods) or "none"
            raise Unprocessable(f"unknown shipping method {method_id!r} (available: {known})")
        rate = next((r for r in method["rates"] if country in r["countries"] and r["currency"] == currency), None)
        if rate is None:
            raise Unprocessable(f"shipping method {method_id!r} does not deliver to {country} in {currency}")
        bands = sorted(rate["price_bands"], key=lambda b: b["min_subtotal"])
        price = bands[0]["price"]
        for band in bands:
            if discounted_subtotal >= band["min_subtotal"]:
                price = band["price"]
        earliest, latest = delivery_window(
            now,
            timezone=self.origin_timezone,
            cutoff=self.cutoff_local_time,
            holidays=set(self.holidays),
            min_business_days=rate["min_business_days"],
            max_business_days=rate["max_business_days"],
        )
        return ShippingQuote(
            method_id=method_id,
            name=method["name"],
            carrier=method["carrier"],
            price=price,
            currency=currency,
            free_shipping_threshold=rate.get("free_shipping_threshold"),
            promised_from=earliest,
            promised_to=latest,
        )

    def options(self, country: str, currency: str, discounted_subtotal: int, now: datetime) -> list[ShippingQuote]:
        quotes = []
        for method in self.methods:
            try:
                quotes.append(self.quote(method["method_id"], country, currency, discounted_subtotal, now))
            except Unprocessable:
                continue
        return quotes


# Postal code shapes of the countries we ship to most; others only need to be non-blank.
_POSTAL_CODES = {
    "DE": r"\d{5}",
    "AT": r"\d{4}",
    "CH": r"\d{4}",
    "FR": r"\d{5}",
    "IT": r"\d{5}",
    "ES": r"\d{5}",
    "NL": r"\d{4} ?[A-Z]{2}",
    "BE": r"\d{4}",
    "DK": r"\d{4}",
    "SE": r"\d{3} ?\d{2}",
    "PL": r"\d{2}-\d{3}",
    "US": r"\d{5}(-\d{4})?",
    "GB": r"[A-Z]{1,2}\d[A-Z\d]? ?\d[A-Z]{2}",
}


def validate_address(address: dict[str, Any]) -> None:
    """Beyond the field shapes: no blank required fields, a plausible postal code for the country."""
    for field_name in ("name", "line1", "city", "postal_code"):
        if not str(address.get(field_name) or "").strip():
            raise Unprocessable(
                f"shipping_address.{field_name} must not be blank", field=f"shipping_address.{field_name}"
            )
    country = address["country"]
    pattern = _POSTAL_CODES.get(country)
    postal = str(address["postal_code"]).strip().upper()
    if pattern and not re.fullmatch(pattern, postal):
        raise Unprocessable(
            f"shipping_address.postal_code {address['postal_code']!r} is not a valid postal code for {country}",
            field="shipping_address.postal_code",
        )
