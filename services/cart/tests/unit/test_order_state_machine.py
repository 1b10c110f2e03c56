"""The order's state machine: every (state, fact) transition, duplicates, and every arrival order."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from datetime import UTC, date, datetime

import pytest

from kasse_cart.domain.order import RANK, CancelReason, Order, OrderStatus, Shipment
from kasse_common.errors import Conflict

pytestmark = pytest.mark.unit

AT = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
Fact = Callable[[Order], list]  # type: ignore[type-arg]

FACTS: dict[str, Fact] = {
    "reserve": lambda o: o.stock_reserved(AT),
    "reject": lambda o: o.stock_rejected(AT, "SKU-1: 0 of 1 available"),
    "capture": lambda o: o.payment_captured(AT, "pi_1"),
    "fail": lambda o: o.payment_failed(AT, "card_declined", "declined"),
    "created": lambda o: o.shipment_created(AT, Shipment("shp_1", "SimPost", "TRK", None, date(2026, 11, 24))),
    "dispatched": lambda o: o.shipment_dispatched(AT),
    "delivered": lambda o: o.shipment_delivered(AT),
    "partial_refund": lambda o: o.payment_refunded(AT, 500, False),
    "full_refund": lambda o: o.payment_refunded(AT, 2000, True),
    "customer_cancel": lambda o: o.cancel_by_customer(AT),
}

# How each state is reached from a fresh order.
REACH: dict[OrderStatus, list[str]] = {
    OrderStatus.PLACED: [],
    OrderStatus.STOCK_RESERVED: ["reserve"],
    OrderStatus.PAID: ["reserve", "capture"],
    OrderStatus.SHIPPED: ["reserve", "capture", "created", "dispatched"],
    OrderStatus.DELIVERED: ["reserve", "capture", "created", "dispatched", "delivered"],
    OrderStatus.PARTIALLY_REFUNDED: ["reserve", "capture", "created", "dispatched", "delivered", "partial_refund"],
    OrderStatus.REFUNDED: ["reserve", "capture", "created", "dispatched", "delivered", "full_refund"],
    OrderStatus.CANCELLED: ["reject"],
}

P, R, PD, S, D, PR, RF, C = (
    OrderStatus.PLACED,
    OrderStatus.STOCK_RESERVED,
    OrderStatus.PAID,
    OrderStatus.SHIPPED,
    OrderStatus.DELIVERED,
    OrderStatus.PARTIALLY_REFUNDED,
    OrderStatus.REFUNDED,
    OrderStatus.CANCELLED,
)
REFUSED = "409"

# state -> fact -> the state after it (REFUSED: the customer's cancel is refused with 409)
TRANSITIONS: dict[OrderStatus, dict[str, OrderStatus | str]] = {
    P: {"reserve": R, "reject": C, "capture": PD, "fail": C, "created": P, "dispatched": S, "delivered": D,
        "partial_refund": PR, "full_refund": RF, "customer_cancel": C},
    R: {"reserve": R, "reject": R, "capture": PD, "fail": C, "created": R, "dispatched": S, "delivered": D,
        "partial_refund": PR, "full_refund": RF, "customer_cancel": C},
    PD: {"reserve": PD, "reject": PD, "capture": PD, "fail": PD, "created": PD, "dispatched": S, "delivered": D,
         "partial_refund": PR, "full_refund": RF, "customer_cancel": C},
    S: {"reserve": S, "reject": S, "capture": S, "fail": S, "created": S, "dispatched": S, "delivered": D,
        "partial_refund": PR, "full_refund": RF, "customer_cancel": REFUSED},
    D: {"reserve": D, "reject": D, "capture": D, "fail": D, "created": D, "dispatched": D, "delivered": D,
        "partial_refund": PR, "full_refund": RF, "customer_cancel": REFUSED},
    PR: {"reserve": PR, "reject": PR, "capture": PR, "fail": PR, "created": PR, "dispatched": PR, "delivered": PR,
         "partial_refund": PR, "full_refund": RF, "customer_cancel": REFUSED},
    RF: {"reserve": RF, "reject": RF, "capture": RF, "fail": RF, "created": RF, "dispatched": RF, "delivered": RF,
         "partial_refund": RF, "full_refund": RF, "customer_cancel": REFUSED},
    C: {"reserve": C, "reject": C, "capture": C, "fail": C, "created": C, "dispatched": C, "delivered": C,
        "partial_refund": C, "full_refund": C, "customer_cancel": REFUSED},
}  # fmt: skip


def order_in(state: OrderStatus) -> Order:
    order = Order(order_id="ord_1", placed_at=AT, total=2000, currency="EUR")
    for fact in REACH[state]:
        FACTS[fact](order)
    assert order.status is state
    return order


def test_the_table_covers_every_state_and_fact() -> None:
    assert set(TRANSITIONS) == set(OrderStatus)
    assert all(set(row) == set(FACTS) for row in TRANSITIONS.values())


@pytest.mark.parametrize(
    ("state", "fact", "expected"),
    [(state, fact, expected) for state, row in TRANSITIONS.items() for fact, expected in row.items()],
    ids=lambda v: str(v),
)
def test_transition(state: OrderStatus, fact: str, expected: OrderStatus | str) -> None:
    order = order_in(state)
    if expected == REFUSED:
        with pytest.raises(Conflict):
            FACTS[fact](order)
        assert order.status is state
        return
    FACTS[fact](order)
    assert order.status is expected
    assert RANK[order.status] >= RANK[state]  # never backwards
    # The same fact again (a duplicate delivery) changes nothing.
    if fact != "customer_cancel":
        FACTS[fact](order)
        assert order.status is expected


def test_a_stock_rejection_cancels_once_and_unpaid() -> None:
    order = order_in(P)
    (notice,) = order.stock_rejected(AT, "SKU-1: 0 of 2 available")
    assert (notice.reason, notice.was_paid) == (CancelReason.STOCK_REJECTED, False)
    assert notice.detail == "SKU-1: 0 of 2 available"
    assert order.stock_rejected(AT, "again") == []


@pytest.mark.parametrize(
    ("reason", "expected"),
    [("card_declined", CancelReason.PAYMENT_FAILED), ("fraud_suspected", CancelReason.FRAUD_SUSPECTED)],
)
def test_a_payment_failure_cancels_with_its_reason(reason: str, expected: CancelReason) -> None:
    order = order_in(R)
    (notice,) = order.payment_failed(AT, reason, "")
    assert notice.reason is expected and notice.was_paid is False
    assert order.payment_failed(AT, reason, "") == []


def test_a_customer_cancel_after_payment_says_it_was_paid() -> None:
    order = order_in(PD)
    FACTS["created"](order)  # booked with the carrier but not dispatched: still cancellable
    (notice,) = order.cancel_by_customer(AT)
    assert (notice.reason, notice.was_paid) == (CancelReason.CUSTOMER_REQUEST, True)


def test_a_capture_after_an_unpaid_cancel_announces_the_cancel_again_as_paid_once() -> None:
    order = order_in(R)
    (first,) = order.cancel_by_customer(AT)
    assert first.was_paid is False
    (again,) = order.payment_captured(AT, "pi_late")
    assert again.was_paid is True and again.reason is CancelReason.CUSTOMER_REQUEST
    assert again.announcement != first.announcement  # a distinct OrderCancelled event id
    assert order.payment_captured(AT, "pi_late") == []
    assert order.status is C


HAPPY = ["reserve", "capture", "created", "dispatched", "delivered"]


@pytest.mark.parametrize("arrival", list(itertools.permutations(HAPPY)), ids="-".join)
def test_the_happy_path_in_any_arrival_order_with_duplicates_ends_delivered(arrival: tuple[str, ...]) -> None:
    order = order_in(P)
    seen = [order.status]
    for i, fact in enumerate(arrival):
        assert FACTS[fact](order) == []
        FACTS[arrival[i // 2]](order)  # an earlier record delivered again
        seen.append(order.status)
    assert order.status is D
    assert [RANK[s] for s in seen] == sorted(RANK[s] for s in seen)


@pytest.mark.parametrize(
    "arrival", list(itertools.permutations(["reserve", "reject", "fail", "capture"])), ids="-".join
)
def test_conflicting_facts_in_any_order_end_in_one_terminal_answer(arrival: tuple[str, ...]) -> None:
    order = order_in(P)
    notices = []
    for fact in arrival:
        notices += FACTS[fact](order)
        notices += FACTS[fact](order)  # duplicates
    # Whatever came first decides; a cancelled order stays cancelled, a paid one stays paid. The
    # invariant that matters for money: a cancelled order that was paid is announced as paid, once.
    if order.status is C:
        assert 1 <= len(notices) <= 2 and len({n.announcement for n in notices}) == len(notices)
        assert notices[-1].was_paid is order.is_paid
    else:
        assert order.status is PD and notices == []
