"""What the use cases need from the outside world: storage and Stripe."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from kasse_contracts.base import Event
from kasse_payment.domain.payment import Payment


@dataclass(frozen=True)
class OutgoingEvent:
    event: Event
    event_id: str  # deterministic, so a retried write never publishes a second, different event


class PaymentRepository(Protocol):
    async def load(self, order_id: str) -> Payment | None: ...

    async def save(self, payment: Payment, events: Sequence[OutgoingEvent], consumed_id: str | None) -> bool:
        """Write state and events atomically. False: `consumed_id` was applied before (nothing written).
        Raises ConcurrencyError when the payment changed since it was loaded."""
        ...

    async def find_order_by_intent(self, intent_id: str) -> str | None: ...

    async def fraud_decisions(
        self, *, outcome: str | None, email: str | None, client_ip: str | None, limit: int
    ) -> list[Payment]:
        """Screened payments, newest decision first."""
        ...

    async def due_for_work(self, now: datetime, idle_since: datetime, limit: int) -> list[str]:
        """Order ids with Stripe work left, not retried before their time and untouched since `idle_since`."""
        ...

    async def held_since(self, before: datetime, limit: int) -> list[str]:
        """Order ids of payments held for review since before `before` (indexed)."""
        ...


@dataclass(frozen=True)
class HistoryQuestion:
    """What screening an order needs to know about earlier payments (see FraudSignals)."""

    order_id: str
    email: str
    client_ip: str | None
    card_fingerprint: str | None
    customer_id: str | None
    currency: str
    since: datetime  # the velocity window's start
    amounts_limit: int = 50


@dataclass(frozen=True)
class FraudCounts:
    orders_by_email: int = 0  # screened within the window, this order excluded
    orders_by_ip: int = 0
    orders_by_card: int = 0
    declines_by_email: int = 0  # declined by Stripe within the window
    declines_by_ip: int = 0
    captured_amounts: tuple[int, ...] = ()  # the customer's captured payments in the currency


class FraudHistory(Protocol):
    async def fraud_counts(self, question: HistoryQuestion) -> FraudCounts:
        """Every count screening needs, in one read of the store."""
        ...


@dataclass(frozen=True)
class IntentState:
    intent_id: str
    status: str
    client_secret: str | None


class GatewayDeclined(Exception):
    """Stripe said no for good (card error, invalid request): retrying with the same key cannot help."""

    def __init__(self, reason: str, message: str, decline_code: str | None = None, intent_id: str | None = None):
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message
        self.decline_code = decline_code
        self.intent_id = intent_id


class GatewayUnavailable(Exception):
    """Stripe could not be reached or failed transiently (after the SDK's own retries)."""


class PaymentGateway(Protocol):
    async def create_intent(
        self, *, order_id: str, amount: int, currency: str, email: str, idempotency_key: str, server_confirmation: bool
    ) -> IntentState: ...

    async def confirm_intent(self, *, intent_id: str, payment_method: str, idempotency_key: str) -> IntentState: ...

    async def refund(self, *, intent_id: str, amount: int, order_id: str, reason: str, idempotency_key: str) -> str: ...

    async def cancel_intent(self, *, intent_id: str, idempotency_key: str) -> None: ...

    async def find_intent(self, *, order_id: str) -> IntentState | None:
        """The intent an earlier, interrupted attempt created for this order (by its metadata), if any."""
        ...
