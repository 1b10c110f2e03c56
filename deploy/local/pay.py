"""Play Stripe for one order of the running local shop: send the signed webhook that completes it.

    uv run python deploy/local/pay.py ORDER_ID            # payment_intent.succeeded
    uv run python deploy/local/pay.py ORDER_ID --decline  # payment_intent.payment_failed (insufficient funds)

In production the customer confirms the PaymentIntent in the browser and Stripe tells Kasse the
outcome through a signed webhook. stripe-mock never completes a payment, so locally this script
sends that webhook, signed with the local webhook secret (deploy/local/shop.py's dev value, or
KASSE_PAYMENT_STRIPE_WEBHOOK_SECRET).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.request

from kasse_payment.testing import intent_object, sign, stripe_event

PAYMENT = os.environ.get("KASSE_PAYMENT_URL", "http://127.0.0.1:8003")
ADMIN_TOKEN = os.environ.get("KASSE_PAYMENT_ADMIN_TOKEN", "dev-payment-admin")
WEBHOOK_SECRET = os.environ.get("KASSE_PAYMENT_STRIPE_WEBHOOK_SECRET", "whsec_local_dev")


def call(method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None) -> dict:
    request = urllib.request.Request(PAYMENT + path, data=body, method=method, headers=headers or {})
    with urllib.request.urlopen(request, timeout=10) as response:
        return dict(json.load(response))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("order_id")
    parser.add_argument("--decline", action="store_true")
    args = parser.parse_args()
    payment = call("GET", f"/v1/admin/payments/{args.order_id}", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    if payment.get("status") not in ("requires_action", "processing") or not payment.get("payment_intent_id"):
        sys.exit(f"order {args.order_id} is not waiting for the customer's payment (status {payment.get('status')})")
    amount = payment["amount"]["amount"]
    if args.decline:
        kind = "payment_intent.payment_failed"
        error = {"code": "card_declined", "decline_code": "insufficient_funds", "message": "Insufficient funds."}
        obj = intent_object(
            payment["payment_intent_id"], args.order_id, amount, "requires_payment_method", last_payment_error=error
        )
    else:
        kind = "payment_intent.succeeded"
        obj = intent_object(payment["payment_intent_id"], args.order_id, amount, "succeeded")
    payload = stripe_event(kind, obj)
    headers = {"Stripe-Signature": sign(payload, WEBHOOK_SECRET), "Content-Type": "application/json"}
    print(kind, "->", call("POST", "/v1/webhooks/stripe", payload.encode(), headers))


if __name__ == "__main__":
    main()
