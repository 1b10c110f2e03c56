"""Stripe webhook deliveries: verify the signature, then reduce the event to a StripeNotice."""

from __future__ import annotations

import json
import re
from typing import Any

import stripe

from kasse_common.errors import KasseError
from kasse_payment.domain.payment import StripeNotice

EVENT_ID = re.compile(r"[A-Za-z0-9_\-]{1,255}")
HANDLED = ("payment_intent.succeeded", "payment_intent.payment_failed", "charge.refunded")


class BadWebhook(KasseError):
    status = 400
    title = "Webhook rejected"


def verify(payload: bytes, signature: str | None, secret: str, tolerance_s: int) -> dict[str, Any]:
    """The event as a dict, or BadWebhook (unsigned, forged, stale or unreadable): nothing is changed."""
    if not signature:
        raise BadWebhook("missing Stripe-Signature header")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        raise BadWebhook("the payload is not UTF-8") from None
    try:
        stripe.WebhookSignature.verify_header(text, signature, secret, tolerance_s)
    except stripe.SignatureVerificationError as exc:
        # The SDK's message says which check failed (no signature match / outside the tolerance).
        raise BadWebhook(f"signature verification failed: {exc.user_message or 'invalid signature'}") from None
    try:
        event = json.loads(text)
    except ValueError:
        raise BadWebhook("the payload is not JSON") from None
    if not isinstance(event, dict) or not isinstance(event.get("id"), str) or not isinstance(event.get("type"), str):
        raise BadWebhook("the payload is not a Stripe event (id and type required)")
    if not EVENT_ID.fullmatch(event["id"]):
        # The id becomes a key of the processed-events map: no dots or dollars, whoever signed it.
        raise BadWebhook("the Stripe event id has an unexpected form")
    return event


def _get(obj: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def intent_of(event: dict[str, Any]) -> str | None:
    obj = _get(event, "data", "object")
    if event["type"].startswith("payment_intent."):
        return _str(_get(obj, "id"))
    intent = _get(obj, "payment_intent")
    return _str(intent) or _str(_get(intent, "id"))


def to_notice(event: dict[str, Any], order_id: str) -> StripeNotice:
    obj = _get(event, "data", "object") or {}
    kind = event["type"]
    if kind == "payment_intent.succeeded":
        return StripeNotice(event["id"], kind, order_id, intent_of(event), amount=_int(obj.get("amount_received")))
    if kind == "payment_intent.payment_failed":
        error = obj.get("last_payment_error") or {}
        return StripeNotice(
            event["id"],
            kind,
            order_id,
            intent_of(event),
            failure_code=_str(_get(error, "code")),
            decline_code=_str(_get(error, "decline_code")),
            failure_message=_str(_get(error, "message")) or "",
            card_fingerprint=_str(_get(error, "payment_method", "card", "fingerprint")),
        )
    refunds = _get(obj, "refunds", "data")
    listed = [r for r in refunds if isinstance(r, dict) and _str(r.get("id"))] if isinstance(refunds, list) else []
    refund_ids = tuple(r["id"] for r in listed)
    refund_keys = tuple(_str(_get(r, "metadata", "kasse_refund_key")) or "" for r in listed)
    return StripeNotice(
        event["id"],
        kind,
        order_id,
        intent_of(event),
        amount=_int(obj.get("amount_refunded")),
        card_fingerprint=_str(_get(obj, "payment_method_details", "card", "fingerprint")),
        refund_ids=refund_ids,
        refund_keys=refund_keys,
    )


def order_id_of(event: dict[str, Any]) -> str | None:
    return _str(_get(event, "data", "object", "metadata", "order_id"))
