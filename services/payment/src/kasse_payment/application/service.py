"""Use cases of the payment service.

Every change is: load the payment, let the domain decide, save the new state together with the
events it caused (and the id of the message that caused it, which makes redeliveries no-ops).
Calls to Stripe happen *between* such writes, each with an idempotency key derived from the order
(or the refund's cause), so repeating a step after a crash or a redelivery is safe: `advance`
looks at the stored state and resumes whatever is unfinished.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from kasse_common.envelope import derived_event_id
from kasse_common.errors import NotFound
from kasse_common.retry import backoff_delay, retry_on_conflict
from kasse_common.steps import StepRunner
from kasse_contracts.base import Money
from kasse_contracts.events import (
    CancellationRefused,
    OrderCancelled,
    OrderPlaced,
    PaymentCaptured,
    PaymentFailed,
    PaymentRefunded,
    ReturnReceived,
    ShipmentCancelled,
    StockReserved,
)
from kasse_contracts.events.payments import RefundedLine
from kasse_payment.application.ports import (
    FraudHistory,
    GatewayDeclined,
    GatewayUnavailable,
    HistoryQuestion,
    IntentState,
    OutgoingEvent,
    PaymentGateway,
    PaymentRepository,
)
from kasse_payment.domain.fraud import FraudPolicy, FraudSignals, assess
from kasse_payment.domain.payment import (
    Captured,
    DomainEvent,
    Failed,
    HeldForReview,
    OrderFacts,
    OrderLineFacts,
    Payment,
    PaymentStatus,
    Refund,
    Refunded,
    RefundLine,
    StripeNotice,
    refund_idempotency_key,
)

log = logging.getLogger(__name__)

Change = Callable[[Payment, datetime], list[DomainEvent] | None]


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class PaymentConfig:
    server_confirmation: bool
    server_payment_method: str
    fraud: FraudPolicy
    max_attempts: int = 5
    retry_backoff_s: float = 2.0
    max_retry_backoff_s: float = 300.0
    step_lease_s: float = 60.0
    review_timeout_s: float = 86400.0  # a payment held for review and not decided by then is rejected


class PaymentService:
    def __init__(
        self,
        repository: PaymentRepository,
        history: FraudHistory,
        gateway: PaymentGateway,
        config: PaymentConfig,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.repository = repository
        self.history = history
        self.gateway = gateway
        self.config = config
        self.clock = clock
        self.held_for_review: dict[str, int] = {}  # per reason, since start (a Prometheus counter)
        # Set by the app: the events' Stripe work then runs beside the consumer (kit StepRunner); without it
        # (tests of the use cases) a handler advances the order itself before it returns.
        self.steps: StepRunner | None = None

    # -- events in ---------------------------------------------------------------------------
    async def order_placed(self, event: OrderPlaced, event_id: str) -> None:
        facts = OrderFacts(
            amount=event.total.amount,
            currency=event.total.currency,
            email=event.email.strip().lower(),
            session_id=event.session_id,
            customer_id=event.customer_id,
            client_ip=event.client_ip,
            billing_country=event.billing_country,
            shipping_country=event.shipping_address.country,
            lines=tuple(
                OrderLineFacts(
                    line.product_id,
                    line.sku,
                    line.quantity,
                    # What the customer paid for the line; older orders carry no discount share.
                    (line.discounted_total or line.line_total).amount,
                )
                for line in event.lines
            ),
        )
        await self._change(event.order_id, lambda p, now: p.record_order(facts, now), consumed_id=event_id)
        await self._advance_soon(event.order_id)

    async def stock_reserved(self, event: StockReserved, event_id: str) -> None:
        await self._change(event.order_id, lambda p, now: p.record_stock_reserved(now), consumed_id=event_id)
        await self._advance_soon(event.order_id)

    async def order_cancelled(self, event: OrderCancelled, event_id: str) -> None:
        await self._change(event.order_id, lambda p, now: p.cancel_order(now), consumed_id=event_id)
        await self._advance_soon(event.order_id)

    async def shipment_cancelled(self, event: ShipmentCancelled, event_id: str) -> None:
        await self._change(event.order_id, lambda p, now: p.shipment_cancelled(now), consumed_id=event_id)
        await self._advance_soon(event.order_id)

    async def cancellation_refused(self, event: CancellationRefused, event_id: str) -> None:
        await self._change(event.order_id, lambda p, now: p.cancellation_refused(now), consumed_id=event_id)

    async def return_received(self, event: ReturnReceived, event_id: str) -> None:
        amount = event.refund_amount
        lines = tuple(
            RefundLine(line.product_id, line.sku, line.quantity, line.refund_amount.amount) for line in event.lines
        )
        shipping = event.shipping_refund.amount if event.shipping_refund else 0

        def request(p: Payment, now: datetime) -> None:
            p.request_return_refund(event.return_id, amount.amount, amount.currency, now, lines, shipping)

        await self._change(event.order_id, request, consumed_id=event_id)
        await self._advance_soon(event.order_id)

    async def stripe_notice(self, notice: StripeNotice) -> bool | None:
        """A verified webhook event; False when this Stripe event id was applied before, None when it was
        ignored and nothing changed (no PaymentIntent id, or not this order's intent)."""
        current = await self.repository.load(notice.order_id)
        if (current is not None and current.ignores_notice(notice)) or notice.intent_id is None:
            log.warning(
                "webhook ignored: not this order's PaymentIntent",
                extra={"order_id": notice.order_id, "stripe_event_id": notice.event_id, "intent_id": notice.intent_id},
            )
            return None
        applied = await self._change(
            notice.order_id, lambda p, now: p.apply_notice(notice, now), consumed_id=f"stripe-{notice.event_id}"
        )
        await self.advance(notice.order_id)
        return applied is not None

    async def order_for_intent(self, intent_id: str) -> str | None:
        return await self.repository.find_order_by_intent(intent_id)

    # -- admin ---------------------------------------------------------------------------------
    async def review(self, order_id: str, approve: bool) -> Payment:
        if await self.repository.load(order_id) is None:
            raise NotFound(f"no payment for order {order_id}")
        payment = await self._change(order_id, lambda p, now: p.review(approve, now), consumed_id=None)
        await self.advance(order_id)
        return await self.repository.load(order_id) or payment  # type: ignore[return-value]

    async def fraud_decisions(
        self, *, outcome: str | None = None, email: str | None = None, client_ip: str | None = None, limit: int = 50
    ) -> list[Payment]:
        return await self.repository.fraud_decisions(
            outcome=outcome, email=email.strip().lower() if email else None, client_ip=client_ip, limit=limit
        )

    async def get(self, order_id: str) -> Payment:
        payment = await self.repository.load(order_id)
        if payment is None or payment.order is None:
            raise NotFound(f"no payment for order {order_id} yet")
        return payment

    # -- progress ------------------------------------------------------------------------------
    async def _advance_soon(self, order_id: str) -> None:
        if self.steps is None:
            await self.advance(order_id)
        else:
            self.steps.schedule(order_id)

    async def advance(self, order_id: str) -> None:
        """Do whatever Stripe work the stored state still owes, one step at a time.

        Each step goes on from the state its own write stored (no fresh read of the order between steps),
        and an allowed screening claims the charge in the same write: under load every store command
        waits its turn, and an order's way from ready to its intent was nine reads and writes of its
        document, now five."""
        payment = await self.repository.load(order_id)
        for _ in range(12):  # every step changes the state; the bound only guards against a bug
            if payment is None:
                return
            now = self.clock()
            claimed: Payment | None
            if payment.ready_to_screen:
                payment, claimed = await self._screen(payment)
                if claimed is None:
                    continue  # blocked, held, or screened by another handler: look at the state it left
            elif not payment.due(now):
                return  # a transient Stripe failure: the sweeper retries at retry_at
            elif (
                payment.status is PaymentStatus.AUTHORIZING or payment.intent_cancel_pending or payment.refunds_to_send
            ):
                claimed = await self._claim(order_id)
                if claimed is None:
                    return  # another handler holds this order's Stripe step
            else:
                return
            payment = await self._step(claimed)

    async def _step(self, claimed: Payment) -> Payment | None:
        """The claimed Stripe step; the state its result was stored as (None: read it again)."""
        if claimed.status is PaymentStatus.AUTHORIZING:
            return await self._charge(claimed)
        if claimed.intent_cancel_pending:
            return await self._cancel_intent(claimed)
        if claimed.refunds_to_send:
            return await self._send_refund(claimed, claimed.refunds_to_send[0])
        return await self.repository.load(claimed.order_id)  # claimed, then nothing owed: the lease runs out

    async def _claim(self, order_id: str) -> Payment | None:
        won = False

        def claim(p: Payment, now: datetime) -> None:
            nonlocal won
            won = p.claim(now, self.config.step_lease_s)

        payment = await self._change(order_id, claim, consumed_id=None)
        return payment if won else None

    async def _finish(self, order_id: str, change: Change) -> Payment | None:
        """Record a Stripe step's result and give its lease back."""

        def finish(p: Payment, now: datetime) -> list[DomainEvent] | None:
            p.release()
            return change(p, now)

        return await self._change(order_id, finish, consumed_id=None)

    async def sweep(self, idle_s: float, limit: int = 50) -> int:
        """Resume payments whose Stripe work was interrupted (a crash, a transient error)."""
        now = self.clock()
        for order_id in await self.repository.held_since(now - timedelta(seconds=self.config.review_timeout_s), limit):
            try:
                await self._change(order_id, lambda p, now: p.review_expired(now), consumed_id=None)
                await self.advance(order_id)
            except Exception:
                log.exception("expiring a review failed", extra={"order_id": order_id})
        order_ids = await self.repository.due_for_work(now, now - timedelta(seconds=idle_s), limit)
        for order_id in order_ids:
            if self.steps is not None and order_id in self.steps:
                continue  # waiting for its turn here already: not interrupted
            try:
                await self.advance(order_id)
            except Exception:
                log.exception("resuming a payment failed", extra={"order_id": order_id})
        return len(order_ids)

    async def _screen(self, payment: Payment) -> tuple[Payment | None, Payment | None]:
        """Screen and store the decision; (the state stored, the same state when its write also claimed
        the charge — an allowed order goes straight on to Stripe — else None)."""
        order = payment.order
        assert order is not None
        policy = self.config.fraud
        # The card is only known once Stripe reports an attempt with it (customer mode: the shopper picks
        # it after screening; server mode: one configured test card for every order, which would make
        # per-card velocity meaningless), so this rule applies to payments whose card is already known.
        card = payment.card_fingerprint
        since = self.clock() - timedelta(seconds=policy.window_s)
        oid = payment.order_id
        counts = await self.history.fraud_counts(
            HistoryQuestion(
                order_id=oid,
                email=order.email,
                client_ip=order.client_ip,
                card_fingerprint=card,
                customer_id=order.customer_id,
                currency=order.currency,
                since=since,
            )
        )
        signals = FraudSignals(
            email=order.email,
            amount=order.amount,
            currency=order.currency,
            client_ip=order.client_ip,
            card_fingerprint=card,
            billing_country=order.billing_country,
            shipping_country=order.shipping_country,
            orders_by_email=counts.orders_by_email,
            orders_by_ip=counts.orders_by_ip,
            orders_by_card=counts.orders_by_card,
            declines_by_email=counts.declines_by_email,
            declines_by_ip=counts.declines_by_ip,
            history_amounts=counts.captured_amounts,
        )
        decision = assess(signals, policy, self.clock())
        log.info(
            "fraud screening",
            extra={
                "order_id": oid,
                "outcome": decision.outcome.value,
                "score": decision.score,
                "rules": [r.rule for r in decision.reasons],
            },
        )

        won = False

        def screen(p: Payment, now: datetime) -> list[DomainEvent]:
            nonlocal won
            events = p.apply_screening(decision, now)
            won = (
                p.fraud is decision and p.status is PaymentStatus.AUTHORIZING and p.claim(now, self.config.step_lease_s)
            )
            return events

        stored = await self._change(oid, screen, consumed_id=None)
        return stored, stored if won else None

    async def _charge(self, payment: Payment) -> Payment | None:
        order = payment.order
        assert order is not None
        oid = payment.order_id
        server = self.config.server_confirmation
        try:
            found = None
            if payment.intent_id is not None:
                # Created before (server mode: recorded, then confirming was interrupted): never create again.
                found = IntentState(payment.intent_id, payment.intent_status or "requires_confirmation", None)
            elif payment.create_attempts > 1:
                # An earlier attempt may have created the intent and crashed before recording it: Stripe's
                # idempotency key covers that in production, but Kasse does not rely on it alone.
                found = await self.gateway.find_intent(order_id=oid)
                if found is not None:
                    log.info("intent of an interrupted attempt found", extra={"order_id": oid})
            state = found or await self.gateway.create_intent(
                order_id=oid,
                amount=order.amount,
                currency=order.currency,
                email=order.email,
                idempotency_key=f"kasse-payment-{oid}-create",
                server_confirmation=server,
            )
            if server and payment.intent_id is None:
                created = state.intent_id
                await self._change(oid, lambda p, now: p.intent_created(created, now), consumed_id=None)
            if server:
                created = state.intent_id
                state = await self.gateway.confirm_intent(
                    intent_id=created,
                    payment_method=self.config.server_payment_method,
                    idempotency_key=f"kasse-payment-{oid}-confirm",
                )
        except GatewayDeclined as exc:
            failure = Failed(exc.reason, exc.decline_code, exc.message, exc.intent_id or payment.intent_id)
            return await self._finish(oid, lambda p, now: p.declined(failure, now))
        except GatewayUnavailable as exc:
            return await self._unavailable(oid, exc)
        return await self._finish(
            oid, lambda p, now: p.intent_updated(state.intent_id, state.status, state.client_secret, server, now)
        )

    async def _cancel_intent(self, payment: Payment) -> Payment | None:
        oid = payment.order_id
        try:
            await self.gateway.cancel_intent(
                intent_id=payment.intent_id or "", idempotency_key=f"kasse-payment-{oid}-cancel"
            )
        except GatewayDeclined as exc:
            log.warning("intent not canceled", extra={"order_id": oid, "error": str(exc)})
        except GatewayUnavailable as exc:
            return await self._unavailable(oid, exc)
        return await self._finish(oid, lambda p, now: p.intent_cancelled(now))

    async def _send_refund(self, payment: Payment, refund: Refund) -> Payment | None:
        oid = payment.order_id
        key = refund.key
        try:
            refund_id = await self.gateway.refund(
                intent_id=payment.intent_id or "",
                amount=refund.amount,
                order_id=oid,
                reason=refund.reason,
                idempotency_key=refund_idempotency_key(oid, key),
            )
        except GatewayDeclined as exc:
            why = str(exc)
            log.error("refund refused by Stripe", extra={"order_id": oid, "refund_key": key, "error": why})
            return await self._finish(oid, lambda p, now: p.refund_failed(key, why, now))
        except GatewayUnavailable as exc:
            return await self._unavailable(oid, exc)
        return await self._finish(oid, lambda p, now: p.refund_done(key, refund_id, now))

    async def _unavailable(self, order_id: str, exc: Exception) -> Payment | None:
        error = str(exc)[:300]

        def record(p: Payment, now: datetime) -> list[DomainEvent]:
            delay = backoff_delay(
                p.transient_failures + 1, initial_s=self.config.retry_backoff_s, max_s=self.config.max_retry_backoff_s
            )
            return p.stripe_unavailable(error, self.config.max_attempts, now + timedelta(seconds=delay), now)

        log.warning("Stripe unavailable", extra={"order_id": order_id, "error": error})
        return await self._finish(order_id, record)

    # -- persistence ---------------------------------------------------------------------------
    async def _change(self, order_id: str, change: Change, consumed_id: str | None) -> Payment | None:
        """Load, change, save with the events; None when `consumed_id` had been applied already."""

        async def attempt() -> Payment | None:
            payment = await self.repository.load(order_id) or Payment(order_id=order_id)
            now = self.clock()
            caused = change(payment, now) or []
            held = [e for e in caused if isinstance(e, HeldForReview)]
            events = [self._contract_event(payment, e, now) for e in caused if not isinstance(e, HeldForReview)]
            applied = await self.repository.save(payment, events, consumed_id)
            if applied:
                for hold in held:
                    self.held_for_review[hold.reason] = self.held_for_review.get(hold.reason, 0) + 1
                    log.warning("payment held for review", extra={"order_id": order_id, "reason": hold.reason})
            return payment if applied else None

        return await retry_on_conflict(attempt, f"payment of order {order_id}", attempts=20)

    @staticmethod
    def _contract_event(payment: Payment, event: DomainEvent, now: datetime) -> OutgoingEvent:
        order = payment.order
        assert order is not None, "payment events need the order's amount"
        oid = payment.order_id
        common = {"occurred_at": now, "session_id": order.session_id, "customer_id": order.customer_id, "order_id": oid}
        if isinstance(event, Captured):
            return OutgoingEvent(
                PaymentCaptured(
                    **common,
                    payment_intent_id=event.intent_id,
                    amount=Money(amount=order.amount, currency=order.currency),
                ),
                derived_event_id("payment", oid, "captured"),
            )
        if isinstance(event, Failed):
            return OutgoingEvent(
                PaymentFailed(
                    **common,
                    payment_intent_id=event.intent_id,
                    reason=event.reason,
                    decline_code=event.decline_code,
                    message=event.message,
                    amount=Money(amount=order.amount, currency=order.currency),
                ),
                derived_event_id("payment", oid, "failed"),
            )
        assert isinstance(event, Refunded), event
        return OutgoingEvent(
            PaymentRefunded(
                **common,
                refund_id=event.refund_id,
                payment_intent_id=payment.intent_id or "",
                amount=Money(amount=event.amount, currency=order.currency),
                total_refunded=Money(amount=event.total_refunded, currency=order.currency),
                full=event.full,
                reason=event.reason,
                lines=[
                    RefundedLine(
                        product_id=line.product_id,
                        sku=line.sku,
                        quantity=line.quantity,
                        amount=Money(amount=line.amount, currency=order.currency),
                    )
                    for line in event.lines
                ],
                shipping=Money(amount=event.shipping, currency=order.currency) if event.shipping else None,
            ),
            derived_event_id("payment", oid, "refund", event.key),
        )
