"""Payment <-> document. Field names are stable: the admin queries and indexes use them."""

from __future__ import annotations

from typing import Any

from kasse_payment.domain.fraud import FraudDecision, FraudOutcome, FraudReason
from kasse_payment.domain.payment import (
    Failed,
    HistoryEntry,
    OrderFacts,
    OrderLineFacts,
    Payment,
    PaymentStatus,
    Refund,
    RefundLine,
    StripeNotice,
)


def to_document(p: Payment) -> dict[str, Any]:
    """The fields to $set (the kit adds `_id`, `_version` and the outbox)."""
    o = p.order
    return {
        "order_id": p.order_id,
        "status": p.status.value,
        "order": None
        if o is None
        else {
            "amount": o.amount,
            "currency": o.currency,
            "email": o.email,
            "session_id": o.session_id,
            "customer_id": o.customer_id,
            "client_ip": o.client_ip,
            "billing_country": o.billing_country,
            "shipping_country": o.shipping_country,
            "lines": [
                {"product_id": li.product_id, "sku": li.sku, "quantity": li.quantity, "paid": li.paid} for li in o.lines
            ],
        },
        # Flat copies for the velocity queries and their indexes.
        "email": o.email if o else None,
        "customer_id": o.customer_id if o else None,
        "client_ip": o.client_ip if o else None,
        "currency": o.currency if o else None,
        "amount": o.amount if o else None,
        "card_fingerprint": p.card_fingerprint,
        "stock_reserved": p.stock_reserved,
        "order_cancelled": p.order_cancelled,
        "intent_id": p.intent_id,
        "intent_status": p.intent_status,
        "client_secret": p.client_secret,
        "intent_cancel_pending": p.intent_cancel_pending,
        "fraud": None
        if p.fraud is None
        else {
            "outcome": p.fraud.outcome.value,
            "score": p.fraud.score,
            "reasons": [{"rule": r.rule, "detail": r.detail, "points": r.points} for r in p.fraud.reasons],
            "decided_at": p.fraud.decided_at,
            "reviewed": p.fraud.reviewed_by_admin,
        },
        "failure": None
        if p.failure is None
        else {
            "reason": p.failure.reason,
            "decline_code": p.failure.decline_code,
            "message": p.failure.message,
            "intent_id": p.failure.intent_id,
        },
        "refunds": [
            {
                "key": r.key,
                "amount": r.amount,
                "reason": r.reason,
                "state": r.state,
                "refund_id": r.refund_id,
                "lines": [
                    {"product_id": li.product_id, "sku": li.sku, "quantity": li.quantity, "amount": li.amount}
                    for li in r.lines
                ],
                "shipping": r.shipping,
            }
            for r in p.refunds
        ],
        "refunded_total": p.refunded_total,
        "pending_notices": [
            {
                "event_id": n.event_id,
                "type": n.type,
                "order_id": n.order_id,
                "intent_id": n.intent_id,
                "amount": n.amount,
                "failure_code": n.failure_code,
                "decline_code": n.decline_code,
                "failure_message": n.failure_message,
                "card_fingerprint": n.card_fingerprint,
                "refund_ids": list(n.refund_ids),
                "refund_keys": list(n.refund_keys),
            }
            for n in p.pending_notices
        ],
        "transient_failures": p.transient_failures,
        "held_at": p.held_at,
        "review_reason": p.review_reason,
        "received_amount": p.received_amount,
        "refund_awaits_shipping": p.refund_awaits_shipping,
        "shipping_verdict": p.shipping_verdict,
        "create_attempts": p.create_attempts,
        "retry_at": p.retry_at,
        "needs_work": p.needs_work,
        "history": [{"at": h.at, "status": h.status, "note": h.note} for h in p.history],
    }


def from_document(doc: dict[str, Any]) -> Payment:
    o = doc.get("order")
    fraud = doc.get("fraud")
    failure = doc.get("failure")
    return Payment(
        order_id=doc["_id"],
        version=doc["_version"],
        status=PaymentStatus(doc["status"]),
        order=None
        if o is None
        else OrderFacts(
            amount=o["amount"],
            currency=o["currency"],
            email=o["email"],
            session_id=o["session_id"],
            customer_id=o.get("customer_id"),
            client_ip=o.get("client_ip"),
            billing_country=o.get("billing_country"),
            shipping_country=o.get("shipping_country"),
            lines=tuple(
                OrderLineFacts(li["product_id"], li["sku"], li["quantity"], li["paid"]) for li in o.get("lines", [])
            ),
        ),
        stock_reserved=doc.get("stock_reserved", False),
        order_cancelled=doc.get("order_cancelled", False),
        intent_id=doc.get("intent_id"),
        intent_status=doc.get("intent_status"),
        client_secret=doc.get("client_secret"),
        intent_cancel_pending=doc.get("intent_cancel_pending", False),
        card_fingerprint=doc.get("card_fingerprint"),
        fraud=None
        if fraud is None
        else FraudDecision(
            outcome=FraudOutcome(fraud["outcome"]),
            score=fraud["score"],
            reasons=tuple(FraudReason(r["rule"], r["detail"], r["points"]) for r in fraud["reasons"]),
            decided_at=fraud["decided_at"],
            reviewed_by_admin=fraud.get("reviewed"),
        ),
        failure=None
        if failure is None
        else Failed(
            failure["reason"], failure.get("decline_code"), failure.get("message", ""), failure.get("intent_id")
        ),
        refunds=[
            Refund(
                key=r["key"],
                amount=r["amount"],
                reason=r["reason"],
                state=r["state"],
                refund_id=r.get("refund_id"),
                lines=tuple(
                    RefundLine(li["product_id"], li.get("sku"), li["quantity"], li["amount"])
                    for li in r.get("lines", [])
                ),
                shipping=r.get("shipping", 0),
            )
            for r in doc.get("refunds", [])
        ],
        pending_notices=[
            StripeNotice(
                event_id=n["event_id"],
                type=n["type"],
                order_id=n["order_id"],
                intent_id=n.get("intent_id"),
                amount=n.get("amount"),
                failure_code=n.get("failure_code"),
                decline_code=n.get("decline_code"),
                failure_message=n.get("failure_message", ""),
                card_fingerprint=n.get("card_fingerprint"),
                refund_ids=tuple(n.get("refund_ids", [])),
                refund_keys=tuple(n.get("refund_keys", [])),
            )
            for n in doc.get("pending_notices", [])
        ],
        transient_failures=doc.get("transient_failures", 0),
        held_at=doc.get("held_at"),
        review_reason=doc.get("review_reason") or ("fraud" if doc.get("status") == "held_for_review" else None),
        received_amount=doc.get("received_amount"),
        refund_awaits_shipping=doc.get("refund_awaits_shipping", False),
        shipping_verdict=doc.get("shipping_verdict"),
        create_attempts=doc.get("create_attempts", 0),
        retry_at=doc.get("retry_at"),
        history=[HistoryEntry(at=h["at"], status=h["status"], note=h["note"]) for h in doc.get("history", [])],
        stored_history_entry=doc.get("fraud_entry"),
    )
