"""The fraud screening's history, counted from payment documents in one pass.

Screening used to ask the store six questions (orders per email, IP and card, declines per email and
IP, the customer's captured amounts); on FerretDB v1 each was a full read of the collection, six per
order in a burst. The Mongo adapter now reads the candidates with one `$or` query (each branch on an
index in MongoDB) and this counts them; the in-memory fake counts its documents the same way.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from kasse_payment.application.ports import FraudCounts, HistoryQuestion
from kasse_payment.domain.fraud import DECLINE_REASONS

PAID = ("captured", "partially_refunded", "refunded")
PROJECTION = {
    "email": 1,
    "client_ip": 1,
    "card_fingerprint": 1,
    "customer_id": 1,
    "currency": 1,
    "amount": 1,
    "status": 1,
    "failure.reason": 1,
    "fraud.decided_at": 1,
}


def candidates_query(q: HistoryQuestion) -> dict[str, Any]:
    """Every document any of the counts can need."""
    recent = {"fraud.decided_at": {"$gte": q.since}}
    branches: list[dict[str, Any]] = [{"email": q.email, **recent}]
    if q.client_ip:
        branches.append({"client_ip": q.client_ip, **recent})
    if q.card_fingerprint:
        branches.append({"card_fingerprint": q.card_fingerprint, **recent})
    who = {"customer_id": q.customer_id} if q.customer_id else {"email": q.email}
    branches.append({**who, "currency": q.currency, "status": {"$in": list(PAID)}})
    return {"$or": branches}


def _decided_at(doc: Mapping[str, Any]) -> datetime | None:
    fraud = doc.get("fraud")
    at = fraud.get("decided_at") if isinstance(fraud, Mapping) else None
    if isinstance(at, datetime) and at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return at if isinstance(at, datetime) else None


def count(docs: Iterable[Mapping[str, Any]], q: HistoryQuestion) -> FraudCounts:
    screened = {"email": 0, "client_ip": 0, "card_fingerprint": 0}
    declined = {"email": 0, "client_ip": 0}
    amounts: list[int] = []
    wanted = {"email": q.email, "client_ip": q.client_ip, "card_fingerprint": q.card_fingerprint}
    who_key, who = ("customer_id", q.customer_id) if q.customer_id else ("email", q.email)
    for doc in docs:
        at = _decided_at(doc)
        if at is not None and at >= q.since:
            for key, value in wanted.items():
                if value and doc.get(key) == value:
                    if doc.get("_id") != q.order_id:
                        screened[key] += 1
                    failure = doc.get("failure") or {}
                    if key in declined and doc.get("status") == "failed" and failure.get("reason") in DECLINE_REASONS:
                        declined[key] += 1
        if (
            doc.get(who_key) == who
            and doc.get("currency") == q.currency
            and doc.get("status") in PAID
            and len(amounts) < q.amounts_limit
        ):
            amounts.append(int(doc["amount"]))
    return FraudCounts(
        orders_by_email=screened["email"],
        orders_by_ip=screened["client_ip"],
        orders_by_card=screened["card_fingerprint"],
        declines_by_email=declined["email"],
        declines_by_ip=declined["client_ip"],
        captured_amounts=tuple(amounts),
    )
