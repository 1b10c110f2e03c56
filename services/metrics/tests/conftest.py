"""The scripted shopping scenario shared by the unit and integration tests, with its expected KPIs.

The expectations are counted from the script (who reached which step, when, for how much), not
from the service's code: an independent oracle.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from kasse_common.envelope import OutgoingRecord, encode
from kasse_contracts.base import Channel, Money
from kasse_contracts.events import (
    CartAbandoned,
    CartAction,
    CartUpdated,
    CheckoutStarted,
    PaymentCaptured,
    PaymentFailed,
    PaymentRefunded,
    ProductViewed,
    ReviewSubmitted,
    ShipmentDelivered,
    ShipmentDispatched,
)
from kasse_testkit.samples import line_item, order_placed

STEPS = ["viewed", "added_to_cart", "checkout_started", "order_placed", "paid", "shipped", "delivered"]
WINDOW_MINUTES: dict[str, int | None] = {"all": None, "5m": 5, "1h": 60, "24h": 1440}


def eur(amount: int) -> Money:
    return Money(amount=amount, currency="EUR")


@dataclass(frozen=True)
class Shopper:
    name: str
    channel: Channel
    minutes_ago: int  # first view, whole minutes before the scenario's last minute
    reach: int  # funnel steps reached, 1..7
    payment: str | None = None  # "captured", "declined", "fraud"
    refunded: bool = False
    abandoned: bool = False
    amount: int = 1000
    pay_after_s: int = 20
    ship_after_pay_s: int = 10
    views: int = 1
    product: str = "prod_a"
    category: str = "kitchen"
    late: bool = False  # published after everything else


SHOPPERS = (
    Shopper("s1", Channel.SEARCH, 1, 7, "captured", amount=5000, pay_after_s=20, ship_after_pay_s=10),
    Shopper("s2", Channel.SEARCH, 2, 6, "captured", amount=3000, pay_after_s=25, ship_after_pay_s=20),
    Shopper("s3", Channel.EMAIL, 3, 5, "captured", refunded=True, amount=2001, pay_after_s=30),
    Shopper(
        "s4",
        Channel.EMAIL,
        8,
        7,
        "captured",
        amount=4000,
        pay_after_s=21,
        ship_after_pay_s=15,
        product="prod_b",
        category="garden",
    ),
    Shopper("s5", Channel.DIRECT, 9, 4, "declined", product="prod_b", category="garden"),
    Shopper("s6", Channel.DIRECT, 2, 4, "fraud"),
    Shopper("s7", Channel.SEARCH, 4, 3, product="prod_b", category="garden"),
    Shopper("s8", Channel.SOCIAL, 20, 2, abandoned=True),
    Shopper("s9", Channel.CAMPAIGN, 30, 2, product="prod_c", category="toys"),
    Shopper("s10", Channel.DIRECT, 3, 1, views=2, product="prod_c", category="toys"),
    Shopper("s11", Channel.RECOMMENDATION, 120, 5, "captured", amount=7000, pay_after_s=40, late=True),
)
FIRST_HALF = ("s1", "s2", "s3", "s4", "s5", "s6")
RATINGS = (5, 4, 3)


class Scenario:
    """Events of SHOPPERS plus three reviews, as encoded records with fixed event ids."""

    def __init__(self, last_minute: datetime, token: str) -> None:
        self.base = last_minute.replace(second=0, microsecond=0)
        self.at = self.base + timedelta(seconds=59)  # any instant of the last minute
        self.token = token
        self.by_shopper: dict[str, list[OutgoingRecord]] = {}
        for s in SHOPPERS:
            self.by_shopper[s.name] = [self._encode(e) for e in self._events(s)]
        self.reviews = [
            self._encode(
                ReviewSubmitted(
                    occurred_at=self.base - timedelta(minutes=1),
                    product_id="prod_a",
                    review_id=f"rev{i}-{token}",
                    rating=r,
                    verified_purchase=True,
                    rating_average=float(r),
                    rating_count=i + 1,
                )
            )
            for i, r in enumerate(RATINGS)
        ]

    def _encode(self, event: Any) -> OutgoingRecord:
        return encode(event, service="scenario", trace_headers={})

    def first_view(self, s: Shopper) -> datetime:
        return self.base - timedelta(minutes=s.minutes_ago)

    def _events(self, s: Shopper) -> list[Any]:
        v = self.first_view(s)
        sid, cart, order = f"{s.name}-{self.token}", f"cart-{s.name}-{self.token}", f"ord-{s.name}-{self.token}"
        line = line_item(s.product, 1, s.amount, category=s.category)
        events: list[Any] = [
            ProductViewed(
                occurred_at=v + timedelta(seconds=i),
                session_id=sid,
                product_id=s.product,
                sku=f"SKU-{s.product}",
                category=s.category,
                price=eur(s.amount),
                channel=s.channel,
            )
            for i in range(s.views)
        ]
        if s.reach >= 2:
            events.append(
                CartUpdated(
                    occurred_at=v + timedelta(seconds=5),
                    session_id=sid,
                    cart_id=cart,
                    action=CartAction.ADDED,
                    line=line,
                    quantity_delta=1,
                    items=[line],
                    subtotal=eur(s.amount),
                    total=eur(s.amount),
                )
            )
        if s.abandoned:
            events.append(
                CartAbandoned(
                    occurred_at=v + timedelta(seconds=50),
                    session_id=sid,
                    cart_id=cart,
                    item_count=1,
                    subtotal=eur(s.amount),
                    last_activity_at=v,
                )
            )
        if s.reach >= 3:
            events.append(
                CheckoutStarted(
                    occurred_at=v + timedelta(seconds=10),
                    session_id=sid,
                    cart_id=cart,
                    items=[line],
                    subtotal=eur(s.amount),
                    total=eur(s.amount),
                )
            )
        if s.reach >= 4:
            placed = order_placed(
                order, [line], session_id=sid, cart_id=cart, occurred_at=v + timedelta(seconds=15), channel=s.channel
            )
            events.append(placed)
        paid_at = v + timedelta(seconds=s.pay_after_s)
        if s.payment == "captured":
            events.append(
                PaymentCaptured(
                    occurred_at=paid_at,
                    session_id=sid,
                    order_id=order,
                    payment_intent_id=f"pi-{order}",
                    amount=eur(s.amount),
                )
            )
        elif s.payment in ("declined", "fraud"):
            reason = "card_declined" if s.payment == "declined" else "fraud_suspected"
            events.append(
                PaymentFailed(occurred_at=paid_at, session_id=sid, order_id=order, reason=reason, amount=eur(s.amount))
            )
        if s.refunded:
            events.append(
                PaymentRefunded(
                    occurred_at=v + timedelta(seconds=55),
                    session_id=sid,
                    order_id=order,
                    refund_id=f"re-{order}",
                    payment_intent_id=f"pi-{order}",
                    amount=eur(s.amount),
                    total_refunded=eur(s.amount),
                    full=True,
                )
            )
        shipped_at = paid_at + timedelta(seconds=s.ship_after_pay_s)
        if s.reach >= 6:
            events.append(
                ShipmentDispatched(
                    occurred_at=shipped_at,
                    session_id=sid,
                    order_id=order,
                    shipment_id=f"shp-{order}",
                    carrier="SimPost",
                    tracking_number="T1",
                    dispatched_at=shipped_at,
                )
            )
        if s.reach >= 7:
            events.append(
                ShipmentDelivered(
                    occurred_at=shipped_at + timedelta(seconds=1),
                    session_id=sid,
                    order_id=order,
                    shipment_id=f"shp-{order}",
                    delivered_at=shipped_at + timedelta(seconds=1),
                )
            )
        return events

    # -- what to publish ----------------------------------------------------------------------
    def first_part(self) -> list[OutgoingRecord]:
        out = [r for name in FIRST_HALF for r in self.by_shopper[name]]
        return out + self.reviews[:2]

    def second_part(self) -> list[OutgoingRecord]:
        """The rest, each shopper's events in reverse order (out of order), then the late shopper."""
        rest = [s for s in SHOPPERS if s.name not in FIRST_HALF and not s.late]
        out = [r for s in rest for r in reversed(self.by_shopper[s.name])]
        out += self.reviews[2:]
        out += [r for s in SHOPPERS if s.late for r in reversed(self.by_shopper[s.name])]
        return out

    def duplicates(self) -> list[OutgoingRecord]:
        """Records published a second time with the same event id (a relay redelivery)."""
        s1 = self.by_shopper["s1"]
        captured = next(r for r in s1 if r.event_type == PaymentCaptured.event_type)
        return [s1[0], captured, self.reviews[0]]

    def all_records(self) -> list[OutgoingRecord]:
        return self.first_part() + self.second_part()

    # -- the oracle ---------------------------------------------------------------------------
    def in_window(self, t: datetime, window: str) -> bool:
        minutes = WINDOW_MINUTES[window]
        if minutes is None:
            return True
        return self.base - timedelta(minutes=minutes - 1) <= t.replace(second=0, microsecond=0) <= self.base

    def expected(self, window: str) -> dict[str, Any]:
        cohort = [s for s in SHOPPERS if self.in_window(self.first_view(s), window)]
        reached = [sum(1 for s in cohort if s.reach > i) for i in range(len(STEPS))]
        captured = [s for s in cohort if s.payment == "captured"]  # paid in the view's minute
        attempts = [s for s in cohort if s.payment]
        carts = [s for s in cohort if s.reach >= 2]
        revenue = sum(s.amount for s in captured)
        events = [r for r in self.all_records() if self.in_window(_record_time(r), window)]
        reviews = [r for r in RATINGS if self.in_window(self.base - timedelta(minutes=1), window)]
        return {
            "funnel": reached,
            "conversion": (len(captured), reached[0]),
            "revenue": revenue,
            "orders_paid": len(captured),
            "aov": (2 * revenue + len(captured)) // (2 * len(captured)) if captured else None,
            "refunded": sum(s.amount for s in captured if s.refunded),
            "refund_rate": (sum(1 for s in captured if s.refunded), len(captured)),
            "payment_failure_rate": (sum(1 for s in attempts if s.payment == "declined"), len(attempts)),
            "fraud_block_rate": (sum(1 for s in attempts if s.payment == "fraud"), len(attempts)),
            "cart_abandonment_rate": (sum(1 for s in carts if s.abandoned), len(carts)),
            "reviews": (len(reviews), (sum(reviews) / len(reviews)) if reviews else None),
            "median_view_to_payment": statistics.median([s.pay_after_s for s in captured]) if captured else None,
            "median_payment_to_shipment": (
                statistics.median([s.ship_after_pay_s for s in captured if s.reach >= 6])
                if any(s.reach >= 6 for s in captured)
                else None
            ),
            "events": len(events),
        }


def _record_time(record: OutgoingRecord) -> datetime:
    import json

    return datetime.fromisoformat(json.loads(record.value)["occurred_at"])


def check_report(report: dict[str, Any], expected: dict[str, Any]) -> None:
    """Every KPI of one window, exactly."""
    assert [s["sessions"] for s in report["funnel"]] == expected["funnel"], report["funnel"]
    assert [s["step"] for s in report["funnel"]] == STEPS
    first = expected["funnel"][0]
    for i, step in enumerate(report["funnel"]):
        prev = expected["funnel"][i - 1] if i else first
        assert step["drop_off"] == (prev - expected["funnel"][i] if i else 0)
        assert step["conversion_from_first"] == (expected["funnel"][i] / first if first else None)
        assert step["conversion_from_previous"] == (expected["funnel"][i] / prev if prev else None)

    def rate(name: str, pair: tuple[int, int]) -> None:
        got = report[name]
        assert (got["numerator"], got["denominator"]) == pair, (name, got)
        assert got["value"] == (pair[0] / pair[1] if pair[1] else None), (name, got)

    rate("conversion_rate", expected["conversion"])
    rate("refund_rate", expected["refund_rate"])
    rate("payment_failure_rate", expected["payment_failure_rate"])
    rate("fraud_block_rate", expected["fraud_block_rate"])
    rate("cart_abandonment_rate", expected["cart_abandonment_rate"])
    if expected["orders_paid"]:
        assert report["revenue"] == {
            "EUR": {
                "revenue": expected["revenue"],
                "orders_paid": expected["orders_paid"],
                "average_order_value": expected["aov"],
            }
        }
    else:
        assert report["revenue"] == {}
    assert report["refunded"] == ({"EUR": expected["refunded"]} if expected["refunded"] else {})
    count, avg = expected["reviews"]
    assert report["reviews"] == {"count": count, "average_rating": avg}
    assert report["median_seconds_view_to_payment"] == expected["median_view_to_payment"]
    assert report["median_seconds_payment_to_shipment"] == expected["median_payment_to_shipment"]
    assert report["events"] == expected["events"]


@pytest.fixture
def scenario_for() -> Callable[[str], Scenario]:
    def build(token: str) -> Scenario:
        return Scenario(datetime.now(UTC), token)

    return build


@pytest.fixture
def assert_report_matches() -> Callable[[dict[str, Any], dict[str, Any]], None]:
    return check_report
