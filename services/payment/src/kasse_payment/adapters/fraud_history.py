"""The fraud screening's history: per-key summary documents read by `_id`, counted in one pass.

Screening asks how many orders an email, an IP and a card had in the window, how many of them were
declined, and what the customer paid before. Asked of the `payments` collection that was one `$or`
query: indexed on MongoDB, but on FerretDB v1 (no secondary indexes) a whole read of every payment
ever made, ~6 s of store CPU per screening after 10,000 orders. Now each payment that was screened or
paid keeps a small *entry* (the fields below) in one summary document per key it counts under —
`email:<e>`, `ip:<ip>`, `card:<fp>`, `customer:<id>` (collection `payment_fraud_history`, field `e`,
one sub-document per order) — written before the payment's own write whenever its entry changes
(screened, card known, failed, paid). Screening reads those two to four documents by `_id` and
counts their entries with `count`, the same function the in-memory fake applies to whole documents.

Bounded: a summary keeps the entries decided within the window (at most `ENTRIES_CAP` of them, the
newest: far above every velocity limit, so no decision changes) plus the newest `amounts_limit`
paid ones; screening drops the rest (`prunable`) once `PRUNE_BATCH` have gathered. So a document
grows with a key's orders per hour, not with the shop's history.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from kasse_payment.application.ports import FraudCounts, HistoryQuestion
from kasse_payment.domain.fraud import DECLINE_REASONS

PAID = ("captured", "partially_refunded", "refunded")


ENTRIES = "e"  # the summary document's map: field per order -> entry
ENTRIES_CAP = 500  # entries within the window kept per key (the newest); every limit is far below
PRUNE_BATCH = 10  # entries to drop before a screening spends a write on dropping them
_PLAIN_FIELD = re.compile(r"^[A-Za-z0-9_-]{1,100}$")


def entry_of(state: Mapping[str, Any]) -> dict[str, Any] | None:
    """What the counts need of a payment document (`codec.to_document`'s fields), or None while it counts
    for nothing (neither screened nor paid). Statuses are reduced to what `count` tells apart, so the
    entry changes — and is written — only when a count could."""
    fraud = state.get("fraud")
    decided_at = fraud.get("decided_at") if isinstance(fraud, Mapping) else None
    status = state.get("status")
    paid = status in PAID
    if decided_at is None and not paid:
        return None
    failure = state.get("failure")
    failed = status == "failed" and isinstance(failure, Mapping)
    return {
        "_id": state.get("order_id") or state.get("_id"),
        "email": state.get("email"),
        "client_ip": state.get("client_ip"),
        "card_fingerprint": state.get("card_fingerprint"),
        "customer_id": state.get("customer_id"),
        "currency": state.get("currency"),
        "amount": state.get("amount"),
        "status": "captured" if paid else ("failed" if failed else "open"),
        "failure": {"reason": failure.get("reason")} if failed and isinstance(failure, Mapping) else None,
        "fraud": {"decided_at": decided_at},
    }


def summary_ids(email: str | None, client_ip: str | None, card: str | None, customer_id: str | None) -> list[str]:
    ids = [f"email:{email}"] if email else []
    if client_ip:
        ids.append(f"ip:{client_ip}")
    if card:
        ids.append(f"card:{card}")
    if customer_id:
        ids.append(f"customer:{customer_id}")
    return ids


def entry_keys(entry: Mapping[str, Any]) -> list[str]:
    """The summary documents an entry is kept in."""
    return summary_ids(
        entry.get("email"), entry.get("client_ip"), entry.get("card_fingerprint"), entry.get("customer_id")
    )


def question_keys(q: HistoryQuestion) -> list[str]:
    """The summary documents screening reads: every entry any count can need is in one of them."""
    return summary_ids(q.email, q.client_ip, q.card_fingerprint, q.customer_id)


def entry_field(order_id: str) -> str:
    """The entry's field name in the map: the order id, or its digest if it is no plain name."""
    if _PLAIN_FIELD.match(order_id):
        return order_id
    return "h" + hashlib.sha256(order_id.encode()).hexdigest()[:32]


def entries(summaries: Iterable[Mapping[str, Any] | None]) -> list[Mapping[str, Any]]:
    """The entries of the summaries read, each order once (it is in several: email, IP, ...)."""
    by_order: dict[Any, Mapping[str, Any]] = {}
    for summary in summaries:
        for entry in ((summary or {}).get(ENTRIES) or {}).values():
            if isinstance(entry, Mapping):
                by_order.setdefault(entry.get("_id"), entry)
    return list(by_order.values())


def same_entry(a: Mapping[str, Any] | None, b: Mapping[str, Any] | None) -> bool:
    """Equal as stored: the store keeps milliseconds and may give a naive (UTC) time back."""
    return bool(_comparable(a) == _comparable(b))


def _comparable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _comparable(v) for k, v in value.items()}
    if isinstance(value, datetime):
        at = value if value.tzinfo else value.replace(tzinfo=UTC)
        return int(at.timestamp() * 1000)
    return value


def prunable(summary: Mapping[str, Any], since: datetime, amounts_limit: int) -> list[str]:
    """Fields of entries no count needs any more: outside the window and not among the newest
    `amounts_limit` paid ones, and beyond the newest `ENTRIES_CAP` within the window."""
    items = [(f, e) for f, e in (summary.get(ENTRIES) or {}).items() if isinstance(e, Mapping)]
    oldest = datetime.min.replace(tzinfo=UTC)

    def newest_first(item: tuple[str, Mapping[str, Any]]) -> datetime:
        return _decided_at(item[1]) or oldest

    items.sort(key=newest_first, reverse=True)
    recent = [f for f, e in items if (_decided_at(e) or oldest) >= since]
    paid = [f for f, e in items if e.get("status") in PAID][:amounts_limit]
    keep = set(recent[:ENTRIES_CAP]) | set(paid)
    return [f for f, _ in items if f not in keep]


def _decided_at(doc: Mapping[str, Any]) -> datetime | None:
    fraud = doc.get("fraud")
    at = fraud.get("decided_at") if isinstance(fraud, Mapping) else None
    if isinstance(at, datetime) and at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return at if isinstance(at, datetime) else None


def count(docs: Iterable[Mapping[str, Any]], q: HistoryQuestion) -> FraudCounts:
    """The counts from payment documents or their entries (the same fields)."""
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
