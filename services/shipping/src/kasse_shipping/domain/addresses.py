"""Postal code formats of the countries we ship to: a typo caught at quote time is a parcel not lost."""

from __future__ import annotations

import re

from kasse_common.errors import Unprocessable

POSTAL_CODE_FORMATS: dict[str, tuple[re.Pattern[str], str]] = {
    "DE": (re.compile(r"^\d{5}$"), "five digits, e.g. 10115"),
    "AT": (re.compile(r"^\d{4}$"), "four digits, e.g. 1010"),
    "FR": (re.compile(r"^\d{5}$"), "five digits, e.g. 75001"),
    "NL": (re.compile(r"^\d{4} ?[A-Z]{2}$"), "four digits and two letters, e.g. 1012 AB"),
    "SE": (re.compile(r"^\d{3} ?\d{2}$"), "five digits, e.g. 114 55"),
    "GB": (re.compile(r"^[A-Z]{1,2}\d[A-Z\d]? ?\d[A-Z]{2}$"), "a UK postcode, e.g. SW1A 1AA"),
    "US": (re.compile(r"^\d{5}(-\d{4})?$"), "a ZIP code, e.g. 10001 or 10001-1234"),
}


def check_postal_code(country: str, postal_code: str) -> None:
    """Raise Unprocessable when `postal_code` cannot be an address in `country` (unknown formats pass)."""
    rule = POSTAL_CODE_FORMATS.get(country)
    if rule is None:
        return
    pattern, expected = rule
    if not pattern.match(postal_code.strip().upper()):
        raise Unprocessable(
            f"postal code {postal_code!r} is not valid for {country}: expected {expected}", field="postal_code"
        )
