from __future__ import annotations

import json

import pytest

from kasse_payment.entrypoints.webhooks import BadWebhook, intent_of, order_id_of, to_notice, verify
from kasse_payment.testing import intent_object, sign, stripe_event

pytestmark = pytest.mark.unit

SECRET = "whsec_unit"


def test_a_correctly_signed_event_is_returned_and_reduced_to_what_payment_needs() -> None:
    obj = intent_object(
        "pi_1",
        "ord_1",
        2494,
        "requires_payment_method",
        last_payment_error={
            "code": "card_declined",
            "decline_code": "do_not_honor",
            "message": "Declined",
            "payment_method": {"card": {"fingerprint": "fp_42", "last4": "0002"}},
        },
    )
    payload = stripe_event("payment_intent.payment_failed", obj, event_id="evt_123")
    event = verify(payload.encode(), sign(payload, SECRET), SECRET, 300)
    assert (order_id_of(event), intent_of(event)) == ("ord_1", "pi_1")
    notice = to_notice(event, "ord_1")
    assert (notice.event_id, notice.failure_code, notice.decline_code, notice.card_fingerprint) == (
        "evt_123",
        "card_declined",
        "do_not_honor",
        "fp_42",
    )


def test_charge_refunded_names_the_intent_the_refunds_and_the_amount_refunded() -> None:
    charge = {
        "id": "ch_1",
        "object": "charge",
        "payment_intent": "pi_9",
        "amount_refunded": 700,
        "refunds": {"data": [{"id": "re_1"}, {"id": "re_2"}]},
    }
    event = json.loads(stripe_event("charge.refunded", charge))
    notice = to_notice(event, "ord_9")
    assert (notice.intent_id, notice.amount, notice.refund_ids) == ("pi_9", 700, ("re_1", "re_2"))
    assert order_id_of(event) is None


@pytest.mark.parametrize(
    ("signature", "why"),
    [
        (None, "missing Stripe-Signature"),
        ("garbage", "signature verification failed"),
        ("FORGED", "signature verification failed"),
        ("STALE", "signature verification failed"),
    ],
)
def test_unsigned_forged_and_stale_deliveries_are_refused(signature: str | None, why: str) -> None:
    payload = stripe_event("payment_intent.succeeded", intent_object("pi_1", "ord_1", 100, "succeeded"))
    if signature == "FORGED":
        signature = sign(payload, "whsec_other")
    elif signature == "STALE":
        signature = sign(payload, SECRET, timestamp=1_700_000_000)
    with pytest.raises(BadWebhook) as refused:
        verify(payload.encode(), signature, SECRET, 300)
    assert why in refused.value.detail and refused.value.status == 400


def test_signed_but_malformed_payloads_are_refused() -> None:
    for payload in ("not json", json.dumps({"type": "x"}), json.dumps({"id": "evt.$bad", "type": "x"})):
        with pytest.raises(BadWebhook):
            verify(payload.encode(), sign(payload, SECRET), SECRET, 300)
