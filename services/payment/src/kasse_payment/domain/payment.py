"""The payment of one order: a state machine fed by the order's events and by Stripe.

Our own record is the truth: the amount and currency come from the order (OrderPlaced), never from
a client or from what Stripe echoes. Methods return the domain events they caused; the application
turns them into contract events and commits them with the new state.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from kasse_common.errors import Conflict
from kasse_common.money.refunds import PaidLine, remaining_lines
from kasse_payment.domain.fraud import FraudDecision, FraudOutcome


class PaymentStatus(StrEnum):
    PENDING = "pending"  # waiting for the order and/or its stock reservation
    HELD_FOR_REVIEW = "held_for_review"  # fraud screening asked for a human
    AUTHORIZING = "authorizing"  # screened; the intent is being created / confirmed at Stripe
    REQUIRES_ACTION = "requires_action"  # the customer must act (confirm, 3-D Secure) with the client secret
    PROCESSING = "processing"  # confirmed; Stripe's verdict comes by webhook
    CAPTURED = "captured"
    PARTIALLY_REFUNDED = "partially_refunded"
    REFUNDED = "refunded"
    FAILED = "failed"
    CANCELLED = "cancelled"  # the order was cancelled before any money was taken


PAID = (PaymentStatus.CAPTURED, PaymentStatus.PARTIALLY_REFUNDED, PaymentStatus.REFUNDED)
OPEN = (
    PaymentStatus.PENDING,
    PaymentStatus.HELD_FOR_REVIEW,
    PaymentStatus.AUTHORIZING,
    PaymentStatus.REQUIRES_ACTION,
    PaymentStatus.PROCESSING,
)
# Stripe intent states in which the customer still has to act (the client secret is useful).
CUSTOMER_ACTION_STATES = ("requires_payment_method", "requires_confirmation", "requires_action")


@dataclass(frozen=True)
class RefundLine:
    """Units of an order line a refund pays back, and what the customer paid for them."""

    product_id: str
    sku: str | None
    quantity: int
    amount: int


@dataclass(frozen=True)
class OrderLineFacts:
    product_id: str
    sku: str
    quantity: int
    paid: int  # the line's discounted total


@dataclass(frozen=True)
class OrderFacts:
    amount: int
    currency: str
    email: str
    session_id: str
    customer_id: str | None
    client_ip: str | None
    billing_country: str | None
    shipping_country: str | None
    lines: tuple[OrderLineFacts, ...] = ()  # empty for orders recorded before lines were kept


@dataclass
class Refund:
    key: str  # idempotency: one refund per cause (the cancellation, one return, one Stripe refund)
    amount: int
    reason: str
    state: str = "requested"  # requested → done
    refund_id: str | None = None
    lines: tuple[RefundLine, ...] = ()  # which lines it pays back (a return's units; a cancellation's rest)
    shipping: int = 0  # the part of `amount` that pays back shipping


@dataclass
class HistoryEntry:
    at: datetime
    status: str
    note: str


@dataclass(frozen=True)
class StripeNotice:
    """The parts of a verified Stripe webhook event that payment acts on."""

    event_id: str
    type: str  # payment_intent.succeeded | payment_intent.payment_failed | charge.refunded
    order_id: str
    intent_id: str | None
    amount: int | None = None  # amount received / refunded so far, as Stripe reports it
    failure_code: str | None = None
    decline_code: str | None = None
    failure_message: str = ""
    card_fingerprint: str | None = None
    refund_ids: tuple[str, ...] = ()
    # Per refund id, the `kasse_refund_key` metadata we set on our own refunds ("" for refunds made elsewhere):
    # our refund is recognised by it even when Stripe's echo overtakes the answer to our own call.
    refund_keys: tuple[str, ...] = ()


# Domain events ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Captured:
    intent_id: str


@dataclass(frozen=True)
class Failed:
    reason: str
    decline_code: str | None
    message: str
    intent_id: str | None


@dataclass(frozen=True)
class Refunded:
    key: str
    refund_id: str
    amount: int
    total_refunded: int
    full: bool
    reason: str
    lines: tuple[RefundLine, ...] = ()
    shipping: int = 0


@dataclass(frozen=True)
class HeldForReview:
    """Not a contract event: the application counts it (a Prometheus metric) and logs it."""

    reason: str  # fraud | amount_mismatch
    detail: str


DomainEvent = Captured | Failed | Refunded | HeldForReview


def refund_idempotency_key(order_id: str, refund_key: str) -> str:
    """Sent to Stripe as the Idempotency-Key and as metadata[kasse_refund_key]."""
    return f"kasse-refund-{order_id}-{refund_key}"


@dataclass
class Payment:
    order_id: str
    version: int | None = None  # None: never saved
    status: PaymentStatus = PaymentStatus.PENDING
    order: OrderFacts | None = None
    stock_reserved: bool = False
    order_cancelled: bool = False
    intent_id: str | None = None
    intent_status: str | None = None
    client_secret: str | None = None
    intent_cancel_pending: bool = False  # the order was cancelled after the intent was created
    card_fingerprint: str | None = None
    fraud: FraudDecision | None = None
    failure: Failed | None = None
    refunds: list[Refund] = field(default_factory=list)
    pending_notices: list[StripeNotice] = field(default_factory=list)
    transient_failures: int = 0
    held_at: datetime | None = None  # held for review since (fraud screening or an amount mismatch)
    review_reason: str | None = None  # fraud | amount_mismatch
    received_amount: int | None = None  # what Stripe says it took, when that differs from the order
    refund_awaits_shipping: bool = False  # a paid order was cancelled: refund once shipping stopped the parcel
    shipping_verdict: str | None = None  # cancelled | refused (ShipmentCancelled / CancellationRefused)
    create_attempts: int = 0  # claims to create the intent; recorded BEFORE each call to Stripe
    retry_at: datetime | None = None  # not before: a backoff after a transient error, or a step's lease
    history: list[HistoryEntry] = field(default_factory=list)
    # The fraud-history entry the store last recorded beside this payment (the Mongo adapter's bookkeeping,
    # so an entry is written only when it changes); not domain state.
    stored_history_entry: dict[str, Any] | None = field(default=None, compare=False, repr=False)

    # -- facts from the order's events -------------------------------------------------------
    def record_order(self, facts: OrderFacts, now: datetime) -> list[DomainEvent]:
        if self.order is not None:
            return []
        self.order = facts
        self._note(now, f"order known: {facts.amount} {facts.currency}")
        # Webhooks that arrived before the order can be applied now that the amount is known.
        return self._replay_pending(now)

    def _replay_pending(self, now: datetime) -> list[DomainEvent]:
        events: list[DomainEvent] = []
        pending, self.pending_notices = self.pending_notices, []
        for notice in pending:
            events += self.apply_notice(notice, now)
        return events

    def record_stock_reserved(self, now: datetime) -> None:
        if not self.stock_reserved:
            self.stock_reserved = True
            self._note(now, "stock reserved")

    @property
    def ready_to_screen(self) -> bool:
        return (
            self.status is PaymentStatus.PENDING
            and self.order is not None
            and self.stock_reserved
            and not self.order_cancelled
        )

    # -- fraud screening ---------------------------------------------------------------------
    def apply_screening(self, decision: FraudDecision, now: datetime) -> list[DomainEvent]:
        if not self.ready_to_screen:
            return []
        self.fraud = decision
        reasons = "; ".join(r.detail for r in decision.reasons) or "no risk signals"
        if decision.outcome is FraudOutcome.ALLOW:
            self._move(PaymentStatus.AUTHORIZING, now, f"screened: allow (score {decision.score}): {reasons}")
            return []
        if decision.outcome is FraudOutcome.REVIEW:
            self.held_at, self.review_reason = now, "fraud"
            self._move(PaymentStatus.HELD_FOR_REVIEW, now, f"held for review (score {decision.score}): {reasons}")
            return [HeldForReview("fraud", f"score {decision.score}")]
        return self._fail(Failed("fraud_suspected", None, f"risk score {decision.score}: {reasons}", None), now)

    def review(self, approve: bool, now: datetime) -> list[DomainEvent]:
        if self.status is not PaymentStatus.HELD_FOR_REVIEW or (self.fraud is None and self.review_reason is None):
            raise Conflict(f"payment of order {self.order_id} is {self.status.value}, not held for review")
        verdict = "approved" if approve else "rejected"
        if self.fraud is not None:
            self.fraud = FraudDecision(
                self.fraud.outcome, self.fraud.score, self.fraud.reasons, self.fraud.decided_at, verdict
            )
        if self.review_reason == "amount_mismatch":
            if approve:  # the admin accepts what Stripe took; we report the order's amount, as always
                self.held_at = None
                self.status = PaymentStatus.PROCESSING
                return self._capture(self.intent_id or "", now, "review: amount difference accepted by an admin")
            return self._reject_mismatch("amount_mismatch", "rejected after review: amount differs", now)
        self.held_at = None
        if approve:
            self._move(PaymentStatus.AUTHORIZING, now, "review: approved by an admin")
            return []
        return self._fail(Failed("fraud_suspected", None, "rejected after review", None), now)

    def review_expired(self, now: datetime) -> list[DomainEvent]:
        """Nobody decided the review by its deadline: fail closed (an amount mismatch is refunded)."""
        if self.status is not PaymentStatus.HELD_FOR_REVIEW:
            return []
        if self.review_reason == "amount_mismatch":
            return self._reject_mismatch("review_timeout", "amount mismatch not reviewed in time", now)
        self.held_at = None
        return self._fail(Failed("review_timeout", None, "held for review and not decided in time", None), now)

    def _reject_mismatch(self, reason: str, message: str, now: datetime) -> list[DomainEvent]:
        self.held_at = None
        events = self._fail(Failed(reason, None, message, self.intent_id), now)
        received = self.received_amount or 0
        if received > 0 and not any(r.key == "amount-mismatch" for r in self.refunds):
            self.refunds.append(Refund(key="amount-mismatch", amount=received, reason="amount_mismatch"))
            self._note(now, f"refund amount-mismatch of {received} requested: all that Stripe took")
        return events

    # -- Stripe ------------------------------------------------------------------------------
    def intent_updated(
        self, intent_id: str, intent_status: str, client_secret: str | None, server_confirmed: bool, now: datetime
    ) -> list[DomainEvent]:
        """What the create / confirm call returned."""
        if self.status is PaymentStatus.CANCELLED and self.intent_id is None:
            # The order was cancelled while the intent was being created: cancel it at Stripe too.
            self.intent_id = intent_id
            self.intent_cancel_pending = intent_status not in ("canceled", "succeeded")
            self._note(now, f"intent {intent_id} created after the cancellation: to be canceled")
            return []
        if self.status is not PaymentStatus.AUTHORIZING:
            return []  # a webhook got here first
        self.intent_id = intent_id
        self.intent_status = intent_status
        self.transient_failures = 0
        self.retry_at = None
        if intent_status == "succeeded":
            return self._capture(intent_id, now, "confirmation succeeded") + self._replay_pending(now)
        if intent_status == "canceled":
            failed = self._fail(Failed("canceled", None, "the payment intent was canceled", intent_id), now)
            return failed + self._replay_pending(now)
        if intent_status == "requires_action" or (not server_confirmed and intent_status in CUSTOMER_ACTION_STATES):
            self.client_secret = client_secret
            self._move(PaymentStatus.REQUIRES_ACTION, now, f"intent {intent_id} {intent_status}: customer to act")
            return self._replay_pending(now)
        # processing, requires_capture, or a confirm answer that is not final: the webhook decides.
        self._move(PaymentStatus.PROCESSING, now, f"intent {intent_id} {intent_status}: awaiting Stripe's verdict")
        return self._replay_pending(now)

    def intent_created(self, intent_id: str, now: datetime) -> list[DomainEvent]:
        """Created but not yet confirmed (server mode): remember the id before confirming."""
        if self.status is PaymentStatus.AUTHORIZING and self.intent_id is None:
            self.intent_id = intent_id
            self._note(now, f"intent {intent_id} created")
            return self._replay_pending(now)
        return []

    def declined(self, failure: Failed, now: datetime) -> list[DomainEvent]:
        """Stripe refused for good (a card error on confirm, an invalid request)."""
        if self.status is not PaymentStatus.AUTHORIZING:
            return []
        if failure.intent_id is None and self.intent_id is not None:
            failure = Failed(failure.reason, failure.decline_code, failure.message, self.intent_id)
        return self._fail(failure, now)

    def stripe_unavailable(self, error: str, max_attempts: int, retry_at: datetime, now: datetime) -> list[DomainEvent]:
        """A transient error after the SDK's own retries: retry later with the same keys, or give up."""
        self.transient_failures += 1
        if self.status is PaymentStatus.AUTHORIZING and self.transient_failures >= max_attempts:
            return self._fail(
                Failed(
                    "processing_error",
                    None,
                    f"Stripe unreachable after {self.transient_failures} attempts: {error}",
                    self.intent_id,
                ),
                now,
            )
        self.retry_at = retry_at
        self._note(now, f"Stripe unavailable (attempt {self.transient_failures}): {error}")
        return []

    def ignores_notice(self, notice: StripeNotice) -> bool:
        """A webhook without a PaymentIntent id, or for another intent than this order's, changes nothing
        (a correctly signed event must still be about the payment this service created)."""
        return notice.intent_id is None or (self.intent_id is not None and notice.intent_id != self.intent_id)

    def apply_notice(self, notice: StripeNotice, now: datetime) -> list[DomainEvent]:
        """A verified webhook. Kept until the order (its amount) and this order's intent are known."""
        if self.ignores_notice(notice):
            self._note(now, f"webhook {notice.type} for intent {notice.intent_id} ignored: not this order's intent")
            return []
        if self.order is None or self.intent_id is None:
            self.pending_notices.append(notice)
            self._note(now, f"webhook {notice.type} kept until the order and its intent are known")
            return []
        if notice.card_fingerprint and not self.card_fingerprint:
            self.card_fingerprint = notice.card_fingerprint
        if notice.type == "payment_intent.succeeded":
            if self.status in PAID:
                self._note(now, "webhook payment_intent.succeeded: already captured")
                return []
            intent_id = notice.intent_id or self.intent_id or ""
            if notice.amount is not None and notice.amount != self.order.amount:
                # Our order is the truth for what we report: a different amount at Stripe is not accepted
                # silently. An order that no longer stands gets all of it back; a live one waits for a human.
                self.received_amount = notice.amount
                self.intent_id = intent_id or self.intent_id
                if self.status in (PaymentStatus.CANCELLED, PaymentStatus.FAILED):
                    return self._capture(intent_id, now, "webhook payment_intent.succeeded (amount differs)")
                if self.status is PaymentStatus.HELD_FOR_REVIEW:
                    return []
                detail = f"Stripe received {notice.amount}, the order is for {self.order.amount}"
                self.held_at, self.review_reason = now, "amount_mismatch"
                self.client_secret = None
                self._move(PaymentStatus.HELD_FOR_REVIEW, now, f"held for review: {detail}")
                return [HeldForReview("amount_mismatch", detail)]
            return self._capture(intent_id, now, "webhook payment_intent.succeeded")
        if notice.type == "payment_intent.payment_failed":
            if self.status not in OPEN:
                self._note(now, f"webhook payment_intent.payment_failed ignored: payment is {self.status.value}")
                return []
            reason = notice.failure_code or "card_declined"
            return self._fail(Failed(reason, notice.decline_code, notice.failure_message, notice.intent_id), now)
        if notice.type == "charge.refunded":
            return self._external_refund(notice, now)
        return []

    # -- refunds -----------------------------------------------------------------------------
    @property
    def refunded_total(self) -> int:
        return sum(r.amount for r in self.refunds if r.state == "done")

    @property
    def refundable(self) -> int:
        """What is left to refund, counting refunds already requested."""
        if self.order is None or self.status not in PAID:
            return 0
        return self.order.amount - sum(r.amount for r in self.refunds if r.state != "failed")

    def request_refund(
        self,
        key: str,
        amount: int | None,
        reason: str,
        now: datetime,
        lines: tuple[RefundLine, ...] | None = None,
        shipping: int = 0,
    ) -> Refund | None:
        """Ask for a refund (None: all that is left, for the units not refunded yet). Repeating a key is a no-op.

        Never more than is left of the capture, whatever is asked."""
        if any(r.key == key for r in self.refunds):
            return None
        wanted = self.refundable if amount is None else min(amount, self.refundable)
        if wanted <= 0:
            self._note(now, f"refund {key} not needed: nothing left to refund")
            return None
        if lines is None:
            # All that is left: the units no refund paid back yet, and the shipping if it is still in.
            lines = self._unrefunded_lines()
            shipping = max(wanted - sum(line.amount for line in lines), 0)
        refund = Refund(key=key, amount=wanted, reason=reason, lines=lines, shipping=min(shipping, wanted))
        self.refunds.append(refund)
        self._note(now, f"refund {key} of {wanted} requested: {reason}")
        return refund

    def request_return_refund(
        self,
        return_id: str,
        amount: int,
        currency: str,
        now: datetime,
        lines: tuple[RefundLine, ...] = (),
        shipping: int = 0,
    ) -> Refund | None:
        """An accepted return: refund its amount (what was paid for its units), at most what is left."""
        if self.order is not None and currency != self.order.currency:
            self._note(now, f"return {return_id} ignored: refund in {currency}, paid in {self.order.currency}")
            return None
        return self.request_refund(f"return-{return_id}", amount, "return", now, lines=lines, shipping=shipping)

    def _unrefunded_lines(self) -> tuple[RefundLine, ...]:
        """The order's units no refund has paid back yet, and what they are worth (the kit's rule)."""
        if self.order is None or not self.order.lines:
            return ()
        refunded: dict[str, int] = {}
        for r in self.refunds:
            if r.state != "failed":
                for line in r.lines:
                    refunded[line.product_id] = refunded.get(line.product_id, 0) + line.quantity
        paid = [PaidLine(li.product_id, li.quantity, li.paid) for li in self.order.lines]
        skus = {li.product_id: li.sku for li in self.order.lines}
        return tuple(
            RefundLine(u.product_id, skus[u.product_id], u.quantity, u.amount) for u in remaining_lines(paid, refunded)
        )

    @property
    def refunds_to_send(self) -> list[Refund]:
        return [r for r in self.refunds if r.state == "requested"]

    def refund_done(self, key: str, refund_id: str, now: datetime) -> list[DomainEvent]:
        refund = next((r for r in self.refunds if r.key == key), None)
        if refund is None or refund.state == "done":
            return []
        refund.state = "done"
        refund.refund_id = refund_id
        self.transient_failures = 0
        self.retry_at = None
        return [self._refunded(refund, now)]

    def refund_failed(self, key: str, why: str, now: datetime) -> None:
        """Stripe refused the refund for good: recorded for an admin; the amount is refundable again."""
        refund = next((r for r in self.refunds if r.key == key), None)
        if refund is not None and refund.state == "requested":
            refund.state = "failed"
            self.retry_at = None
            self._note(now, f"refund {key} refused by Stripe: {why}")

    @property
    def needs_work(self) -> bool:
        """Something is still owed to Stripe (a charge, a refund, a cancellation): the sweeper resumes it."""
        return (
            self.ready_to_screen
            or self.status is PaymentStatus.AUTHORIZING
            or self.intent_cancel_pending
            or bool(self.refunds_to_send)
        )

    def due(self, now: datetime) -> bool:
        return self.retry_at is None or self.retry_at <= now

    def claim(self, now: datetime, lease_s: float) -> bool:
        """Take the next Stripe step for `lease_s`: concurrent handlers of the same order (its events arrive
        on several topics) then do not call Stripe side by side. A holder that crashed loses the lease when
        it expires and the sweeper resumes; the idempotency keys make that repeat harmless."""
        if not self.due(now):
            return False
        if self.status is PaymentStatus.AUTHORIZING and self.intent_id is None:
            # Stored before the call: a later claim that sees an earlier attempt looks for its intent first.
            self.create_attempts += 1
        self.retry_at = now + timedelta(seconds=lease_s)
        return True

    def release(self) -> None:
        self.retry_at = None

    def cancel_order(self, now: datetime) -> list[DomainEvent]:
        """The cart cancelled the order. Our record, not the event's `was_paid`, says what was taken."""
        if self.order_cancelled:
            return []
        self.order_cancelled = True
        if self.status in PAID:
            # Only shipping knows whether the parcel can still be stopped: never goods and money both.
            if self.shipping_verdict == "cancelled":
                self.request_refund("order-cancelled", None, "order_cancelled", now)
            elif self.shipping_verdict == "refused":
                self._note(now, "order cancelled after dispatch: shipping refused, nothing refunded")
            else:
                self.refund_awaits_shipping = True
                self._note(now, "order cancelled after capture: refund once shipping has stopped the parcel")
            return []
        if self.status in OPEN:
            if self.intent_id is not None:
                self.intent_cancel_pending = True
            self._move(PaymentStatus.CANCELLED, now, "order cancelled before capture")
        else:
            self._note(now, f"order cancelled; payment was {self.status.value}")
        return []

    def shipment_cancelled(self, now: datetime) -> None:
        if self.shipping_verdict is not None:
            return
        self.shipping_verdict = "cancelled"
        self._note(now, "shipping cancelled the shipment")
        if self.refund_awaits_shipping:
            self.refund_awaits_shipping = False
            self.request_refund("order-cancelled", None, "order_cancelled", now)

    def cancellation_refused(self, now: datetime) -> None:
        if self.shipping_verdict is not None:
            return
        self.shipping_verdict = "refused"
        self.refund_awaits_shipping = False
        self._note(now, "shipping refused the cancellation (already dispatched): no refund")

    def intent_cancelled(self, now: datetime) -> None:
        self.intent_cancel_pending = False
        self._note(now, f"intent {self.intent_id} canceled at Stripe")

    # -- internals ---------------------------------------------------------------------------
    def _capture(self, intent_id: str, now: datetime, why: str) -> list[DomainEvent]:
        self.intent_id = intent_id or self.intent_id
        self.intent_status = "succeeded"
        self.client_secret = None
        if self.status in (PaymentStatus.CANCELLED, PaymentStatus.FAILED):
            # Money was taken for an order that no longer stands (a late success after a cancel or a
            # final failure): give it all back rather than report a capture nobody expects.
            previous = self.status
            self._move(PaymentStatus.CAPTURED, now, f"{why} after the payment was {previous.value}")
            taken = self.received_amount
            if taken is not None and taken != (self.order.amount if self.order else taken):
                refund = Refund(key="late-capture", amount=taken, reason=f"captured_after_{previous.value}")
                if not any(r.key == refund.key for r in self.refunds):
                    self.refunds.append(refund)
            else:
                self.request_refund("late-capture", None, f"captured_after_{previous.value}", now)
            return []
        self._move(PaymentStatus.CAPTURED, now, why)
        return [Captured(self.intent_id or "")]

    def _fail(self, failure: Failed, now: datetime) -> list[DomainEvent]:
        self.failure = failure
        self.client_secret = None
        self.retry_at = None
        self._move(PaymentStatus.FAILED, now, f"failed: {failure.reason} {failure.message}".strip())
        return [failure]

    def _external_refund(self, notice: StripeNotice, now: datetime) -> list[DomainEvent]:
        """charge.refunded: ours are recognised by refund id or, when the echo overtakes the answer to our
        own call, by the idempotency key we put in the refund's metadata; one made elsewhere is recorded."""
        known = {r.refund_id for r in self.refunds if r.refund_id}
        events: list[DomainEvent] = []
        keys = dict(zip(notice.refund_ids, notice.refund_keys, strict=False))
        for rid in notice.refund_ids:
            if rid in known:
                continue
            ours = next(
                (
                    r
                    for r in self.refunds
                    if r.state == "requested" and keys.get(rid) == refund_idempotency_key(self.order_id, r.key)
                ),
                None,
            )
            if ours is not None:
                self._note(now, f"webhook charge.refunded: our refund {ours.key} ({rid}) confirmed by Stripe's echo")
                events += self.refund_done(ours.key, rid, now)
                known.add(rid)
        new_ids = [rid for rid in notice.refund_ids if rid not in known]
        if not new_ids or self.order is None:
            if not events:
                self._note(now, "webhook charge.refunded: refunds already known")
            return events
        amount_refunded = notice.amount or 0
        # Refunds of ours still in flight count as taken already: an unknown refund is never counted twice.
        accounted = sum(r.amount for r in self.refunds if r.state in ("done", "requested"))
        extra = min(amount_refunded - accounted, self.order.amount - accounted)
        if extra <= 0 or self.status not in PAID:
            self._note(now, "webhook charge.refunded: nothing new to record")
            return events
        refund = Refund(
            key=f"stripe-{new_ids[-1]}", amount=extra, reason="refunded_at_stripe", state="done", refund_id=new_ids[-1]
        )
        self.refunds.append(refund)
        return [*events, self._refunded(refund, now)]

    def _refunded(self, refund: Refund, now: datetime) -> Refunded:
        assert self.order is not None
        total = self.refunded_total
        full = total >= self.order.amount
        self._move(
            PaymentStatus.REFUNDED if full else PaymentStatus.PARTIALLY_REFUNDED,
            now,
            f"refund {refund.key} of {refund.amount} done",
        )
        return Refunded(
            refund.key, refund.refund_id or "", refund.amount, total, full, refund.reason, refund.lines, refund.shipping
        )

    def _move(self, status: PaymentStatus, now: datetime, note: str) -> None:
        self.status = status
        self._note(now, note)

    def _note(self, now: datetime, note: str) -> None:
        self.history.append(HistoryEntry(at=now, status=self.status.value, note=note))
