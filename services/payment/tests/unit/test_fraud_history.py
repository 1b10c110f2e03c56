"""Screening's history counted in one pass (adapters/fraud_history.py), as the six queries counted it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from kasse_payment.adapters.fraud_history import candidates_query, count
from kasse_payment.application.ports import FraudCounts, HistoryQuestion

pytestmark = pytest.mark.unit

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
Q = HistoryQuestion(
    order_id="o-now",
    email="erika@example.com",
    client_ip="203.0.113.7",
    card_fingerprint="fp_1",
    customer_id=None,
    currency="EUR",
    since=NOW - timedelta(hours=1),
)


def doc(oid: str, *, minutes_ago: float | None = 5, status: str = "captured", **fields: object) -> dict[str, object]:
    base: dict[str, object] = {
        "_id": oid,
        "email": "other@example.com",
        "client_ip": "198.51.100.1",
        "card_fingerprint": None,
        "customer_id": None,
        "currency": "EUR",
        "amount": 1000,
        "status": status,
        "failure": None,
        "fraud": None if minutes_ago is None else {"decided_at": NOW - timedelta(minutes=minutes_ago)},
    }
    return {**base, **fields}


def test_each_count_as_its_own_query_gave_it() -> None:
    docs = [
        doc("o-now", email=Q.email, client_ip=Q.client_ip, status="pending"),  # the one being screened: not earlier
        doc("o1", email=Q.email, amount=2000),
        doc("o2", client_ip=Q.client_ip, status="failed", failure={"reason": "card_declined"}),
        doc("o3", card_fingerprint="fp_1", client_ip=Q.client_ip),
        doc("o4", email=Q.email, minutes_ago=120, amount=3000),  # outside the window, still in the history
        doc("o5", email=Q.email, status="failed", failure={"reason": "fraud_suspected"}),  # not a decline
        doc("o6", email=Q.email, minutes_ago=None, status="pending"),  # never screened
        doc("o7", email=Q.email, currency="USD", amount=9999),  # other currency
    ]
    assert count(docs, Q) == FraudCounts(
        orders_by_email=3,  # o1, o5, o7 (o4 is outside the window, o6 never screened)
        orders_by_ip=2,
        orders_by_card=1,
        declines_by_email=0,
        declines_by_ip=1,
        captured_amounts=(2000, 3000),
    )


def test_a_naive_decision_time_is_read_as_utc_and_the_query_asks_every_branch() -> None:
    naive = doc("o1", email=Q.email)
    naive["fraud"] = {"decided_at": (NOW - timedelta(minutes=5)).replace(tzinfo=None)}
    assert count([naive], Q).orders_by_email == 1
    branches = candidates_query(Q)["$or"]
    assert [sorted(b) for b in branches] == [
        ["email", "fraud.decided_at"],
        ["client_ip", "fraud.decided_at"],
        ["card_fingerprint", "fraud.decided_at"],
        ["currency", "email", "status"],
    ]
