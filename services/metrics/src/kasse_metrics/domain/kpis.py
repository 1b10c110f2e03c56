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
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from kasse_common.errors import Unprocessable
from kasse_metrics.domain.facts import Fact

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
    step_times: dict[str, list[datetime]] = field(default_factory=lambda: defaultdict(list))
    views: list[tuple[datetime, str, str]] = field(default_factory=list)  # (time, event id, channel)

    def channel(self) -> str | None:
        return min(self.views)[2] if self.views else None


@dataclass
class Order:
    session_id: str | None = None
    placed: tuple[datetime, str] | None = None  # (time, event id): earliest wins
    captured: list[tuple[datetime, int, str]] = field(default_factory=list)  # (time, amount, currency)
    refunds: list[datetime] = field(default_factory=list)
    dispatched: list[datetime] = field(default_factory=list)


@dataclass
class Cart:
    adds: list[datetime] = field(default_factory=list)
    abandoned: bool = False


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


class Projection:
    """All facts folded into entities (sessions, orders, carts) and per-minute counters.

    `apply` is commutative: facts may come in any order (partitions interleave, late events), and the
    result depends only on the set of facts. `apply_all` applies each event id once: a fact whose id
    was applied before (a redelivery, a duplicated publish, a replay, a segment read twice) is skipped.
    That is the dedupe; the ids are the state it needs.
    """

    def __init__(self, rules: FunnelRules | None = None) -> None:
        self.rules = rules or FunnelRules()
        self.sessions: dict[str, Session] = defaultdict(Session)
        self.orders: dict[str, Order] = defaultdict(Order)
        self.carts: dict[str, Cart] = defaultdict(Cart)
        self.buckets: dict[int, Counter[str]] = defaultdict(Counter)
        self.facts_applied = 0
        self.event_ids: set[str] = set()
        self.version = 0  # grows with every applied batch; caches key on it
        self._cache: dict[Any, Any] = {}

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
        t = f.occurred_at
        b = self.buckets[minute_of(t)]
        b["events"] += 1
        b[f"events|{f.kind}"] += 1
        d = f.data
        sid = f.session_id
        if f.kind == "ProductViewed" and sid:
            s = self.sessions[sid]
            s.step_times["viewed"].append(t)
            s.views.append((t, f.event_id, d["channel"]))
            b["views"] += 1
            b[f"views|product|{d['product']}"] += 1
            b[f"views|category|{d['category']}"] += 1
        elif f.kind == "ProductSearched":
            b["searches"] += 1
        elif f.kind == "CartUpdated":
            if d.get("add"):
                if sid:
                    self.sessions[sid].step_times["added_to_cart"].append(t)
                self.carts[d["cart"]].adds.append(t)
                b["add_to_carts"] += 1
                if "product" in d:
                    b[f"add_to_carts|product|{d['product']}"] += 1
                    b[f"add_to_carts|category|{d['category']}"] += 1
        elif f.kind == "CartAbandoned":
            self.carts[d["cart"]].abandoned = True
            b["carts_abandoned"] += 1
        elif f.kind == "CheckoutStarted" and sid:
            self.sessions[sid].step_times["checkout_started"].append(t)
        elif f.kind == "OrderPlaced":
            if sid:
                self.sessions[sid].step_times["order_placed"].append(t)
            o = self.orders[d["order"]]
            o.session_id = o.session_id or sid
            if o.placed is None or (t, f.event_id) < o.placed:
                o.placed = (t, f.event_id)
            b["orders"] += 1
            for line in d["lines"]:
                product, category, qty = line["product"], line["category"], line["quantity"]
                b[f"purchases|product|{product}"] += 1
                b[f"units|product|{product}"] += qty
                b[f"purchases|category|{category}"] += 1
                b[f"units|category|{category}"] += qty
        elif f.kind == "PaymentCaptured":
            if sid:
                self.sessions[sid].step_times["paid"].append(t)
            o = self.orders[d["order"]]
            o.session_id = o.session_id or sid
            o.captured.append((t, d["amount"], d["currency"]))
            b["payments_captured"] += 1
            b[f"captured|{d['currency']}"] += 1
            b[f"revenue|{d['currency']}"] += d["amount"]
        elif f.kind == "PaymentFailed":
            b["payments_fraud_blocked" if d["fraud"] else "payments_failed"] += 1
        elif f.kind == "PaymentRefunded":
            self.orders[d["order"]].refunds.append(t)
            b["refunds"] += 1
            b[f"refunded|{d['currency']}"] += d["amount"]
        elif f.kind == "ShipmentDispatched":
            if sid:
                self.sessions[sid].step_times["shipped"].append(t)
            self.orders[d["order"]].dispatched.append(t)
            b["shipments_dispatched"] += 1
        elif f.kind == "ShipmentDelivered":
            if sid:
                self.sessions[sid].step_times["delivered"].append(t)
            b["shipments_delivered"] += 1
        elif f.kind == "ReviewSubmitted":
            b["reviews"] += 1
            b["rating_sum"] += d["rating"]
        elif f.kind == "OrderCancelled":
            b["orders_cancelled"] += 1

    # -- read side ----------------------------------------------------------------------------
    CACHE_LIMIT = 256  # callers choose `at`: many distinct windows must not grow memory without bound

    def _remember(self, key: Any, value: Any) -> None:
        if len(self._cache) >= self.CACHE_LIMIT:
            self._cache.clear()
        self._cache[key] = value

    def counters(self, window: Window) -> Counter[str]:
        key = ("counters", window)
        if key not in self._cache:
            total: Counter[str] = Counter()
            for minute, bucket in self.buckets.items():
                if window.contains(minute):
                    total.update(bucket)
            self._remember(key, total)
        return self._cache[key]  # type: ignore[no-any-return]

    def event_counts(self, window: Window) -> dict[str, int]:
        """Events by type whose event time is in the window (cheap: sums the window's minute buckets)."""
        c = self.counters(window)
        return {k.split("|", 1)[1]: v for k, v in sorted(c.items()) if k.startswith("events|")}

    def session_path(self, session: Session) -> list[datetime]:
        """The times the session reached each step, in order, under the rules (empty: not in funnel)."""
        reached: list[datetime] = []
        for step in self.rules.steps:
            times = session.step_times.get(step)
            if not times:
                break
            floor = reached[-1] if reached else None
            candidates = [t for t in times if floor is None or t >= floor]
            if not candidates:
                break
            t = min(candidates)
            if reached and t - reached[0] > self.rules.conversion_window:
                break
            reached.append(t)
        return reached

    def _paths(self) -> dict[str, list[datetime]]:
        key = ("paths",)
        if key not in self._cache:
            self._remember(key, {sid: p for sid, s in self.sessions.items() if (p := self.session_path(s))})
        return self._cache[key]  # type: ignore[no-any-return]

    def funnel(self, window: Window, channel: str | None = None) -> dict[str, Any]:
        steps = self.rules.steps
        reached = [0] * len(steps)
        for sid, path in self._paths().items():
            if not window.contains(minute_of(path[0])):
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
        currencies = sorted(k.split("|", 1)[1] for k in c if k.startswith("revenue|"))
        revenue = {
            cur: {
                "revenue": c[f"revenue|{cur}"],
                "orders_paid": c[f"captured|{cur}"],
                "average_order_value": _round_half_up_div(c[f"revenue|{cur}"], c[f"captured|{cur}"])
                if c[f"captured|{cur}"]
                else None,
            }
            for cur in currencies
        }
        refunded = {k.split("|", 1)[1]: v for k, v in sorted(c.items()) if k.startswith("refunded|")}
        attempts = c["payments_captured"] + c["payments_failed"] + c["payments_fraud_blocked"]
        carts_started = carts_abandoned = 0
        for cart in self.carts.values():
            if cart.adds and window.contains(minute_of(min(cart.adds))):
                carts_started += 1
                carts_abandoned += int(cart.abandoned)
        captured_orders = refunded_orders = 0
        pay_to_ship: list[float] = []
        for order in self.orders.values():
            if not order.captured:
                continue
            captured_at = min(order.captured)[0]
            if not window.contains(minute_of(captured_at)):
                continue
            captured_orders += 1
            refunded_orders += int(bool(order.refunds))
            if order.dispatched:
                pay_to_ship.append((min(order.dispatched) - captured_at).total_seconds())
        view_to_pay: list[float] = []
        if paid_index is not None:
            for path in self._paths().values():
                if len(path) > paid_index and window.contains(minute_of(path[0])):
                    view_to_pay.append((path[paid_index] - path[0]).total_seconds())
        result = {
            "window": window.name,
            "funnel": funnel["steps"],
            "conversion_rate": _rate(paid, viewed),
            "revenue": revenue,
            "refunded": refunded,
            "cart_abandonment_rate": _rate(carts_abandoned, carts_started),
            "payment_failure_rate": _rate(c["payments_failed"], attempts),
            "fraud_block_rate": _rate(c["payments_fraud_blocked"], attempts),
            "refund_rate": _rate(refunded_orders, captured_orders),
            "reviews": {
                "count": c["reviews"],
                "average_rating": (c["rating_sum"] / c["reviews"]) if c["reviews"] else None,
            },
            "median_seconds_view_to_payment": _median(view_to_pay),
            "median_seconds_payment_to_shipment": _median(pay_to_ship),
            "events": c["events"],
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
            parts = k.split("|", 2)
            if (
                len(parts) == 3
                and parts[1] == dimension
                and parts[0] in ("views", "add_to_carts", "purchases", "units")
            ):
                rows[parts[2]][parts[0]] += v
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
            if channel and window.contains(minute_of(t)):
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
            m = minute_of(path[0])
            if first <= m <= last_minute:
                row = cohort.setdefault(m, [0] * len(self.rules.steps))
                for i in range(len(path)):
                    row[i] += 1
        points = []
        for m in range(first, last_minute + 1):
            b = self.buckets.get(m, Counter())
            steps = cohort.get(m, [0] * len(self.rules.steps))
            points.append(
                {
                    "minute": datetime.fromtimestamp(m * 60, UTC).isoformat(),
                    "events": b["events"],
                    "views": b["views"],
                    "orders": b["orders"],
                    "payments_captured": b["payments_captured"],
                    "revenue": {k.split("|", 1)[1]: v for k, v in sorted(b.items()) if k.startswith("revenue|")},
                    "funnel": dict(zip(self.rules.steps, steps, strict=True)),
                }
            )
        return points
