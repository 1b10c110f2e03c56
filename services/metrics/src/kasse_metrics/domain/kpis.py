"""The funnel and KPI rules, computed from facts. Pure Python, no I/O.

Funnel rules (also in the service README):
1. Steps, in this order by default: viewed a product (ProductViewed) → added to cart (CartUpdated
   `added`, or `quantity_changed` with a positive delta) → began checkout (CheckoutStarted) → placed
   an order (OrderPlaced) → paid (PaymentCaptured) → shipped (ShipmentDispatched) → delivered
   (ShipmentDelivered). Every funnel event carries the session id; that is how a session's steps are
   joined whatever topic/partition they came from.
2. Ordered (closed) funnel: a session reaches step k at the earliest event time of a step-k event
   that is not before the time it reached step k-1. A session that never viewed is not in the funnel.
3. Conversion window: step k only counts when reached within `conversion_window` of the session's
   first step (default 30 days). Steps and window are configurable (`FunnelRules`).
4. A session counts at most once per step, however many events it sent.
5. Cohorts: in a window (5m/1h/24h or a per-minute bucket) the funnel counts the sessions whose FIRST
   step falls in the window, with every step they reached (so conversion never exceeds 100%).
   Windows are whole event-time minutes: the W-minute window ending at `at` holds the minutes
   (at - W, at], so late and out-of-order events land in the minute they happened.

Other KPIs (event-time windows, same minute rule):
- conversion rate: sessions that paid / sessions that viewed (from the funnel);
- revenue per currency: sum of PaymentCaptured amounts; average order value: revenue / captured
  payments, rounded half up to the minor unit;
- cart abandonment: carts whose first add-to-cart is in the window and that got CartAbandoned /
  carts whose first add-to-cart is in the window;
- payment failure rate: PaymentFailed not for fraud / (captured + failed); fraud blocks are counted
  apart: PaymentFailed with reason fraud_suspected / (captured + failed);
- refund rate: captured orders (capture in the window) with at least one PaymentRefunded / captured
  orders; refunded amount per currency by refund time;
- ratings: review count and average rating of ReviewSubmitted in the window;
- median seconds from first view to payment (sessions of the cohort that paid, funnel times) and
  from payment to dispatch (orders captured in the window that were dispatched);
- by product and by category: views, add-to-carts, purchases (orders placed containing it), units
  and conversion = purchases / views; by channel (the channel of the session's first view): the
  funnel of those sessions, conversion rate and revenue of their captured orders.
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import Any, NamedTuple

from kasse_common.errors import Unprocessable
from kasse_metrics.domain.facts import (
    Cancelled,
    Captured,
    CartAdded,
    CartChanged,
    CartLeft,
    CheckoutBegan,
    Delivered,
    Dispatched,
    Fact,
    Other,
    PayFailed,
    Placed,
    Refunded,
    Reviewed,
    Searched,
    Viewed,
    event_name,
)

STEP_EVENTS: dict[str, str] = {
    "viewed": "ProductViewed",
    "added_to_cart": "CartUpdated",
    "checkout_started": "CheckoutStarted",
    "order_placed": "OrderPlaced",
    "paid": "PaymentCaptured",
    "shipped": "ShipmentDispatched",
    "delivered": "ShipmentDelivered",
}
DEFAULT_STEPS: tuple[str, ...] = tuple(STEP_EVENTS)
CHANNELS = ("search", "recommendation", "campaign", "social", "email", "direct")
WINDOWS: dict[str, int | None] = {"all": None, "5m": 5, "1h": 60, "24h": 1440}


@dataclass(frozen=True)
class FunnelRules:
    steps: tuple[str, ...] = DEFAULT_STEPS
    conversion_window: timedelta = timedelta(days=30)

    def __post_init__(self) -> None:
        unknown = [s for s in self.steps if s not in STEP_EVENTS]
        if unknown or not self.steps:
            raise ValueError(f"unknown or no funnel steps {unknown}; known: {list(STEP_EVENTS)}")
        if len(set(self.steps)) != len(self.steps):
            raise ValueError("funnel steps must not repeat")
        if self.conversion_window <= timedelta(0):
            raise ValueError("conversion window must be positive")


def minute_of(t: datetime) -> int:
    """Minutes since the epoch, the bucket key."""
    return int(t.timestamp() // 60)


@dataclass(frozen=True)
class Window:
    """Whole minutes (first_minute, last_minute], inclusive of last; None bounds mean all time."""

    name: str
    first_minute: int | None  # inclusive
    last_minute: int | None  # inclusive

    def contains(self, minute: int) -> bool:
        if self.first_minute is not None and minute < self.first_minute:
            return False
        return not (self.last_minute is not None and minute > self.last_minute)

    @classmethod
    def named(cls, name: str, at: datetime | None) -> Window:
        if name not in WINDOWS:
            raise Unprocessable(f"unknown window {name!r}; use one of {list(WINDOWS)}")
        minutes = WINDOWS[name]
        if minutes is None:
            return cls(name, None, None if at is None else minute_of(at))
        end = minute_of(at or datetime.now(UTC))
        return cls(name, end - minutes + 1, end)

    @classmethod
    def minute(cls, minute: int) -> Window:
        return cls("1m", minute, minute)


@dataclass
class Session:
    step_times: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))  # epoch ms
    views: list[tuple[int, str, str]] = field(default_factory=list)  # (ms, event id, channel)

    def channel(self) -> str | None:
        return min(self.views)[2] if self.views else None


@dataclass
class Order:
    session_id: str | None = None
    placed: tuple[int, str] | None = None  # (ms, event id): earliest wins
    captured: list[tuple[int, int, str]] = field(default_factory=list)  # (ms, amount, currency)
    refunds: list[int] = field(default_factory=list)
    dispatched: list[int] = field(default_factory=list)


@dataclass
class Cart:
    adds: list[int] = field(default_factory=list)
    abandoned: bool = False


class Count(Enum):
    """Per-minute counters without a dimension."""

    EVENTS = "events"
    VIEWS = "views"
    SEARCHES = "searches"
    ADD_TO_CARTS = "add_to_carts"
    CARTS_ABANDONED = "carts_abandoned"
    ORDERS = "orders"
    ORDERS_CANCELLED = "orders_cancelled"
    PAYMENTS_CAPTURED = "payments_captured"
    PAYMENTS_FAILED = "payments_failed"
    PAYMENTS_FRAUD_BLOCKED = "payments_fraud_blocked"
    REFUNDS = "refunds"
    SHIPMENTS_DISPATCHED = "shipments_dispatched"
    SHIPMENTS_DELIVERED = "shipments_delivered"
    REVIEWS = "reviews"
    RATING_SUM = "rating_sum"


class Measure(Enum):
    """What a product or category breakdown row counts."""

    VIEWS = "views"
    ADD_TO_CARTS = "add_to_carts"
    PURCHASES = "purchases"
    UNITS = "units"


class MoneyMeasure(Enum):
    CAPTURED = "captured"  # payments captured in the currency
    REVENUE = "revenue"
    REFUNDED = "refunded"


class EventsOf(NamedTuple):
    event: str  # the contract event's class name


class ByItem(NamedTuple):
    measure: Measure
    dimension: str  # "product" | "category"
    name: str


class InCurrency(NamedTuple):
    measure: MoneyMeasure
    currency: str


CounterKey = Count | EventsOf | ByItem | InCurrency
Bucket = Counter[CounterKey]


def _rate(numerator: int, denominator: int) -> dict[str, Any]:
    return {
        "numerator": numerator,
        "denominator": denominator,
        "value": (numerator / denominator) if denominator else None,
    }


def _median(values: Sequence[float]) -> float | None:
    return float(statistics.median(values)) if values else None


def _round_half_up_div(total: int, count: int) -> int:
    return (2 * total + count) // (2 * count)


def _minute(ms: int) -> int:
    return ms // 60_000


class Projection:
    """All facts folded into entities (sessions, orders, carts) and per-minute counters.

    `apply` is commutative: facts may come in any order (partitions interleave, late events), and the
    result depends only on the set of facts. `apply_all` applies each event id once: a fact whose id
    was applied before (a redelivery, a duplicated publish, a replay, a segment read twice) is skipped.
    That is the dedupe; the ids are the state it needs. `apply` dispatches on the fact's type.
    """

    def __init__(self, rules: FunnelRules | None = None) -> None:
        self.rules = rules or FunnelRules()
        self.sessions: dict[str, Session] = defaultdict(Session)
        self.orders: dict[str, Order] = defaultdict(Order)
        self.carts: dict[str, Cart] = defaultdict(Cart)
        self.buckets: dict[int, Bucket] = defaultdict(Counter)
        self.facts_applied = 0
        self.event_ids: set[str] = set()
        self.version = 0  # grows with every applied batch; caches key on it
        self._cache: dict[Any, Any] = {}
        self._appliers: dict[type[Fact], Callable[[Any, Bucket], None]] = {
            Viewed: self._viewed,
            Searched: self._searched,
            CartAdded: self._cart_added,
            CartChanged: _nothing,
            CartLeft: self._cart_left,
            CheckoutBegan: self._checkout,
            Placed: self._placed,
            Cancelled: self._cancelled,
            Captured: self._captured,
            PayFailed: self._failed,
            Refunded: self._refunded,
            Dispatched: self._dispatched,
            Delivered: self._delivered,
            Reviewed: self._reviewed,
            Other: _nothing,
        }

    # -- write side ---------------------------------------------------------------------------
    def apply_all(self, facts: Iterable[Fact]) -> int:
        """Apply the facts whose event id is new; returns how many."""
        n = 0
        ids = self.event_ids
        for f in facts:
            if f.event_id in ids:
                continue
            ids.add(f.event_id)
            self.apply(f)
            n += 1
        if n:
            self.version += 1
            self._cache.clear()
        return n

    def apply(self, f: Fact) -> None:
        self.facts_applied += 1
        b = self.buckets[f.ms // 60_000]
        b[Count.EVENTS] += 1
        b[EventsOf(event_name(f))] += 1
        self._appliers[type(f)](f, b)

    def _step(self, f: Fact, step: str) -> None:
        if f.session:
            self.sessions[f.session].step_times[step].append(f.ms)

    def _viewed(self, f: Viewed, b: Bucket) -> None:
        if not f.session:
            return
        s = self.sessions[f.session]
        s.step_times["viewed"].append(f.ms)
        s.views.append((f.ms, f.event_id, f.channel))
        b[Count.VIEWS] += 1
        b[ByItem(Measure.VIEWS, "product", f.product)] += 1
        b[ByItem(Measure.VIEWS, "category", f.category)] += 1

    def _searched(self, f: Searched, b: Bucket) -> None:
        b[Count.SEARCHES] += 1

    def _cart_added(self, f: CartAdded, b: Bucket) -> None:
        self._step(f, "added_to_cart")
        self.carts[f.cart].adds.append(f.ms)
        b[Count.ADD_TO_CARTS] += 1
        if f.product is not None:
            b[ByItem(Measure.ADD_TO_CARTS, "product", f.product)] += 1
            b[ByItem(Measure.ADD_TO_CARTS, "category", f.category or "")] += 1

    def _cart_left(self, f: CartLeft, b: Bucket) -> None:
        self.carts[f.cart].abandoned = True
        b[Count.CARTS_ABANDONED] += 1

    def _checkout(self, f: CheckoutBegan, b: Bucket) -> None:
        self._step(f, "checkout_started")

    def _placed(self, f: Placed, b: Bucket) -> None:
        self._step(f, "order_placed")
        o = self.orders[f.order]
        o.session_id = o.session_id or f.session
        if o.placed is None or (f.ms, f.event_id) < o.placed:
            o.placed = (f.ms, f.event_id)
        b[Count.ORDERS] += 1
        for line in f.lines:
            b[ByItem(Measure.PURCHASES, "product", line.product)] += 1
            b[ByItem(Measure.UNITS, "product", line.product)] += line.quantity
            b[ByItem(Measure.PURCHASES, "category", line.category)] += 1
            b[ByItem(Measure.UNITS, "category", line.category)] += line.quantity

    def _cancelled(self, f: Cancelled, b: Bucket) -> None:
        b[Count.ORDERS_CANCELLED] += 1

    def _captured(self, f: Captured, b: Bucket) -> None:
        self._step(f, "paid")
        o = self.orders[f.order]
        o.session_id = o.session_id or f.session
        o.captured.append((f.ms, f.amount, f.currency))
        b[Count.PAYMENTS_CAPTURED] += 1
        b[InCurrency(MoneyMeasure.CAPTURED, f.currency)] += 1
        b[InCurrency(MoneyMeasure.REVENUE, f.currency)] += f.amount

    def _failed(self, f: PayFailed, b: Bucket) -> None:
        b[Count.PAYMENTS_FRAUD_BLOCKED if f.fraud else Count.PAYMENTS_FAILED] += 1

    def _refunded(self, f: Refunded, b: Bucket) -> None:
        self.orders[f.order].refunds.append(f.ms)
        b[Count.REFUNDS] += 1
        b[InCurrency(MoneyMeasure.REFUNDED, f.currency)] += f.amount

    def _dispatched(self, f: Dispatched, b: Bucket) -> None:
        self._step(f, "shipped")
        self.orders[f.order].dispatched.append(f.ms)
        b[Count.SHIPMENTS_DISPATCHED] += 1

    def _delivered(self, f: Delivered, b: Bucket) -> None:
        self._step(f, "delivered")
        b[Count.SHIPMENTS_DELIVERED] += 1

    def _reviewed(self, f: Reviewed, b: Bucket) -> None:
        b[Count.REVIEWS] += 1
        b[Count.RATING_SUM] += f.rating

    # -- read side ----------------------------------------------------------------------------
    CACHE_LIMIT = 256  # callers choose `at`: many distinct windows must not grow memory without bound

    def _remember(self, key: Any, value: Any) -> None:
        if len(self._cache) >= self.CACHE_LIMIT:
            self._cache.clear()
        self._cache[key] = value

    def counters(self, window: Window) -> Bucket:
        key = ("counters", window)
        if key not in self._cache:
            total: Bucket = Counter()
            for minute, bucket in self.buckets.items():
                if window.contains(minute):
                    total.update(bucket)
            self._remember(key, total)
        return self._cache[key]  # type: ignore[no-any-return]

    def event_counts(self, window: Window) -> dict[str, int]:
        """Events by type whose event time is in the window (cheap: sums the window's minute buckets)."""
        c = self.counters(window)
        return {k.event: v for k, v in sorted((k, v) for k, v in c.items() if isinstance(k, EventsOf))}

    def session_path(self, session: Session) -> list[int]:
        """The times (epoch ms) the session reached each step, in order, under the rules (empty: not in funnel)."""
        reached: list[int] = []
        window_ms = self.rules.conversion_window // timedelta(milliseconds=1)
        for step in self.rules.steps:
            times = session.step_times.get(step)
            if not times:
                break
            floor = reached[-1] if reached else None
            candidates = [t for t in times if floor is None or t >= floor]
            if not candidates:
                break
            t = min(candidates)
            if reached and t - reached[0] > window_ms:
                break
            reached.append(t)
        return reached

    def _paths(self) -> dict[str, list[int]]:
        key = ("paths",)
        if key not in self._cache:
            self._remember(key, {sid: p for sid, s in self.sessions.items() if (p := self.session_path(s))})
        return self._cache[key]  # type: ignore[no-any-return]

    def funnel(self, window: Window, channel: str | None = None) -> dict[str, Any]:
        steps = self.rules.steps
        reached = [0] * len(steps)
        for sid, path in self._paths().items():
            if not window.contains(_minute(path[0])):
                continue
            if channel is not None and self.sessions[sid].channel() != channel:
                continue
            for i in range(len(path)):
                reached[i] += 1
        first = reached[0]
        out = []
        for i, step in enumerate(steps):
            prev = reached[i - 1] if i else reached[0]
            out.append(
                {
                    "step": step,
                    "sessions": reached[i],
                    "conversion_from_first": (reached[i] / first) if first else None,
                    "conversion_from_previous": (reached[i] / prev) if prev else None,
                    "drop_off": (prev - reached[i]) if i else 0,
                }
            )
        return {"steps": out, "sessions": first}

    def report(self, window: Window) -> dict[str, Any]:
        key = ("report", window)
        if key in self._cache:
            return self._cache[key]  # type: ignore[no-any-return]
        c = self.counters(window)
        funnel = self.funnel(window)
        steps = self.rules.steps
        paid_index = steps.index("paid") if "paid" in steps else None
        viewed = funnel["sessions"]
        paid = funnel["steps"][paid_index]["sessions"] if paid_index is not None else 0
        money = [k for k in c if isinstance(k, InCurrency)]
        currencies = sorted(k.currency for k in money if k.measure is MoneyMeasure.REVENUE)
        revenue = {}
        for cur in currencies:
            paid_in, captured = c[InCurrency(MoneyMeasure.REVENUE, cur)], c[InCurrency(MoneyMeasure.CAPTURED, cur)]
            revenue[cur] = {
                "revenue": paid_in,
                "orders_paid": captured,
                "average_order_value": _round_half_up_div(paid_in, captured) if captured else None,
            }
        refunded = {
            k.currency: c[k]
            for k in sorted((k for k in money if k.measure is MoneyMeasure.REFUNDED), key=lambda k: k.currency)
        }
        attempts = c[Count.PAYMENTS_CAPTURED] + c[Count.PAYMENTS_FAILED] + c[Count.PAYMENTS_FRAUD_BLOCKED]
        carts_started = carts_abandoned = 0
        for cart in self.carts.values():
            if cart.adds and window.contains(_minute(min(cart.adds))):
                carts_started += 1
                carts_abandoned += int(cart.abandoned)
        captured_orders = refunded_orders = 0
        pay_to_ship: list[float] = []
        for order in self.orders.values():
            if not order.captured:
                continue
            captured_at = min(order.captured)[0]
            if not window.contains(_minute(captured_at)):
                continue
            captured_orders += 1
            refunded_orders += int(bool(order.refunds))
            if order.dispatched:
                pay_to_ship.append((min(order.dispatched) - captured_at) / 1000)
        view_to_pay: list[float] = []
        if paid_index is not None:
            for path in self._paths().values():
                if len(path) > paid_index and window.contains(_minute(path[0])):
                    view_to_pay.append((path[paid_index] - path[0]) / 1000)
        result = {
            "window": window.name,
            "funnel": funnel["steps"],
            "conversion_rate": _rate(paid, viewed),
            "revenue": revenue,
            "refunded": refunded,
            "cart_abandonment_rate": _rate(carts_abandoned, carts_started),
            "payment_failure_rate": _rate(c[Count.PAYMENTS_FAILED], attempts),
            "fraud_block_rate": _rate(c[Count.PAYMENTS_FRAUD_BLOCKED], attempts),
            "refund_rate": _rate(refunded_orders, captured_orders),
            "reviews": {
                "count": c[Count.REVIEWS],
                "average_rating": (c[Count.RATING_SUM] / c[Count.REVIEWS]) if c[Count.REVIEWS] else None,
            },
            "median_seconds_view_to_payment": _median(view_to_pay),
            "median_seconds_payment_to_shipment": _median(pay_to_ship),
            "events": c[Count.EVENTS],
        }
        self._remember(key, result)
        return result

    def breakdown(self, dimension: str, window: Window, limit: int = 50) -> list[dict[str, Any]]:
        if dimension == "channel":
            return self._channel_breakdown(window)
        if dimension not in ("product", "category"):
            raise Unprocessable(f"unknown breakdown {dimension!r}; use product, category or channel")
        c = self.counters(window)
        rows: dict[str, dict[str, int]] = defaultdict(
            lambda: {"views": 0, "add_to_carts": 0, "purchases": 0, "units": 0}
        )
        for k, v in c.items():
            if isinstance(k, ByItem) and k.dimension == dimension:
                rows[k.name][k.measure.value] += v
        out: list[dict[str, Any]] = [
            {dimension: name, **vals, "conversion": (vals["purchases"] / vals["views"]) if vals["views"] else None}
            for name, vals in rows.items()
        ]
        out.sort(key=lambda r: (-r["purchases"], -r["views"], r[dimension]))
        return out[:limit]

    def _channel_breakdown(self, window: Window) -> list[dict[str, Any]]:
        revenue: dict[str, Counter[str]] = defaultdict(Counter)
        for order in self.orders.values():
            if not order.captured or order.session_id is None or order.session_id not in self.sessions:
                continue
            t, amount, currency = min(order.captured)
            channel = self.sessions[order.session_id].channel()
            if channel and window.contains(_minute(t)):
                revenue[channel][currency] += amount
        out = []
        for channel in CHANNELS:
            f = self.funnel(window, channel=channel)
            paid = next((s["sessions"] for s in f["steps"] if s["step"] == "paid"), 0)
            out.append(
                {
                    "channel": channel,
                    "sessions": f["sessions"],
                    "funnel": f["steps"],
                    "conversion_rate": _rate(paid, f["sessions"]),
                    "revenue": dict(sorted(revenue[channel].items())),
                }
            )
        return out

    def timeseries(self, last_minute: int, minutes: int) -> list[dict[str, Any]]:
        """One point per minute, oldest first: event counters and the minute's session cohort."""
        cohort: dict[int, list[int]] = {}
        first = last_minute - minutes + 1
        for path in self._paths().values():
            m = _minute(path[0])
            if first <= m <= last_minute:
                row = cohort.setdefault(m, [0] * len(self.rules.steps))
                for i in range(len(path)):
                    row[i] += 1
        points = []
        for m in range(first, last_minute + 1):
            b: Bucket = self.buckets.get(m) or Counter()
            steps = cohort.get(m, [0] * len(self.rules.steps))
            points.append(
                {
                    "minute": datetime.fromtimestamp(m * 60, UTC).isoformat(),
                    "events": b[Count.EVENTS],
                    "views": b[Count.VIEWS],
                    "orders": b[Count.ORDERS],
                    "payments_captured": b[Count.PAYMENTS_CAPTURED],
                    "revenue": {
                        cur: b[InCurrency(MoneyMeasure.REVENUE, cur)]
                        for cur in sorted(
                            k.currency for k in b if isinstance(k, InCurrency) and k.measure is MoneyMeasure.REVENUE
                        )
                    },
                    "funnel": dict(zip(self.rules.steps, steps, strict=True)),
                }
            )
        return points


def _nothing(f: Fact, b: Bucket) -> None:
    """Facts counted as traffic only (in `apply`)."""
