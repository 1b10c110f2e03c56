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

import heapq
import statistics
from bisect import bisect_left, insort
from collections import Counter, OrderedDict, defaultdict
from collections.abc import Callable, Generator, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import IntEnum
from operator import attrgetter
from typing import Any

import msgspec

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
    Exposed,
    Fact,
    Named,
    Other,
    PayFailed,
    Placed,
    Refunded,
    Reviewed,
    Searched,
    Viewed,
    event_name,
)
from kasse_metrics.domain.idle_index import IdleIndex

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
MINUTES_PER_DAY = 1440
SNAPSHOT_SESSIONS_PER_SLICE = 5000  # ~6 ms of encoding each (measured: 205 ms CPU for 178k sessions)
SNAPSHOT_MINUTES_PER_SLICE = 100  # ~13 ms at ~480 counters a minute

FOLD_EVERY_MINUTES = 10  # of event time: state is bounded by the conversion window plus this


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


# IntEnums: hashed in C (a plain Enum's __hash__ is Python code, on the hot path of every fact).
class Count(IntEnum):
    """Per-minute counters without a dimension."""

    EVENTS = 1
    VIEWS = 2
    SEARCHES = 3
    ADD_TO_CARTS = 4
    CARTS_ABANDONED = 5
    ORDERS = 6
    ORDERS_CANCELLED = 7
    PAYMENTS_CAPTURED = 8
    PAYMENTS_FAILED = 9
    PAYMENTS_FRAUD_BLOCKED = 10
    REFUNDS = 11
    SHIPMENTS_DISPATCHED = 12
    SHIPMENTS_DELIVERED = 13
    REVIEWS = 14
    RATING_SUM = 15
    # Entity contributions, in the minute of the entity's first step / add / capture:
    CARTS_STARTED = 16  # carts whose first add-to-cart is in the minute
    CARTS_STARTED_ABANDONED = 17  # ... and that were abandoned
    ORDERS_CAPTURED = 18  # orders first captured in the minute
    ORDERS_CAPTURED_REFUNDED = 19  # ... and refunded


class Measure(IntEnum):
    """What a product or category breakdown row counts."""

    VIEWS = 1
    ADD_TO_CARTS = 2
    PURCHASES = 3
    UNITS = 4


class MoneyMeasure(IntEnum):
    CAPTURED = 1  # payments captured in the currency
    REVENUE = 2
    REFUNDED = 3


class _Key(msgspec.Struct, frozen=True, gc=False, array_like=True, tag=True):
    """A typed counter key: equal only to a key of the same type with the same fields (unlike tuples)."""


class EventsOf(_Key, frozen=True, gc=False):
    event: str  # the contract event's class name


class ByItem(_Key, frozen=True, gc=False):
    measure: Measure
    dimension: str  # "product" | "category"
    name: str


class InCurrency(_Key, frozen=True, gc=False):
    measure: MoneyMeasure
    currency: str


class CohortDepth(_Key, frozen=True, gc=False):
    """Sessions whose first step is in the minute and that reached `depth` steps."""

    depth: int
    channel: str | None  # the channel of the session's first view (None: the total over channels)


class ViewToPay(_Key, frozen=True, gc=False):
    ms: int  # first step → paid, of a session of the minute's cohort


class PayToShip(_Key, frozen=True, gc=False):
    ms: int  # first capture → first dispatch, of an order first captured in the minute


class ChannelRevenue(_Key, frozen=True, gc=False):
    channel: str
    currency: str


CounterKey = Count | EventsOf | ByItem | InCurrency | CohortDepth | ViewToPay | PayToShip | ChannelRevenue
Bucket = Counter[CounterKey]
Contribution = list[tuple[int, CounterKey, int]]  # (minute, key, amount)

# The counters every fact touches, bound once: an IntEnum member lookup (`Count.EVENTS`) costs ~0.4 µs
# on Python 3.11, a module global ~0.05 µs.
_EVENTS = Count.EVENTS
_VIEWS = Count.VIEWS

_STEP_OF: dict[type[Fact], str] = {
    Viewed: "viewed",
    CartAdded: "added_to_cart",
    CheckoutBegan: "checkout_started",
    Placed: "order_placed",
    Captured: "paid",
    Dispatched: "shipped",
    Delivered: "delivered",
}
# The facts that update a session's entity (`Projection._update_session`).
_SESSION_FACTS: frozenset[type[Fact]] = frozenset((*_STEP_OF, CartLeft, Refunded))


class OrderState(msgspec.Struct, gc=False):
    captured: tuple[int, int, str] | None = None  # earliest (ms, amount, currency)
    refunded: bool = False
    dispatched: int | None = None  # earliest dispatch, ms


class CartState(msgspec.Struct, gc=False):
    first_add: int | None = None
    abandoned: bool = False


class SessionState(msgspec.Struct, gc=False):
    """What a session's KPIs need: its step times, the channel of its first view, its orders and carts."""

    steps: list[list[int]]  # per funnel step (rules' order): the times it was reached, epoch ms
    last_ms: int  # latest event time: a session idle for a whole conversion window is folded
    first_view: tuple[int, str, str] | None = None  # (ms, event id, channel): earliest wins
    orders: dict[str, OrderState] = msgspec.field(default_factory=dict)
    carts: dict[str, CartState] = msgspec.field(default_factory=dict)
    # What it adds to the minute aggregates now (derived: `Projection.contribution`), kept so an
    # update only computes the new one.
    contributed: tuple[tuple[int, CounterKey, int], ...] = ()

    def channel(self) -> str | None:
        return self.first_view[2] if self.first_view else None


def _rate(numerator: int, denominator: int) -> dict[str, Any]:
    return {
        "numerator": numerator,
        "denominator": denominator,
        "value": (numerator / denominator) if denominator else None,
    }


def _median_of(c: Bucket, kind: type[ViewToPay] | type[PayToShip]) -> float | None:
    values: list[float] = []
    for k, n in c.items():
        if isinstance(k, kind) and n > 0:
            values.extend([k.ms / 1000] * n)
    return float(statistics.median(values)) if values else None


def _round_half_up_div(total: int, count: int) -> int:
    return (2 * total + count) // (2 * count)


def _minute(ms: int) -> int:
    return ms // 60_000


class IdWindow:
    """The event ids applied lately, for dedupe: at most `max_ids`, oldest forgotten first.

    Exactly-once across crashes comes from offsets stored with the state; the ids only need to catch
    re-publications (a relay redelivering, a producer retrying) and overlapping checkpoints, which
    arrive close behind the original. A copy arriving after `max_ids` newer events is counted again.
    """

    def __init__(self, max_ids: int) -> None:
        self.max_ids = max_ids
        # An OrderedDict, not a dict: forgetting the oldest id of a dict (`del d[next(iter(d))]`) scans
        # the entries deleted from its front before it, so once the window is full every new id cost
        # ~40 µs (64 % of the service's CPU past 200k events, measured with py-spy); popitem(last=False)
        # unlinks the oldest in O(1).
        self.ids: OrderedDict[str, None] = OrderedDict()
        self.forgotten = 0

    def add(self, event_id: str) -> bool:
        """True when new (and now remembered), False for a duplicate within the window."""
        ids = self.ids
        if event_id in ids:
            return False
        ids[event_id] = None
        if len(ids) > self.max_ids:
            ids.popitem(last=False)
            self.forgotten += 1
        return True

    def load(self, ids: Iterable[str]) -> None:
        """Hold these ids (oldest first), at most the window's newest."""
        self.ids = OrderedDict.fromkeys(list(ids)[-self.max_ids :])

    def __len__(self) -> int:
        return len(self.ids)


class Projection:
    """Sessions (with their orders and carts) folded incrementally into per-minute aggregates.

    Every fact adds to the counters of its minute (traffic, views by product, revenue, …) and
    updates its session's entity; the session's *contribution* to the minute aggregates (its cohort
    minute and depth, its orders' capture minute and refund, its carts' first add, the durations
    the medians need) is recomputed and the difference applied. So every KPI is read from the
    aggregates alone (`counters`), never by walking sessions, and aggregates of disjoint sets of
    sessions merge by addition (`merged`).

    Bounded: a session idle for a whole conversion window can no longer change the funnel; it is
    dropped (its contribution stays in the aggregates), as are ids past the dedupe window.

    `apply` is commutative for the facts it holds entities for: facts may come in any order
    (partitions interleave, late events). `apply_all` applies each event id once (within the window).
    """

    def __init__(
        self,
        rules: FunnelRules | None = None,
        dedupe_window_ids: int = 200_000,
        minute_resolution_minutes: int = 2 * MINUTES_PER_DAY,
    ) -> None:
        self.rules = rules or FunnelRules()
        self.minute_resolution_minutes = minute_resolution_minutes
        self.sessions: dict[str, SessionState] = {}
        self.buckets: dict[int, Bucket] = defaultdict(Counter)
        self.total: Bucket = Counter()  # the sum of every bucket: the "all" window without a sum
        self.facts_applied = 0
        self.ids = IdWindow(dedupe_window_ids)
        self.watermark_ms = 0  # the latest event time seen
        # product id -> (rank, event ms, name): what the breakdowns show beside the id
        self.product_names: dict[str, tuple[int, int, str]] = {}
        self.sessions_folded = 0
        self._last_fold_minute = 0
        # What changed since `take_changes` (the partial aggregates published for other instances).
        self.dirty_minutes: set[int] = set()
        self.names_dirty = False
        self.version = 0  # grows with every applied batch; caches key on it
        self._cache: dict[Any, Any] = {}
        # While a snapshot is encoded slice by slice (`snapshot_slices`): the sessions and minutes changed
        # since it began, encoded again in its last slice; `_epoch` grows when the state is replaced.
        self._touched_sessions: set[str] | None = None
        self._touched_minutes: set[int] | None = None
        self._epoch = 0
        self._step_index = {step: i for i, step in enumerate(self.rules.steps)}
        self._window_ms = self.rules.conversion_window // timedelta(milliseconds=1)
        self._paid_index = self._step_index.get("paid")
        self._events_of: dict[str, EventsOf] = {}  # one key per event type, not one per fact
        self._idle = IdleIndex(FOLD_EVERY_MINUTES * 60_000)  # the sessions a fold may forget

    # -- write side ---------------------------------------------------------------------------
    def apply_all(self, facts: Iterable[Fact]) -> int:
        """Apply the facts whose event id is new (within the dedupe window); returns how many."""
        n = 0
        add = self.ids.add
        for f in facts:
            if add(f.event_id):
                self.apply(f)
                n += 1
        if n:
            self.version += 1
            self._cache.clear()
            if _minute(self.watermark_ms) >= self._last_fold_minute + FOLD_EVERY_MINUTES:
                self.fold()
        return n

    def apply(self, f: Fact) -> None:
        self.facts_applied += 1
        ms = f.ms
        if ms > self.watermark_ms:
            self.watermark_ms = ms
        minute = ms // 60_000
        self.dirty_minutes.add(minute)
        b = self.buckets[minute]
        t = self.total
        b[_EVENTS] += 1
        t[_EVENTS] += 1
        name = event_name(f)
        key = self._events_of.get(name)
        if key is None:
            key = self._events_of[name] = EventsOf(name)
        b[key] += 1
        t[key] += 1
        kind = type(f)
        _APPLIERS[kind](self, f, b)
        if f.session is not None and kind in _SESSION_FACTS:
            self._update_session(f)

    def _count(self, b: Bucket, key: CounterKey, n: int = 1) -> None:
        b[key] += n
        self.total[key] += n

    def _update_session(self, f: Fact) -> None:
        sid = f.session
        if sid is None:
            return
        if self._touched_sessions is not None:
            self._touched_sessions.add(sid)
        s = self.sessions.get(sid)
        if s is None:
            s = self.sessions[sid] = SessionState([[] for _ in self.rules.steps], f.ms)
            self._idle.add(sid, f.ms)
        elif f.ms > s.last_ms:
            self._idle.moved(sid, s.last_ms, f.ms)
            s.last_ms = f.ms
        step = _STEP_OF.get(type(f))
        if step is not None and step in self._step_index:
            insort(s.steps[self._step_index[step]], f.ms)
        if isinstance(f, Viewed):
            view = (f.ms, f.event_id, f.channel)
            if s.first_view is None or view < s.first_view:
                s.first_view = view
        elif isinstance(f, CartAdded):
            cart = s.carts.setdefault(f.cart, CartState())
            if cart.first_add is None or f.ms < cart.first_add:
                cart.first_add = f.ms
        elif isinstance(f, CartLeft):
            s.carts.setdefault(f.cart, CartState()).abandoned = True
        elif isinstance(f, Captured):
            order = s.orders.setdefault(f.order, OrderState())
            capture = (f.ms, f.amount, f.currency)
            if order.captured is None or capture < order.captured:
                order.captured = capture
        elif isinstance(f, Refunded):
            s.orders.setdefault(f.order, OrderState()).refunded = True
        elif isinstance(f, Dispatched):
            order = s.orders.setdefault(f.order, OrderState())
            if order.dispatched is None or f.ms < order.dispatched:
                order.dispatched = f.ms
        before = s.contributed
        after = tuple(self.contribution(s))
        if after != before:
            s.contributed = after
            # Apply only the difference: most entries of a session's contribution (its carts, its
            # orders, its cohort minute) stay when one step is added. Counted as multisets (two carts
            # first added in one minute give two equal entries).
            added = list(after)
            removed = []
            for entry in before:
                try:
                    added.remove(entry)
                except ValueError:
                    removed.append(entry)
            for minute, key, n in removed:
                self._add(minute, key, -n)
            for minute, key, n in added:
                self._add(minute, key, n)

    def _idle_sessions(self, horizon: int) -> list[str]:
        """The sessions whose last event is before `horizon`."""
        return self._idle.idle(horizon, self.sessions, attrgetter("last_ms"))

    def _add(self, minute: int, key: CounterKey, n: int) -> None:
        self.dirty_minutes.add(minute)
        b = self.buckets[minute]
        v = b[key] + n
        if v:
            b[key] = v
        else:
            del b[key]
        v = self.total[key] + n
        if v:
            self.total[key] = v
        else:
            del self.total[key]

    def session_path(self, s: SessionState) -> list[int]:
        """The times (epoch ms) the session reached each step, in order, under the rules (empty: not in funnel)."""
        reached: list[int] = []
        for times in s.steps:
            if not times:
                break
            if reached:
                i = bisect_left(times, reached[-1])  # the earliest not before the previous step
                if i == len(times):
                    break
                t = times[i]
                if t - reached[0] > self._window_ms:
                    break
            else:
                t = times[0]
            reached.append(t)
        return reached

    def contribution(self, s: SessionState) -> Contribution:
        """What a session adds to the minute aggregates (see the class doc)."""
        out: Contribution = []
        path = self.session_path(s)
        channel = s.channel()
        if path:
            m0 = path[0] // 60_000
            out.append((m0, CohortDepth(len(path), None), 1))
            out.append((m0, CohortDepth(len(path), channel), 1))
            if self._paid_index is not None and len(path) > self._paid_index:
                out.append((m0, ViewToPay(path[self._paid_index] - path[0]), 1))
        for cart in s.carts.values():
            if cart.first_add is not None:
                m = cart.first_add // 60_000
                out.append((m, Count.CARTS_STARTED, 1))
                if cart.abandoned:
                    out.append((m, Count.CARTS_STARTED_ABANDONED, 1))
        for order in s.orders.values():
            if order.captured is None:
                continue
            t, amount, currency = order.captured
            m = t // 60_000
            out.append((m, Count.ORDERS_CAPTURED, 1))
            if order.refunded:
                out.append((m, Count.ORDERS_CAPTURED_REFUNDED, 1))
            if order.dispatched is not None:
                out.append((m, PayToShip(order.dispatched - t), 1))
            if channel is not None:
                out.append((m, ChannelRevenue(channel, currency), amount))
        return out

    def fold(self) -> int:
        """Bound the state (runs every FOLD_EVERY_MINUTES of event time):
        - forget the sessions idle for a whole conversion window: no later step of theirs could
          count (a step counts only within the window of the first); their contribution stays in
          the minute aggregates;
        - merge the minutes older than `minute_resolution_minutes` before the watermark into one
          bucket per day (kept at the day's first minute): windows that end that far back are
          answered at day resolution.
        Returns how many sessions were dropped."""
        watermark_minute = _minute(self.watermark_ms)
        self._last_fold_minute = watermark_minute
        horizon = self.watermark_ms - self._window_ms
        stale = self._idle_sessions(horizon)
        for sid in stale:
            del self.sessions[sid]
        if self._touched_sessions is not None:
            self._touched_sessions.update(stale)
        self.sessions_folded += len(stale)
        oldest_minute = watermark_minute - self.minute_resolution_minutes
        old = [m for m in self.buckets if m < oldest_minute and m % MINUTES_PER_DAY]
        for m in old:
            self.dirty_minutes.update((m, m - m % MINUTES_PER_DAY))
            day = self.buckets[m - m % MINUTES_PER_DAY]
            for key, n in self.buckets.pop(m).items():
                v = day[key] + n
                if v:
                    day[key] = v
                else:
                    del day[key]
        return len(stale)

    def _viewed(self, f: Viewed, b: Bucket) -> None:
        if not f.session:
            return
        self._count(b, _VIEWS)
        self._count(b, ByItem(Measure.VIEWS, "product", f.product))
        self._count(b, ByItem(Measure.VIEWS, "category", f.category))

    def _name(self, product: str, rank: int, ms: int, name: str) -> None:
        """The catalog's name (ProductChanged, rank 1) beats a cart or order line's; then the latest wins.
        Order-free, like every other update: the same facts give the same names in any order."""
        new = (rank, ms, name)
        current = self.product_names.get(product)
        if current is None or new > current:
            self.product_names[product] = new
            self.names_dirty = True

    def _named(self, f: Named, b: Bucket) -> None:
        self._name(f.product, 1, f.ms, f.name)

    def _searched(self, f: Searched, b: Bucket) -> None:
        self._count(b, Count.SEARCHES)

    def _cart_added(self, f: CartAdded, b: Bucket) -> None:
        self._count(b, Count.ADD_TO_CARTS)
        if f.product is not None:
            self._count(b, ByItem(Measure.ADD_TO_CARTS, "product", f.product))
            self._count(b, ByItem(Measure.ADD_TO_CARTS, "category", f.category or ""))
            if f.name:
                self._name(f.product, 0, f.ms, f.name)

    def _cart_left(self, f: CartLeft, b: Bucket) -> None:
        self._count(b, Count.CARTS_ABANDONED)

    def _placed(self, f: Placed, b: Bucket) -> None:
        self._count(b, Count.ORDERS)
        for line in f.lines:
            self._count(b, ByItem(Measure.PURCHASES, "product", line.product))
            self._count(b, ByItem(Measure.UNITS, "product", line.product), line.quantity)
            self._count(b, ByItem(Measure.PURCHASES, "category", line.category))
            self._count(b, ByItem(Measure.UNITS, "category", line.category), line.quantity)
            if line.name:
                self._name(line.product, 0, f.ms, line.name)

    def _cancelled(self, f: Cancelled, b: Bucket) -> None:
        self._count(b, Count.ORDERS_CANCELLED)

    def _captured(self, f: Captured, b: Bucket) -> None:
        self._count(b, Count.PAYMENTS_CAPTURED)
        self._count(b, InCurrency(MoneyMeasure.CAPTURED, f.currency))
        self._count(b, InCurrency(MoneyMeasure.REVENUE, f.currency), f.amount)

    def _failed(self, f: PayFailed, b: Bucket) -> None:
        self._count(b, Count.PAYMENTS_FRAUD_BLOCKED if f.fraud else Count.PAYMENTS_FAILED)

    def _refunded(self, f: Refunded, b: Bucket) -> None:
        self._count(b, Count.REFUNDS)
        self._count(b, InCurrency(MoneyMeasure.REFUNDED, f.currency), f.amount)

    def _dispatched(self, f: Dispatched, b: Bucket) -> None:
        self._count(b, Count.SHIPMENTS_DISPATCHED)

    def _delivered(self, f: Delivered, b: Bucket) -> None:
        self._count(b, Count.SHIPMENTS_DELIVERED)

    def _reviewed(self, f: Reviewed, b: Bucket) -> None:
        self._count(b, Count.REVIEWS)
        self._count(b, Count.RATING_SUM, f.rating)

    # -- snapshots ----------------------------------------------------------------------------
    def snapshot(self) -> bytes:
        """The whole state as one MessagePack blob (a restart loads it instead of replaying history)."""
        slices = self.snapshot_slices()
        while True:
            try:
                next(slices)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]

    def snapshot_slices(
        self, sessions_per_slice: int = SNAPSHOT_SESSIONS_PER_SLICE, minutes_per_slice: int = SNAPSHOT_MINUTES_PER_SLICE
    ) -> Generator[None, None, bytes]:
        """The snapshot encoded a slice at a time: the caller lets the event loop run at each `yield` (facts
        may be applied meanwhile), and the blob is returned by the last slice, as of that moment, exactly.

        Sessions and minutes are encoded in chunks; those changed after the snapshot began (tracked by
        `_update_session`, `fold` and `take_changes`) are encoded again in the last slice, with the rest
        of the state (ids, names, counters), and a restore applies the chunks in order. So the loop is
        held for one slice at a time (a few ms), not for the whole encode (~0.3 s CPU for a partition of
        800k events, seconds under load), and nothing needs copying. Raises `SnapshotAbandoned` when the
        state was replaced meanwhile (a restore)."""
        if self._touched_sessions is not None:
            raise RuntimeError("a snapshot of this projection is already being taken")
        touched_sessions: set[str] = set()
        touched_minutes: set[int] = set()
        self._touched_sessions, self._touched_minutes = touched_sessions, touched_minutes
        epoch = self._epoch
        try:
            session_chunks: list[msgspec.Raw] = []
            sids = list(self.sessions)
            for i in range(0, len(sids), sessions_per_slice):
                yield
                if self._epoch != epoch:
                    raise SnapshotAbandoned
                held = self.sessions
                chunk = {sid: st for sid in sids[i : i + sessions_per_slice] if (st := held.get(sid)) is not None}
                session_chunks.append(msgspec.Raw(_snapshot_encoder.encode(chunk)))
            bucket_chunks: list[msgspec.Raw] = []
            minutes = list(self.buckets)
            for i in range(0, len(minutes), minutes_per_slice):
                yield
                if self._epoch != epoch:
                    raise SnapshotAbandoned
                buckets = self.buckets
                rows = [(m, list(b.items())) for m in minutes[i : i + minutes_per_slice] if (b := buckets.get(m))]
                bucket_chunks.append(msgspec.Raw(_snapshot_encoder.encode(rows)))
            yield
            if self._epoch != epoch:
                raise SnapshotAbandoned
            # The last slice: nothing is applied from here to the end, so all of it is as of now.
            held = self.sessions
            changed = {sid: st for sid in touched_sessions if (st := held.get(sid)) is not None}
            session_chunks.append(msgspec.Raw(_snapshot_encoder.encode(changed)))
            touched_minutes.update(self.dirty_minutes)
            buckets = self.buckets
            rows = [(m, list(b.items())) for m in touched_minutes if (b := buckets.get(m))]
            bucket_chunks.append(msgspec.Raw(_snapshot_encoder.encode(rows)))
            return _snapshot_encoder.encode(
                ProjectionSnapshot(
                    session_chunks=session_chunks,
                    sessions_dropped=[sid for sid in touched_sessions if sid not in held],
                    bucket_chunks=bucket_chunks,
                    minutes_dropped=[m for m in touched_minutes if not buckets.get(m)],
                    ids=list(self.ids.ids),
                    watermark_ms=self.watermark_ms,
                    facts_applied=self.facts_applied,
                    sessions_folded=self.sessions_folded,
                    last_fold_minute=self._last_fold_minute,
                    product_names=self.product_names,
                )
            )
        finally:
            self._touched_sessions = self._touched_minutes = None

    def restore(self, blob: bytes) -> None:
        self.install(decode_snapshot(blob, self.ids.max_ids))

    def install(self, restored: RestoredState) -> None:
        """Take the state `decode_snapshot` built (off the event loop: this only assigns it)."""
        self.sessions = restored.sessions
        self.buckets = restored.buckets
        self.total = restored.total
        self.ids.ids = restored.ids
        self.watermark_ms = restored.watermark_ms
        self.facts_applied = restored.facts_applied
        self.sessions_folded = restored.sessions_folded
        self._last_fold_minute = restored.last_fold_minute
        self.product_names = restored.product_names
        self._idle.reset()
        self.dirty_minutes = set(self.buckets)
        self.names_dirty = True
        self.version += 1
        self._epoch += 1
        self._cache.clear()

    def take_changes(self, limit: int | None = None) -> tuple[dict[int, Bucket | None], bool]:
        """The minutes changed since the last call (None: merged away into its day) and whether any
        product name changed; clears both. With `limit`, at most that many minutes, the newest and the
        oldest (so a recent minute is not held back, nor an old one forever); the others stay changed."""
        dirty = self.dirty_minutes
        if limit is None or len(dirty) <= limit:
            taken, self.dirty_minutes = dirty, set()
        else:
            oldest = limit // 2
            taken = set(heapq.nlargest(limit - oldest, dirty)) | set(heapq.nsmallest(oldest, dirty))
            dirty -= taken
        changed = {m: self.buckets.get(m) for m in taken}
        if self._touched_minutes is not None:  # a snapshot under way encodes them again at its end
            self._touched_minutes.update(taken)
        names = self.names_dirty
        self.names_dirty = False
        return changed, names

    def load_partial(
        self, buckets: Mapping[int, Bucket | None], names: Mapping[str, tuple[int, int, str]] | None
    ) -> None:
        """Replace minutes (None: gone) and the names with another instance's published partial; the
        running total follows. Such a projection holds no sessions: it is read, never applied to."""
        for m, bucket in buckets.items():
            old = self.buckets.pop(m, None)
            if old:
                self.total.subtract(old)
            if bucket:
                self.buckets[m] = bucket
                self.total.update(bucket)
        self.total = +self.total
        if names is not None:
            self.product_names = dict(names)
        self.version += 1
        self._cache.clear()

    # -- read side ----------------------------------------------------------------------------
    CACHE_LIMIT = 256  # callers choose `at`: many distinct windows must not grow memory without bound

    def _remember(self, key: Any, value: Any) -> None:
        if len(self._cache) >= self.CACHE_LIMIT:
            self._cache.clear()
        self._cache[key] = value

    def counters(self, window: Window) -> Bucket:
        """The window's aggregates: the sum of its minutes (the running total for all time)."""
        key = ("counters", window)
        if key not in self._cache:
            first, last = window.first_minute, window.last_minute
            if first is None and last is None:
                total = Counter(self.total)
            elif first is not None and last is not None and last - first < len(self.buckets):
                # A short window (5m, 1h) looks up its own minutes instead of testing every minute held
                # (up to 2 days of minutes plus days per partition): the same buckets, since a bucket's key
                # is its minute (a day's: its first minute). Read after every applied batch (freshness).
                total = Counter()
                buckets = self.buckets
                for minute in range(first, last + 1):
                    bucket = buckets.get(minute)
                    if bucket:
                        total.update(bucket)
            else:
                total = Counter()
                for minute, bucket in self.buckets.items():
                    if window.contains(minute):
                        total.update(bucket)
            self._remember(key, total)
        return self._cache[key]  # type: ignore[no-any-return]

    def report(self, window: Window) -> dict[str, Any]:
        key = ("report", window)
        if key not in self._cache:
            self._remember(key, report_from(self.counters(window), self.rules, window.name))
        return self._cache[key]  # type: ignore[no-any-return]

    def funnel(self, window: Window, channel: str | None = None) -> dict[str, Any]:
        return funnel_from(self.counters(window), self.rules, channel)

    def event_counts(self, window: Window) -> dict[str, int]:
        key = ("events", window)
        if key not in self._cache:
            self._remember(key, event_counts_from(self.counters(window)))
        return self._cache[key]  # type: ignore[no-any-return]

    def breakdown(self, dimension: str, window: Window, limit: int = 50) -> list[dict[str, Any]]:
        return breakdown_from(self.counters(window), self.rules, dimension, limit, self.product_names)

    def timeseries(self, last_minute: int, minutes: int) -> list[dict[str, Any]]:
        return timeseries_from(self.buckets, self.rules, last_minute, minutes)


# -- KPIs from aggregates (one instance's, or the sum of several instances') --------------------


class ProjectionSnapshot(msgspec.Struct, gc=False, kw_only=True):
    # Format 3 holds the sessions and minutes as chunks encoded one slice at a time (`snapshot_slices`),
    # applied in order (a later chunk's entry replaces an earlier one's), then the dropped ones removed.
    # Format 2 (older snapshots) holds them whole in `sessions` and `buckets`; both still load.
    sessions: dict[str, SessionState] = msgspec.field(default_factory=dict)
    session_chunks: list[msgspec.Raw] = msgspec.field(default_factory=list)
    sessions_dropped: list[str] = msgspec.field(default_factory=list)
    buckets: list[tuple[int, list[tuple[CounterKey, int]]]] = msgspec.field(default_factory=list)
    bucket_chunks: list[msgspec.Raw] = msgspec.field(default_factory=list)
    minutes_dropped: list[int] = msgspec.field(default_factory=list)
    ids: list[str]
    watermark_ms: int
    facts_applied: int
    sessions_folded: int
    last_fold_minute: int
    product_names: dict[str, tuple[int, int, str]] = msgspec.field(default_factory=dict)


_snapshot_encoder = msgspec.msgpack.Encoder()


class SnapshotAbandoned(Exception):
    """The projection's state was replaced while its snapshot was being encoded."""


@dataclass
class RestoredState:
    sessions: dict[str, SessionState]
    buckets: defaultdict[int, Bucket]
    total: Bucket
    ids: OrderedDict[str, None]
    watermark_ms: int
    facts_applied: int
    sessions_folded: int
    last_fold_minute: int
    product_names: dict[str, tuple[int, int, str]]


def decode_snapshot(blob: bytes, max_ids: int) -> RestoredState:
    slices = decode_snapshot_slices(blob, max_ids)
    while True:
        try:
            next(slices)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]


def decode_snapshot_slices(blob: bytes, max_ids: int) -> Generator[None, None, RestoredState]:
    """A snapshot's state, built a slice at a time without touching any projection (`Projection.install`
    takes it): the caller lets the event loop run at each `yield`. One chunk of sessions or minutes per
    slice (a worker thread would not free the loop: each decode holds the GIL, and the hand-overs made a
    large restore several times slower, measured)."""
    snap = msgspec.msgpack.Decoder(ProjectionSnapshot).decode(blob)  # the chunks stay raw bytes
    sessions = snap.sessions
    sessions_decoder = msgspec.msgpack.Decoder(dict[str, SessionState])
    for chunk in snap.session_chunks:
        yield
        sessions.update(sessions_decoder.decode(chunk))
    for sid in snap.sessions_dropped:
        sessions.pop(sid, None)
    rows: dict[int, list[tuple[CounterKey, int]]] = dict(snap.buckets)
    rows_decoder = msgspec.msgpack.Decoder(list[tuple[int, list[tuple[CounterKey, int]]]])
    for chunk in snap.bucket_chunks:
        yield
        rows.update(rows_decoder.decode(chunk))
    for m in snap.minutes_dropped:
        rows.pop(m, None)
    buckets: defaultdict[int, Bucket] = defaultdict(Counter)
    total: Bucket = Counter()
    for n, (minute, items) in enumerate(rows.items()):
        if n % SNAPSHOT_MINUTES_PER_SLICE == 0:
            yield
        bucket = buckets[minute]
        for key, count in items:
            bucket[key] = count
            total[key] += count
    yield
    return RestoredState(
        sessions=sessions,
        buckets=buckets,
        total=+total,  # drop the keys that summed to zero
        ids=OrderedDict.fromkeys(snap.ids[-max_ids:]),
        watermark_ms=snap.watermark_ms,
        facts_applied=snap.facts_applied,
        sessions_folded=snap.sessions_folded,
        last_fold_minute=snap.last_fold_minute,
        product_names=snap.product_names,
    )


def merged_counters(parts: Iterable[Bucket]) -> Bucket:
    """The aggregates of disjoint sets of sessions (instances, partitions) merge by addition."""
    total: Bucket = Counter()
    for part in parts:
        total.update(part)
    return total


def funnel_from(c: Bucket, rules: FunnelRules, channel: str | None = None) -> dict[str, Any]:
    steps = rules.steps
    reached = [0] * len(steps)
    for k, n in c.items():
        if isinstance(k, CohortDepth) and k.channel == channel:
            for i in range(min(k.depth, len(steps))):
                reached[i] += n
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


def event_counts_from(c: Bucket) -> dict[str, int]:
    """Events by type whose event time is in the window."""
    return dict(sorted((k.event, v) for k, v in c.items() if isinstance(k, EventsOf)))


def report_from(c: Bucket, rules: FunnelRules, window_name: str) -> dict[str, Any]:
    funnel = funnel_from(c, rules)
    steps = rules.steps
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
    return {
        "window": window_name,
        "funnel": funnel["steps"],
        "conversion_rate": _rate(paid, viewed),
        "revenue": revenue,
        "refunded": refunded,
        "cart_abandonment_rate": _rate(c[Count.CARTS_STARTED_ABANDONED], c[Count.CARTS_STARTED]),
        "payment_failure_rate": _rate(c[Count.PAYMENTS_FAILED], attempts),
        "fraud_block_rate": _rate(c[Count.PAYMENTS_FRAUD_BLOCKED], attempts),
        "refund_rate": _rate(c[Count.ORDERS_CAPTURED_REFUNDED], c[Count.ORDERS_CAPTURED]),
        "reviews": {
            "count": c[Count.REVIEWS],
            "average_rating": (c[Count.RATING_SUM] / c[Count.REVIEWS]) if c[Count.REVIEWS] else None,
        },
        "median_seconds_view_to_payment": _median_of(c, ViewToPay),
        "median_seconds_payment_to_shipment": _median_of(c, PayToShip),
        "events": c[Count.EVENTS],
    }


def breakdown_from(
    c: Bucket,
    rules: FunnelRules,
    dimension: str,
    limit: int = 50,
    product_names: Mapping[str, tuple[int, int, str]] | None = None,
) -> list[dict[str, Any]]:
    if dimension == "channel":
        return _channel_breakdown(c, rules)
    if dimension not in ("product", "category"):
        raise Unprocessable(f"unknown breakdown {dimension!r}; use product, category or channel")
    rows: dict[str, dict[str, int]] = defaultdict(lambda: {"views": 0, "add_to_carts": 0, "purchases": 0, "units": 0})
    for k, v in c.items():
        if isinstance(k, ByItem) and k.dimension == dimension:
            rows[k.name][k.measure.name.lower()] += v
    out: list[dict[str, Any]] = [
        {dimension: name, **vals, "conversion": (vals["purchases"] / vals["views"]) if vals["views"] else None}
        for name, vals in rows.items()
    ]
    out.sort(key=lambda r: (-r["purchases"], -r["views"], r[dimension]))
    out = out[:limit]
    if dimension == "product":
        names = product_names or {}
        for row in out:
            named = names.get(row["product"])
            row["name"] = named[2] if named else None  # None: no event named it yet
    return out


def _channel_breakdown(c: Bucket, rules: FunnelRules) -> list[dict[str, Any]]:
    revenue: dict[str, dict[str, int]] = defaultdict(dict)
    for k, v in c.items():
        if isinstance(k, ChannelRevenue) and v:
            revenue[k.channel][k.currency] = v
    out = []
    for channel in CHANNELS:
        f = funnel_from(c, rules, channel=channel)
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


def timeseries_from(
    buckets: Mapping[int, Bucket], rules: FunnelRules, last_minute: int, minutes: int
) -> list[dict[str, Any]]:
    """One point per minute, oldest first: event counters and the minute's session cohort."""
    points = []
    empty: Bucket = Counter()
    for m in range(last_minute - minutes + 1, last_minute + 1):
        b = buckets.get(m) or empty
        steps = [s["sessions"] for s in funnel_from(b, rules)["steps"]]
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
                "funnel": dict(zip(rules.steps, steps, strict=True)),
            }
        )
    return points


def _nothing(_p: Projection, f: Fact, b: Bucket) -> None:
    """Facts counted as traffic only (in `apply`)."""


# Per fact type, the counting it does. Plain functions, not bound methods kept by each projection: those
# made every projection a reference cycle, freed only by the cyclic GC (never once frozen by `gc.freeze`).
_APPLIERS: dict[type[Fact], Callable[[Any, Any, Bucket], None]] = {
    Viewed: Projection._viewed,
    Searched: Projection._searched,
    CartAdded: Projection._cart_added,
    CartChanged: _nothing,
    CartLeft: Projection._cart_left,
    CheckoutBegan: _nothing,
    Placed: Projection._placed,
    Cancelled: Projection._cancelled,
    Captured: Projection._captured,
    PayFailed: Projection._failed,
    Refunded: Projection._refunded,
    Dispatched: Projection._dispatched,
    Delivered: Projection._delivered,
    Reviewed: Projection._reviewed,
    Named: Projection._named,
    Exposed: _nothing,  # counted as traffic; the experiment analysis reads it
    Other: _nothing,
}
