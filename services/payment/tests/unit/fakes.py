"""In-memory adapters for unit tests: the same contracts as Mongo and Stripe, no I/O."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from kasse_common.errors import ConcurrencyError
from kasse_payment.adapters import fraud_history
from kasse_payment.adapters.codec import from_document, to_document
from kasse_payment.application.ports import (
    FraudCounts,
    GatewayDeclined,
    GatewayUnavailable,
    HistoryQuestion,
    IntentState,
    OutgoingEvent,
)
from kasse_payment.domain.payment import Payment, PaymentStatus


class InMemoryPayments:
    """PaymentRepository + FraudHistory. Stores documents through the real codec, so it round-trips."""

    def __init__(self) -> None:
        self.docs: dict[str, dict[str, Any]] = {}
        self.processed: dict[str, set[str]] = {}
        self.published: list[OutgoingEvent] = []

    async def load(self, order_id: str) -> Payment | None:
        doc = self.docs.get(order_id)
        return None if doc is None else from_document(copy.deepcopy(doc))

    async def save(self, payment: Payment, events: Sequence[OutgoingEvent], consumed_id: str | None) -> bool:
        seen = self.processed.setdefault(payment.order_id, set())
        if consumed_id and consumed_id in seen:
            return False
        current = self.docs.get(payment.order_id)
        if (current["_version"] if current else None) != payment.version:
            raise ConcurrencyError(payment.order_id)
        version = 1 if payment.version is None else payment.version + 1
        self.docs[payment.order_id] = {"_id": payment.order_id, "_version": version, **to_document(payment)}
        if consumed_id:
            seen.add(consumed_id)
        self.published.extend(events)
        payment.version = version
        return True

    async def find_order_by_intent(self, intent_id: str) -> str | None:
        return next((k for k, d in self.docs.items() if d["intent_id"] == intent_id), None)

    async def due_for_work(self, now: datetime, idle_since: datetime, limit: int) -> list[str]:
        return [k for k, d in self.docs.items() if d["needs_work"] and (d["retry_at"] is None or d["retry_at"] <= now)][
            :limit
        ]

    async def held_since(self, before: datetime, limit: int) -> list[str]:
        return [
            k
            for k, d in self.docs.items()
            if d["status"] == "held_for_review" and d["held_at"] is not None and d["held_at"] <= before
        ][:limit]

    async def fraud_decisions(
        self, *, outcome: str | None, email: str | None, client_ip: str | None, limit: int
    ) -> list[Payment]:
        found = [
            d
            for d in self.docs.values()
            if d["fraud"]
            and (outcome is None or d["fraud"]["outcome"] == outcome)
            and (email is None or d["email"] == email)
            and (client_ip is None or d["client_ip"] == client_ip)
        ]
        found.sort(key=lambda d: d["fraud"]["decided_at"], reverse=True)
        return [from_document(copy.deepcopy(d)) for d in found[:limit]]

    async def fraud_counts(self, question: HistoryQuestion) -> FraudCounts:
        return fraud_history.count(({**d, "_id": k} for k, d in self.docs.items()), question)

    def status(self, order_id: str) -> PaymentStatus:
        return PaymentStatus(self.docs[order_id]["status"])


@dataclass
class FakeGateway:
    """Records every call; behaviour is set per operation by the test."""

    intent_status: str = "requires_payment_method"
    confirm_status: str = "succeeded"
    fail_create: Exception | None = None
    fail_confirm: Exception | None = None
    fail_refund: Exception | None = None
    calls: list[tuple[str, dict[str, object]]] = field(default_factory=list)
    _intents: dict[str, str] = field(default_factory=dict)  # idempotency key -> intent id, as Stripe keeps it
    _by_order: dict[str, str] = field(default_factory=dict)  # metadata order_id -> intent id (Stripe's search)

    def keys(self, operation: str) -> list[str]:
        return [str(c[1]["idempotency_key"]) for c in self.calls if c[0] == operation]

    async def create_intent(self, **kw: object) -> IntentState:
        self.calls.append(("create_intent", dict(kw)))
        if self.fail_create:
            raise self.fail_create
        key = str(kw["idempotency_key"])
        intent_id = self._intents.setdefault(key, f"pi_{len(self._intents) + 1}")
        self._by_order[str(kw["order_id"])] = intent_id
        return IntentState(intent_id, self.intent_status, f"{intent_id}_secret_x")

    async def confirm_intent(self, **kw: object) -> IntentState:
        self.calls.append(("confirm_intent", dict(kw)))
        if self.fail_confirm:
            raise self.fail_confirm
        return IntentState(str(kw["intent_id"]), self.confirm_status, f"{kw['intent_id']}_secret_x")

    async def refund(self, **kw: object) -> str:
        self.calls.append(("refund", dict(kw)))
        if self.fail_refund:
            raise self.fail_refund
        return f"re_{kw['idempotency_key']}"

    async def cancel_intent(self, **kw: object) -> None:
        self.calls.append(("cancel_intent", dict(kw)))

    async def find_intent(self, **kw: object) -> IntentState | None:
        self.calls.append(("find_intent", dict(kw)))
        intent_id = self._by_order.get(str(kw["order_id"]))
        return IntentState(intent_id, self.intent_status, f"{intent_id}_secret_x") if intent_id else None


__all__ = ["FakeGateway", "GatewayDeclined", "GatewayUnavailable", "InMemoryPayments"]
