from datetime import UTC, date, datetime

import pytest

from kasse_common.calendar import delivery_window, dispatch_date

pytestmark = pytest.mark.unit

BERLIN = "Europe/Berlin"
HOLIDAYS = {date(2026, 12, 25), date(2026, 12, 26)}


def test_before_cutoff_on_a_weekday_ships_the_same_day() -> None:
    # Tuesday 2026-11-24 10:00 UTC = 11:00 Berlin, cut-off 14:00
    assert dispatch_date(datetime(2026, 11, 24, 10, 0, tzinfo=UTC), BERLIN, "14:00", HOLIDAYS) == date(2026, 11, 24)


def test_after_cutoff_ships_the_next_business_day_in_the_origin_timezone() -> None:
    # 13:30 UTC = 14:30 Berlin: past the cut-off although it is before 14:00 UTC
    assert dispatch_date(datetime(2026, 11, 24, 13, 30, tzinfo=UTC), BERLIN, "14:00", HOLIDAYS) == date(2026, 11, 25)


def test_friday_after_cutoff_skips_the_weekend() -> None:
    window = delivery_window(
        datetime(2026, 11, 27, 16, 0, tzinfo=UTC),
        timezone=BERLIN,
        cutoff="14:00",
        holidays=HOLIDAYS,
        min_business_days=1,
        max_business_days=3,
    )
    # dispatched Monday 30th; +1 business day = Tue Dec 1st, +3 = Thu Dec 3rd
    assert window == (date(2026, 12, 1), date(2026, 12, 3))


def test_holidays_are_neither_dispatch_nor_delivery_days() -> None:
    # Thursday Dec 24th after cut-off: 25th/26th are holidays, 27th is Sunday -> dispatch Monday 28th
    window = delivery_window(
        datetime(2026, 12, 24, 15, 0, tzinfo=UTC),
        timezone=BERLIN,
        cutoff="14:00",
        holidays=HOLIDAYS,
        min_business_days=0,
        max_business_days=2,
    )
    assert window == (date(2026, 12, 28), date(2026, 12, 30))


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        dispatch_date(datetime(2026, 11, 24, 10, 0), BERLIN, "14:00", HOLIDAYS)
