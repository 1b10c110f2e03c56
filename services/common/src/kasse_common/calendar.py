"""Business-day arithmetic for delivery promises, shared by shipping (quotes, shipments) and cart
(which prices and promises delivery from the published rate table while shipping is down).

The rules are those of `ShippingMethodsPublished`: an order placed after the origin's cut-off time,
or on a weekend or public holiday, is dispatched on the next business day; delivery takes between
`min_business_days` and `max_business_days` business days after dispatch. Plain Python.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo


def is_business_day(day: date, holidays: Collection[date]) -> bool:
    return day.weekday() < 5 and day not in holidays


def next_business_day(day: date, holidays: Collection[date]) -> date:
    day += timedelta(days=1)
    while not is_business_day(day, holidays):
        day += timedelta(days=1)
    return day


def add_business_days(day: date, days: int, holidays: Collection[date]) -> date:
    for _ in range(days):
        day = next_business_day(day, holidays)
    return day


def dispatch_date(ordered_at: datetime, timezone: str, cutoff: str, holidays: Collection[date]) -> date:
    """The business day the parcel leaves the warehouse (in the origin's local calendar)."""
    if ordered_at.tzinfo is None:
        raise ValueError("ordered_at must be timezone-aware")
    local = ordered_at.astimezone(ZoneInfo(timezone))
    hours, minutes = (int(part) for part in cutoff.split(":"))
    day = local.date()
    if not is_business_day(day, holidays) or local.time() >= time(hours, minutes):
        return next_business_day(day, holidays)
    return day


def delivery_window(
    ordered_at: datetime,
    *,
    timezone: str,
    cutoff: str,
    holidays: Collection[date],
    min_business_days: int,
    max_business_days: int,
) -> tuple[date, date]:
    """Earliest and latest delivery dates promised for an order placed at `ordered_at`."""
    shipped = dispatch_date(ordered_at, timezone, cutoff, holidays)
    return (
        add_business_days(shipped, min_business_days, holidays),
        add_business_days(shipped, max_business_days, holidays),
    )
