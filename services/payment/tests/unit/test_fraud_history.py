"""Screening's history counted in one pass (adapters/fraud_history.py), as the six queries counted it, from
whole payment documents or from the small entries the per-key summaries keep of them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from kasse_payment.adapters.fraud_history import (
    ENTRIES,
    ENTRIES_CAP,
    count,
    entries,
    entry_field,
    entry_keys,
    entry_of,
    prunable,
    question_keys,
    same_entry,
)
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


def test_a_naive_decision_time_is_read_as_utc() -> None:
    naive = doc("o1", email=Q.email)
    naive["fraud"] = {"decided_at": (NOW - timedelta(minutes=5)).replace(tzinfo=None)}
    assert count([naive], Q).orders_by_email == 1


def history_docs() -> list[dict[str, object]]:
    return [
        doc("o-now", email=Q.email, client_ip=Q.client_ip, status="pending"),
        doc("o1", email=Q.email, amount=2000),
        doc("o2", client_ip=Q.client_ip, status="failed", failure={"reason": "card_declined"}),
        doc("o3", card_fingerprint="fp_1", client_ip=Q.client_ip, status="requires_action"),
        doc("o4", email=Q.email, minutes_ago=120, amount=3000, status="refunded"),
        doc("o5", email=Q.email, status="failed", failure={"reason": "fraud_suspected"}),
        doc("o6", email=Q.email, minutes_ago=None, status="pending"),
        doc("o7", email=Q.email, currency="USD", amount=9999, status="partially_refunded"),
        doc("o8", email=Q.email, minutes_ago=None, amount=500),  # paid, never screened (held, approved)
        doc("o9", customer_id="c-1", email="c1@example.com", amount=700),
    ]


def summaries_of(docs: list[dict[str, object]]) -> dict[str, dict[str, object]]:
    """What the Mongo adapter's writes leave: each entry under each of its keys."""
    out: dict[str, dict[str, object]] = {}
    for d in docs:
        e = entry_of({**d, "order_id": d["_id"]})
        if e is None:
            continue
        for key in entry_keys(e):
            out.setdefault(key, {"_id": key, ENTRIES: {}})[ENTRIES][entry_field(str(e["_id"]))] = e  # type: ignore[index]
    return out


@pytest.mark.parametrize(
    "q",
    [
        Q,
        HistoryQuestion("o-x", "c1@example.com", None, None, "c-1", "EUR", NOW - timedelta(hours=1)),
        HistoryQuestion("o-y", "nobody@example.com", "192.0.2.1", None, None, "EUR", NOW - timedelta(hours=1)),
    ],
)
def test_the_summaries_a_question_reads_count_what_the_whole_collection_counts(q: HistoryQuestion) -> None:
    docs = history_docs()
    summaries = summaries_of(docs)
    read = [summaries.get(key) for key in question_keys(q)]
    assert count(entries(read), q) == count(docs, q)
    assert len(read) <= 4


def test_an_entry_is_made_only_once_screened_or_paid_and_changes_only_when_a_count_could() -> None:
    pending = {**doc("o1", minutes_ago=None, status="pending"), "order_id": "o1"}
    assert entry_of(pending) is None
    screened = entry_of({**pending, "fraud": {"decided_at": NOW}})
    authorizing = entry_of({**pending, "fraud": {"decided_at": NOW}, "status": "authorizing"})
    assert screened is not None and same_entry(screened, authorizing)
    captured = entry_of({**pending, "fraud": {"decided_at": NOW}, "status": "captured"})
    refunded = entry_of({**pending, "fraud": {"decided_at": NOW}, "status": "refunded"})
    assert not same_entry(screened, captured) and same_entry(captured, refunded)
    # As the store gives it back: milliseconds, naive UTC.
    stored = {**screened, "fraud": {"decided_at": NOW.replace(tzinfo=None)}}
    assert same_entry(screened, stored)
    assert entry_keys(screened) == ["email:other@example.com", "ip:198.51.100.1"]


def test_odd_order_ids_make_safe_field_names() -> None:
    assert entry_field("ord_0a1b") == "ord_0a1b"
    odd = entry_field("a.b$c")
    assert "." not in odd and not odd.startswith("$") and odd != entry_field("a.b$d")


def test_a_summary_keeps_the_window_and_the_newest_paid_entries_and_drops_the_rest() -> None:
    def e(oid: str, minutes_ago: float, status: str = "open") -> dict[str, object]:
        return {"_id": oid, "status": status, "fraud": {"decided_at": NOW - timedelta(minutes=minutes_ago)}}

    summary = {
        ENTRIES: {
            "new": e("new", 5),
            "old": e("old", 120),
            "old-paid": e("old-paid", 300, "captured"),
            "older-paid": e("older-paid", 400, "captured"),
            "oldest-paid": e("oldest-paid", 500, "captured"),
        }
    }
    assert sorted(prunable(summary, Q.since, amounts_limit=2)) == ["old", "oldest-paid"]
    busy = {ENTRIES: {f"o{i}": e(f"o{i}", i / 100) for i in range(ENTRIES_CAP + 3)}}
    assert sorted(prunable(busy, Q.since, amounts_limit=2)) == sorted(
        f"o{i}" for i in range(ENTRIES_CAP, ENTRIES_CAP + 3)
    )
