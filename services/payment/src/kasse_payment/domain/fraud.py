"""Fraud screening: rules that add points; at or above the block score the payment is not attempted.

Pure functions over the signals the application gathers (counts, history); every point added comes
with a reason a human can read, and the decision keeps them all.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

# Stripe's codes for a card refused at confirmation: repeated, they are the trace of card testing.
DECLINE_REASONS = (
    "card_declined",
    "expired_card",
    "incorrect_cvc",
    "incorrect_number",
    "invalid_cvc",
    "invalid_number",
    "invalid_expiry_month",
    "invalid_expiry_year",
)


class FraudOutcome(StrEnum):
    ALLOW = "allow"
    BLOCK = "block"  # PaymentFailed(reason=fraud_suspected)
    REVIEW = "review"  # held until an admin approves or rejects


@dataclass(frozen=True)
class FraudPolicy:
    window_s: int = 3600
    max_orders_per_email: int = 5
    max_orders_per_ip: int = 10
    max_orders_per_card: int = 5
    max_declines: int = 3  # declined payment attempts per email or IP in the window (card testing)
    amount_multiplier: float = 5.0
    min_history: int = 2
    points_velocity: int = 60
    points_amount: int = 30
    points_country_mismatch: int = 25
    points_disposable_email: int = 40
    block_score: int = 50
    hold_for_review: bool = False
    disposable_domains: frozenset[str] = field(default_factory=frozenset)


@dataclass(frozen=True)
class FraudSignals:
    """What is known when screening one order. Counts are of *earlier* orders in the window."""

    email: str
    amount: int
    currency: str
    client_ip: str | None
    card_fingerprint: str | None
    billing_country: str | None
    shipping_country: str | None
    orders_by_email: int
    orders_by_ip: int
    orders_by_card: int
    history_amounts: tuple[int, ...]  # the customer's captured payments in the same currency
    declines_by_email: int = 0
    declines_by_ip: int = 0


@dataclass(frozen=True)
class FraudReason:
    rule: str
    detail: str
    points: int


@dataclass(frozen=True)
class FraudDecision:
    outcome: FraudOutcome
    score: int
    reasons: tuple[FraudReason, ...]
    decided_at: datetime
    reviewed_by_admin: str | None = None  # "approved" / "rejected" once a held payment was reviewed


def email_domain(email: str) -> str:
    return email.rsplit("@", 1)[-1].strip().lower()


def assess(signals: FraudSignals, policy: FraudPolicy, now: datetime) -> FraudDecision:
    reasons: list[FraudReason] = []
    window = f"{policy.window_s}s"
    if signals.orders_by_email >= policy.max_orders_per_email:
        reasons.append(
            FraudReason(
                "velocity_email",
                f"{signals.orders_by_email} earlier orders from this email within {window} "
                f"(limit {policy.max_orders_per_email})",
                policy.points_velocity,
            )
        )
    if signals.client_ip and signals.orders_by_ip >= policy.max_orders_per_ip:
        reasons.append(
            FraudReason(
                "velocity_ip",
                f"{signals.orders_by_ip} earlier orders from IP {signals.client_ip} within {window} "
                f"(limit {policy.max_orders_per_ip})",
                policy.points_velocity,
            )
        )
    if signals.card_fingerprint and signals.orders_by_card >= policy.max_orders_per_card:
        reasons.append(
            FraudReason(
                "velocity_card",
                f"{signals.orders_by_card} earlier orders with this card within {window} "
                f"(limit {policy.max_orders_per_card})",
                policy.points_velocity,
            )
        )
    for rule, count, who in (
        ("declines_email", signals.declines_by_email, "this email"),
        ("declines_ip", signals.declines_by_ip if signals.client_ip else 0, f"IP {signals.client_ip}"),
    ):
        if count >= policy.max_declines:
            reasons.append(
                FraudReason(
                    rule,
                    f"{count} declined payments from {who} within {window} (limit {policy.max_declines})",
                    policy.points_velocity,
                )
            )
    history = signals.history_amounts
    if len(history) >= policy.min_history:
        average = sum(history) / len(history)
        if signals.amount > average * policy.amount_multiplier:
            reasons.append(
                FraudReason(
                    "amount_above_history",
                    f"{signals.amount} {signals.currency} is more than {policy.amount_multiplier:g}x the "
                    f"customer's average of {average:.0f} over {len(history)} payments",
                    policy.points_amount,
                )
            )
    if signals.billing_country and signals.shipping_country and signals.billing_country != signals.shipping_country:
        reasons.append(
            FraudReason(
                "country_mismatch",
                f"billing country {signals.billing_country} differs from shipping country {signals.shipping_country}",
                policy.points_country_mismatch,
            )
        )
    domain = email_domain(signals.email)
    if domain in policy.disposable_domains:
        reasons.append(
            FraudReason("disposable_email", f"{domain} is a disposable email domain", policy.points_disposable_email)
        )

    score = sum(r.points for r in reasons)
    if score < policy.block_score:
        outcome = FraudOutcome.ALLOW
    else:
        outcome = FraudOutcome.REVIEW if policy.hold_for_review else FraudOutcome.BLOCK
    return FraudDecision(outcome=outcome, score=score, reasons=tuple(reasons), decided_at=now)
