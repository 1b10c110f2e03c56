"""Stripe's webhook signature scheme, for the places that play Stripe: the tests, deploy/local/pay.py
and the storefront's development-only test-payment page. Payment verifies with Stripe's own SDK."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from typing import Any


def sign(payload: str, secret: str, timestamp: int | None = None) -> str:
    """The `Stripe-Signature` header value for a payload: `t=<unix time>,v1=<HMAC-SHA256>`."""
    t = int(time.time()) if timestamp is None else timestamp
    signature = hmac.new(secret.encode(), f"{t}.{payload}".encode(), hashlib.sha256).hexdigest()
    return f"t={t},v1={signature}"


def stripe_event(kind: str, obj: dict[str, Any], event_id: str | None = None) -> str:
    return json.dumps(
        {
            "id": event_id or f"evt_{uuid.uuid4().hex[:16]}",
            "object": "event",
            "api_version": "2025-01-27.acacia",
            "created": int(time.time()),
            "livemode": False,
            "type": kind,
            "data": {"object": obj},
        }
    )


def intent_object(intent_id: str, order_id: str, amount: int, status: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": intent_id,
        "object": "payment_intent",
        "amount": amount,
        "amount_received": amount if status == "succeeded" else 0,
        "currency": "eur",
        "status": status,
        "metadata": {"order_id": order_id},
        **extra,
    }
