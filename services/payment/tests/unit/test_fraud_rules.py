from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from kasse_payment.domain.fraud import FraudOutcome, FraudPolicy, FraudSignals, assess

pytestmark = pytest.mark.unit

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
POLICY = FraudPolicy(disposable_domains=frozenset({"mailinator.com"}))
ORDINARY = FraudSignals(
    email="erika@example.com",
    amount=2494,
    currency="EUR",
    client_ip="203.0.113.7",
    card_fingerprint="fp_1",
    billing_country="DE",
    shipping_country="DE",
    orders_by_email=1,
    orders_by_ip=2,
    orders_by_card=1,
    history_amounts=(2000, 3000),
)


def rules(signals: FraudSignals, policy: FraudPolicy = POLICY) -> list[str]:
    return [r.rule for r in assess(signals, policy, NOW).reasons]


def test_an_ordinary_shopper_is_allowed_with_no_reasons() -> None:
    decision = assess(ORDINARY, POLICY, NOW)
    assert decision.outcome is FraudOutcome.ALLOW
    assert decision.score == 0 and decision.reasons == ()
    assert decision.decided_at == NOW


def test_email_velocity_at_the_limit_blocks_and_says_why() -> None:
    decision = assess(replace(ORDINARY, orders_by_email=POLICY.max_orders_per_email), POLICY, NOW)
    assert decision.outcome is FraudOutcome.BLOCK
    (reason,) = decision.reasons
    assert reason.rule == "velocity_email" and reason.points == POLICY.points_velocity
    assert "5 earlier orders from this email" in reason.detail
    assert assess(replace(ORDINARY, orders_by_email=POLICY.max_orders_per_email - 1), POLICY, NOW).reasons == ()


def test_ip_and_card_velocity_count_only_when_the_ip_or_card_is_known() -> None:
    busy = replace(ORDINARY, orders_by_ip=POLICY.max_orders_per_ip, orders_by_card=POLICY.max_orders_per_card)
    assert rules(busy) == ["velocity_ip", "velocity_card"]
    assert rules(replace(busy, client_ip=None, card_fingerprint=None)) == []


def test_amount_far_above_the_customers_history() -> None:
    # average 2500; 5x = 12500
    assert rules(replace(ORDINARY, amount=12_501)) == ["amount_above_history"]
    assert rules(replace(ORDINARY, amount=12_500)) == []
    # one earlier payment is not a history yet
    assert rules(replace(ORDINARY, amount=1_000_000, history_amounts=(2000,))) == []


def test_country_mismatch_and_disposable_email_add_up_to_a_block() -> None:
    signals = replace(ORDINARY, billing_country="US", email="x@Mailinator.com")
    decision = assess(signals, POLICY, NOW)
    assert [r.rule for r in decision.reasons] == ["country_mismatch", "disposable_email"]
    assert decision.score == POLICY.points_country_mismatch + POLICY.points_disposable_email
    assert decision.outcome is FraudOutcome.BLOCK
    # each alone stays under the threshold of 50
    assert assess(replace(ORDINARY, billing_country="US"), POLICY, NOW).outcome is FraudOutcome.ALLOW
    assert rules(replace(ORDINARY, billing_country=None)) == []


def test_hold_for_review_instead_of_blocking_when_configured() -> None:
    policy = replace(POLICY, hold_for_review=True)
    decision = assess(replace(ORDINARY, orders_by_email=99), policy, NOW)
    assert decision.outcome is FraudOutcome.REVIEW


def test_repeated_declines_from_an_email_or_ip_look_like_card_testing() -> None:
    signals = replace(ORDINARY, declines_by_email=POLICY.max_declines, declines_by_ip=POLICY.max_declines)
    assert rules(signals) == ["declines_email", "declines_ip"]
    assert rules(replace(signals, declines_by_email=2, declines_by_ip=2)) == []
    assert rules(replace(signals, declines_by_email=0, client_ip=None)) == []
