from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from kasse_contracts.base import Money
from kasse_contracts.events import (
    CancellationRefused,
    OrderCancelled,
    PaymentCaptured,
    PaymentFailed,
    PaymentRefunded,
    ReturnReceived,
    ShipmentCancelled,
    StockReserved,
)
from kasse_contracts.events.common import StockLine
from kasse_contracts.events.orders import CancellationReason
from kasse_payment.application.ports import GatewayDeclined, GatewayUnavailable
from kasse_payment.application.service import PaymentConfig, PaymentService
from kasse_payment.domain.fraud import FraudPolicy
from kasse_payment.domain.payment import PaymentStatus, StripeNotice
from kasse_testkit import samples

from .fakes import FakeGateway, InMemoryPayments

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class World:
    def __init__(self, *, server: bool = False, **policy: Any) -> None:
        self.repo = InMemoryPayments()
        self.gateway = FakeGateway()
        self.clock = Clock()
        self.config = PaymentConfig(
            server_confirmation=server,
            server_payment_method="pm_card_visa",
            fraud=FraudPolicy(disposable_domains=frozenset({"mailinator.com"}), **policy),
            max_attempts=3,
            retry_backoff_s=1.0,
        )
        self.service = PaymentService(self.repo, self.repo, self.gateway, self.config, clock=self.clock)

    def events(self, kind: type) -> list[Any]:
        return [e.event for e in self.repo.published if isinstance(e.event, kind)]

    async def place_and_reserve(self, order_id: str | None = None, **order: Any) -> str:
        placed = samples.order_placed(order_id, **order)
        await self.service.order_placed(placed, f"evt-placed-{placed.order_id}")
        await self.service.stock_reserved(reserved(placed.order_id), f"evt-reserved-{placed.order_id}")
        return placed.order_id

    async def notice(self, order_id: str, kind: str, event_id: str, **kw: Any) -> bool:
        intent = kw.pop("intent_id", None) or (await self.repo.load(order_id)).intent_id  # type: ignore[union-attr]
        return await self.service.stripe_notice(StripeNotice(event_id, kind, order_id, intent, **kw))


def reserved(order_id: str) -> StockReserved:
    return StockReserved(
        occurred_at=samples.now(),
        session_id="sess_1",
        order_id=order_id,
        lines=[StockLine(product_id="prod_1", sku="SKU-prod_1", quantity=1)],
    )


def cancelled(order_id: str, was_paid: bool = True) -> OrderCancelled:
    return OrderCancelled(
        occurred_at=samples.now(),
        session_id="sess_1",
        order_id=order_id,
        reason=CancellationReason.CUSTOMER_REQUEST,
        was_paid=was_paid,
        total=samples.eur(2494),
    )


def shipment_cancelled(order_id: str) -> ShipmentCancelled:
    return ShipmentCancelled(
        occurred_at=samples.now(), session_id="sess_1", order_id=order_id, shipment_id="shp_1", reason="x"
    )


def cancellation_refused(order_id: str) -> CancellationRefused:
    return CancellationRefused(
        occurred_at=samples.now(),
        session_id="sess_1",
        order_id=order_id,
        shipment_id="shp_1",
        reason="already_dispatched",
        dispatched_at=samples.now(),
    )


def returned(order_id: str, return_id: str, amount: int) -> ReturnReceived:
    return ReturnReceived(
        occurred_at=samples.now(),
        session_id="sess_1",
        order_id=order_id,
        return_id=return_id,
        lines=[],
        refund_amount=Money(amount=amount, currency="EUR"),
    )


async def test_customer_mode_creates_one_intent_for_the_orders_amount_and_hands_out_the_client_secret() -> None:
    w = World()
    order_id = await w.place_and_reserve(lines=[samples.line_item(unit_price=1000, quantity=3)])
    ((op, call),) = w.gateway.calls
    assert op == "create_intent"
    assert call == {
        "order_id": order_id,
        "amount": 3495,  # 3 x 1000 + 495 shipping, from OrderPlaced
        "currency": "EUR",
        "email": "erika@example.com",
        "idempotency_key": f"kasse-payment-{order_id}-create",
        "server_confirmation": False,
    }
    payment = await w.service.get(order_id)
    assert payment.status is PaymentStatus.REQUIRES_ACTION
    assert payment.client_secret == "pi_1_secret_x"
    assert w.repo.published == []


async def test_from_ready_to_intent_the_order_is_read_once_and_written_twice_between_the_steps() -> None:
    # Under load every store command waits its turn: the steps go on from the state their own write stored,
    # and an allowed screening claims the charge in the same write (was: 6 reads and 3 writes).
    w = World()
    placed = samples.order_placed()
    await w.service.order_placed(placed, "evt-p")
    calls: list[str] = []
    load, save = w.repo.load, w.repo.save

    async def counted_load(order_id: str) -> Any:
        calls.append("load")
        return await load(order_id)

    async def counted_save(*args: Any) -> bool:
        calls.append("save")
        return await save(*args)

    w.repo.load, w.repo.save = counted_load, counted_save  # type: ignore[method-assign]
    await w.service.stock_reserved(reserved(placed.order_id), "evt-r")
    # StockReserved recorded; advance reads once; screening (+ claim) written; the intent recorded.
    assert calls == ["load", "save", "load", "load", "save", "load", "save"]
    assert w.gateway.keys("create_intent") == [f"kasse-payment-{placed.order_id}-create"]
    payment = await w.service.get(placed.order_id)
    assert payment.status is PaymentStatus.REQUIRES_ACTION and payment.retry_at is None
    assert payment.create_attempts == 1


async def test_stock_reserved_before_the_order_waits_for_it_then_charges_once() -> None:
    w = World(server=True)
    placed = samples.order_placed()
    await w.service.stock_reserved(reserved(placed.order_id), "evt-r")
    assert w.gateway.calls == []
    assert w.repo.status(placed.order_id) is PaymentStatus.PENDING
    await w.service.order_placed(placed, "evt-p")
    assert w.gateway.keys("create_intent") == [f"kasse-payment-{placed.order_id}-create"]
    (captured,) = w.events(PaymentCaptured)
    assert captured.amount == placed.total and captured.payment_intent_id == "pi_1"
    assert captured.session_id == placed.session_id


async def test_a_redelivered_or_repeated_stock_reserved_creates_no_second_intent() -> None:
    w = World(server=True)
    order_id = await w.place_and_reserve()
    await w.service.stock_reserved(reserved(order_id), f"evt-reserved-{order_id}")  # same record again
    await w.service.stock_reserved(reserved(order_id), "evt-another-copy")  # a re-published copy
    assert len(w.gateway.keys("create_intent")) == 1
    assert len(w.gateway.keys("confirm_intent")) == 1
    assert len(w.events(PaymentCaptured)) == 1


async def test_server_confirmation_that_succeeds_captures_and_the_webhook_is_then_a_duplicate() -> None:
    w = World(server=True)
    order_id = await w.place_and_reserve()
    assert w.gateway.keys("confirm_intent") == [f"kasse-payment-{order_id}-confirm"]
    assert w.repo.status(order_id) is PaymentStatus.CAPTURED
    assert await w.notice(order_id, "payment_intent.succeeded", "evt_stripe_1") is True
    assert await w.notice(order_id, "payment_intent.succeeded", "evt_stripe_1") is False  # replayed id
    assert len(w.events(PaymentCaptured)) == 1
    assert (await w.service.get(order_id)).client_secret is None


async def test_a_card_error_on_confirmation_ends_as_payment_failed_with_the_decline() -> None:
    w = World(server=True)
    w.gateway.fail_confirm = GatewayDeclined("card_declined", "Your card has insufficient funds.", "insufficient_funds")
    order_id = await w.place_and_reserve()
    (failed,) = w.events(PaymentFailed)
    assert (failed.reason, failed.decline_code) == ("card_declined", "insufficient_funds")
    assert failed.payment_intent_id == "pi_1" and failed.amount.amount == 2494
    assert w.repo.status(order_id) is PaymentStatus.FAILED


async def test_transient_stripe_errors_are_retried_later_with_the_same_key_and_end_as_failed() -> None:
    w = World(server=True)
    w.gateway.fail_create = GatewayUnavailable("APIConnectionError")
    order_id = await w.place_and_reserve()
    assert w.events(PaymentFailed) == []
    payment = await w.repo.load(order_id)
    assert payment is not None and payment.retry_at is not None
    # The kit's backoff with full jitter: at most 1 s the first time (then 2, 4, …).
    assert w.clock.now < payment.retry_at <= w.clock.now + timedelta(seconds=1)
    assert await w.service.sweep(idle_s=0) == 0  # not due yet
    w.clock.advance(1)
    assert await w.service.sweep(idle_s=0) == 1
    w.clock.advance(10)
    await w.service.sweep(idle_s=0)
    assert set(w.gateway.keys("create_intent")) == {f"kasse-payment-{order_id}-create"}
    assert len(w.gateway.keys("create_intent")) == 3
    (failed,) = w.events(PaymentFailed)
    assert failed.reason == "processing_error" and "3 attempts" in failed.message


async def test_a_transient_error_then_success_captures() -> None:
    w = World(server=True)
    w.gateway.fail_confirm = GatewayUnavailable("timeout")
    order_id = await w.place_and_reserve()
    w.gateway.fail_confirm = None
    w.clock.advance(5)
    await w.service.sweep(idle_s=0)
    assert w.repo.status(order_id) is PaymentStatus.CAPTURED
    assert len(set(w.gateway.keys("create_intent"))) == 1 and len(w.events(PaymentCaptured)) == 1


async def test_a_webhook_before_the_order_is_kept_and_applied_when_its_intent_is_known() -> None:
    w = World()
    placed = samples.order_placed()
    assert await w.notice(placed.order_id, "payment_intent.succeeded", "evt_early", intent_id="pi_1") is True
    assert w.events(PaymentCaptured) == []
    await w.service.order_placed(placed, "evt-p")
    assert w.events(PaymentCaptured) == []  # the order is known, its intent not yet: still kept
    await w.service.stock_reserved(reserved(placed.order_id), "evt-r")
    (captured,) = w.events(PaymentCaptured)
    assert captured.amount == placed.total and captured.payment_intent_id == "pi_1"
    assert len(w.gateway.keys("create_intent")) == 1


async def test_a_signed_webhook_without_an_intent_or_for_another_intent_changes_nothing() -> None:
    # Issue 13: a correctly signed payment_intent.succeeded without an intent id used to pay the order.
    w = World()
    order_id = await w.place_and_reserve()
    before = await w.repo.load(order_id)
    assert before is not None and before.intent_id == "pi_1"
    history = len(before.history)
    for event_id, intent in (("evt_none", None), ("evt_other", "pi_someone_else")):
        outcome = await w.service.stripe_notice(
            StripeNotice(event_id, "payment_intent.succeeded", order_id, intent, amount=2494)
        )
        assert outcome is None  # ignored
    after = await w.repo.load(order_id)
    assert after is not None and after.status is before.status and len(after.history) == history
    assert w.events(PaymentCaptured) == []
    # an early one for another intent is kept, then dropped once the order's intent is known
    w2 = World()
    placed = samples.order_placed()
    await w2.notice(placed.order_id, "payment_intent.succeeded", "evt_early", intent_id="pi_forged")
    await w2.service.order_placed(placed, "evt-p")
    await w2.service.stock_reserved(reserved(placed.order_id), "evt-r")
    assert w2.events(PaymentCaptured) == []
    kept = await w2.repo.load(placed.order_id)
    assert kept is not None and kept.pending_notices == []


async def test_payment_failed_webhook_publishes_the_decline_reason() -> None:
    w = World()
    order_id = await w.place_and_reserve()
    await w.notice(
        order_id,
        "payment_intent.payment_failed",
        "evt_f",
        failure_code="card_declined",
        decline_code="stolen_card",
        failure_message="Your card was declined.",
    )
    (failed,) = w.events(PaymentFailed)
    assert (failed.reason, failed.decline_code, failed.message) == (
        "card_declined",
        "stolen_card",
        "Your card was declined.",
    )
    # a webhook for some other intent of the same order changes nothing
    await w.notice(order_id, "payment_intent.succeeded", "evt_other", intent_id="pi_other")
    assert w.events(PaymentCaptured) == []


async def test_cancellation_after_capture_refunds_in_full_once_when_shipping_has_stopped_the_parcel() -> None:
    w = World(server=True)
    order_id = await w.place_and_reserve()
    await w.service.order_cancelled(cancelled(order_id), "evt-c")
    await w.service.order_cancelled(cancelled(order_id), "evt-c-copy")
    assert [c for c in w.gateway.calls if c[0] == "refund"] == []  # shipping has not answered yet
    await w.service.shipment_cancelled(shipment_cancelled(order_id), "evt-sc")
    await w.service.shipment_cancelled(shipment_cancelled(order_id), "evt-sc")  # redelivered
    ((_, refund),) = [c for c in w.gateway.calls if c[0] == "refund"]
    assert refund["amount"] == 2494 and refund["idempotency_key"] == f"kasse-refund-{order_id}-order-cancelled"
    (refunded,) = w.events(PaymentRefunded)
    assert refunded.full and refunded.amount.amount == 2494 and refunded.total_refunded.amount == 2494
    assert w.repo.status(order_id) is PaymentStatus.REFUNDED


async def test_a_cancellation_shipping_refused_is_never_refunded_whatever_the_order_of_events() -> None:
    w = World(server=True)
    first = await w.place_and_reserve()
    await w.service.order_cancelled(cancelled(first), "evt-c1")
    await w.service.cancellation_refused(cancellation_refused(first), "evt-r1")
    second = await w.place_and_reserve()
    await w.service.cancellation_refused(cancellation_refused(second), "evt-r2")  # overtakes the cancellation
    await w.service.order_cancelled(cancelled(second), "evt-c2")
    await w.service.shipment_cancelled(shipment_cancelled(second), "evt-sc2")  # a contradiction: first verdict holds
    assert [c for c in w.gateway.calls if c[0] == "refund"] == []
    assert w.events(PaymentRefunded) == []
    assert w.repo.status(first) is PaymentStatus.CAPTURED and w.repo.status(second) is PaymentStatus.CAPTURED


async def test_our_refunds_echo_arriving_before_the_refund_is_recorded_counts_once() -> None:
    w = World(server=True)
    order_id = await w.place_and_reserve()
    echoed: list[bool] = []
    original = w.gateway.refund

    async def refund_with_an_early_echo(**kw: Any) -> str:
        refund_id = await original(**kw)
        # Stripe's charge.refunded arrives while our call is still in flight (its answer not recorded yet),
        # naming the refund by the key we put in its metadata.
        echoed.append(
            await w.notice(
                order_id,
                "charge.refunded",
                "evt_echo",
                amount=kw["amount"],
                refund_ids=(refund_id,),
                refund_keys=(kw["idempotency_key"],),
            )
        )
        return refund_id

    w.gateway.refund = refund_with_an_early_echo  # type: ignore[method-assign]
    await w.service.return_received(returned(order_id, "ret_1", 1000), "evt-ret-1")
    assert echoed == [True]
    (refunded,) = w.events(PaymentRefunded)
    assert (refunded.amount.amount, refunded.total_refunded.amount, refunded.full) == (1000, 1000, False)
    payment = await w.repo.load(order_id)
    assert payment is not None and payment.refunded_total == 1000 and len(payment.refunds) == 1
    assert payment.status is PaymentStatus.PARTIALLY_REFUNDED


async def test_an_unknown_refund_is_not_counted_twice_while_ours_is_in_flight() -> None:
    w = World(server=True)
    order_id = await w.place_and_reserve()
    w.gateway.fail_refund = GatewayUnavailable("down")
    await w.service.return_received(returned(order_id, "ret_1", 1000), "evt-ret-1")  # requested, not sent
    # An echo without our key (say an older Stripe payload) that only covers our in-flight refund: nothing new.
    await w.notice(order_id, "charge.refunded", "evt_ch", amount=1000, refund_ids=("re_x",))
    assert w.events(PaymentRefunded) == []


async def test_cancellation_before_stock_is_reserved_never_charges() -> None:
    w = World(server=True)
    placed = samples.order_placed()
    await w.service.order_placed(placed, "evt-p")
    await w.service.order_cancelled(cancelled(placed.order_id, was_paid=False), "evt-c")
    await w.service.stock_reserved(reserved(placed.order_id), "evt-r")
    assert [c[0] for c in w.gateway.calls] == []
    assert w.repo.status(placed.order_id) is PaymentStatus.CANCELLED


async def test_cancellation_while_the_customer_must_act_cancels_the_intent() -> None:
    w = World()
    order_id = await w.place_and_reserve()
    await w.service.order_cancelled(cancelled(order_id, was_paid=False), "evt-c")
    assert [c[0] for c in w.gateway.calls] == ["create_intent", "cancel_intent"]
    # Stripe succeeded anyway before the cancel landed: the money goes back
    await w.notice(order_id, "payment_intent.succeeded", "evt_late")
    assert w.events(PaymentCaptured) == []
    (refunded,) = w.events(PaymentRefunded)
    assert refunded.full and refunded.reason == "captured_after_cancelled"


async def test_returns_refund_in_part_capped_at_what_was_paid_and_stripe_echoes_are_recognised() -> None:
    w = World(server=True)
    order_id = await w.place_and_reserve()
    await w.service.return_received(returned(order_id, "ret_1", 1000), "evt-ret-1")
    await w.service.return_received(returned(order_id, "ret_1", 1000), "evt-ret-1")  # redelivered
    await w.service.return_received(returned(order_id, "ret_2", 5000), "evt-ret-2")  # more than is left
    amounts = [c[1]["amount"] for c in w.gateway.calls if c[0] == "refund"]
    assert amounts == [1000, 1494]
    first, second = w.events(PaymentRefunded)
    assert (first.full, first.total_refunded.amount) == (False, 1000)
    assert (second.full, second.total_refunded.amount) == (True, 2494)
    # charge.refunded for our own refunds: nothing new
    ours = (f"re_kasse-refund-{order_id}-return-ret_1", f"re_kasse-refund-{order_id}-return-ret_2")
    await w.notice(order_id, "charge.refunded", "evt_ch", amount=2494, refund_ids=ours)
    assert len(w.events(PaymentRefunded)) == 2


async def test_a_refund_made_in_the_stripe_dashboard_is_recorded_from_charge_refunded() -> None:
    w = World(server=True)
    order_id = await w.place_and_reserve()
    await w.notice(order_id, "charge.refunded", "evt_ch", amount=500, refund_ids=("re_dashboard",))
    (refunded,) = w.events(PaymentRefunded)
    assert (refunded.refund_id, refunded.amount.amount, refunded.full) == ("re_dashboard", 500, False)
    assert not [c for c in w.gateway.calls if c[0] == "refund"]


async def test_a_scripted_velocity_attack_is_blocked_before_stripe_and_ordinary_shoppers_pass() -> None:
    w = World(server=True, max_orders_per_email=3)
    attacker = [await w.place_and_reserve(email="mule@example.net") for _ in range(6)]
    shoppers = [await w.place_and_reserve(email=f"shopper{i}@example.com") for i in range(3)]
    statuses = [w.repo.status(o) for o in attacker]
    assert statuses == [PaymentStatus.CAPTURED] * 3 + [PaymentStatus.FAILED] * 3
    assert all(w.repo.status(o) is PaymentStatus.CAPTURED for o in shoppers)
    blocked = w.events(PaymentFailed)
    assert {f.order_id for f in blocked} == set(attacker[3:])
    assert all(f.reason == "fraud_suspected" and f.payment_intent_id is None for f in blocked)
    charged = {c[1]["order_id"] for c in w.gateway.calls if c[0] == "create_intent"}
    assert charged.isdisjoint(attacker[3:])
    decisions = await w.service.fraud_decisions(outcome="block")
    assert [d.order_id for d in decisions] and {d.order_id for d in decisions} == set(attacker[3:])
    assert decisions[0].fraud and decisions[0].fraud.reasons[0].rule == "velocity_email"


async def test_a_held_payment_is_charged_when_an_admin_approves_and_failed_when_rejected() -> None:
    w = World(server=True, hold_for_review=True)
    held = await w.place_and_reserve(email="x@mailinator.com", billing_country="US")
    rejected = await w.place_and_reserve(email="y@mailinator.com", billing_country="US")
    assert w.repo.status(held) is PaymentStatus.HELD_FOR_REVIEW
    assert w.gateway.keys("create_intent") == []
    await w.service.review(held, approve=True)
    await w.service.review(rejected, approve=False)
    assert w.repo.status(held) is PaymentStatus.CAPTURED
    (failed,) = w.events(PaymentFailed)
    assert failed.order_id == rejected and failed.reason == "fraud_suspected"
    from kasse_common.errors import Conflict

    with pytest.raises(Conflict):
        await w.service.review(held, approve=True)


async def test_amount_above_history_uses_captured_payments_of_the_same_customer() -> None:
    w = World(server=True, points_amount=60)
    for _ in range(2):
        await w.place_and_reserve(customer_id="cust_1", email="c1@example.com")
    big = await w.place_and_reserve(
        customer_id="cust_1", email="c1@example.com", lines=[samples.line_item(unit_price=100_000)]
    )
    assert w.repo.status(big) is PaymentStatus.FAILED
    payment = await w.repo.load(big)
    assert payment is not None and payment.fraud is not None
    assert [r.rule for r in payment.fraud.reasons] == ["amount_above_history"]


async def test_a_capture_for_a_different_amount_is_held_for_review_then_approved_or_refunded() -> None:
    w = World()
    accepted = await w.place_and_reserve()
    rejected = await w.place_and_reserve()
    await w.notice(accepted, "payment_intent.succeeded", "evt_s1", amount=99)
    await w.notice(rejected, "payment_intent.succeeded", "evt_s2", amount=99)
    assert w.events(PaymentCaptured) == []  # not accepted silently
    assert w.repo.status(accepted) is PaymentStatus.HELD_FOR_REVIEW
    assert w.service.held_for_review == {"amount_mismatch": 2}
    payment = await w.repo.load(accepted)
    assert payment is not None and payment.review_reason == "amount_mismatch" and payment.received_amount == 99
    assert "Stripe received 99, the order is for 2494" in payment.history[-1].note

    await w.service.review(accepted, approve=True)
    (captured,) = w.events(PaymentCaptured)
    assert (captured.order_id, captured.amount.amount) == (accepted, 2494)  # our order is the truth

    await w.service.review(rejected, approve=False)
    (failed,) = w.events(PaymentFailed)
    assert (failed.order_id, failed.reason) == (rejected, "amount_mismatch")
    ((_, refund),) = [c for c in w.gateway.calls if c[0] == "refund"]
    assert refund["amount"] == 99  # all that Stripe took goes back


async def test_a_review_nobody_decides_in_time_is_rejected_by_the_sweeper() -> None:
    w = World(server=True, hold_for_review=True)
    held = await w.place_and_reserve(email="x@mailinator.com", billing_country="US")
    assert w.repo.status(held) is PaymentStatus.HELD_FOR_REVIEW
    await w.service.sweep(idle_s=0)
    assert w.repo.status(held) is PaymentStatus.HELD_FOR_REVIEW
    w.clock.advance(w.config.review_timeout_s + 1)
    await w.service.sweep(idle_s=0)
    (failed,) = w.events(PaymentFailed)
    assert (failed.order_id, failed.reason) == (held, "review_timeout")
    assert w.gateway.keys("create_intent") == []


async def test_a_restart_between_creating_the_intent_and_recording_it_looks_for_the_intent_first() -> None:
    w = World()
    placed = samples.order_placed()
    original = w.gateway.create_intent

    async def create_then_crash(**kw: Any) -> Any:
        await original(**kw)
        raise RuntimeError("killed after Stripe created the intent, before it was recorded")

    w.gateway.create_intent = create_then_crash  # type: ignore[method-assign]
    await w.service.order_placed(placed, "evt-p")
    with pytest.raises(RuntimeError):
        await w.service.stock_reserved(reserved(placed.order_id), "evt-r")
    w.gateway.create_intent = original  # type: ignore[method-assign]
    w.clock.advance(w.config.step_lease_s + 1)  # the crashed holder's lease runs out; the sweeper resumes
    await w.service.sweep(idle_s=0)
    assert [c[0] for c in w.gateway.calls] == ["create_intent", "find_intent"]  # found: no second create
    payment = await w.repo.load(placed.order_id)
    assert payment is not None and payment.intent_id == "pi_1" and payment.status is PaymentStatus.REQUIRES_ACTION


async def test_server_mode_interrupted_after_recording_the_intent_confirms_it_without_creating_again() -> None:
    w = World(server=True)
    placed = samples.order_placed()
    w.gateway.fail_confirm = GatewayUnavailable("Stripe down while confirming")
    await w.service.order_placed(placed, "evt-p")
    await w.service.stock_reserved(reserved(placed.order_id), "evt-r")
    w.gateway.fail_confirm = None
    w.clock.advance(3600)
    await w.service.sweep(idle_s=0)
    assert [c[0] for c in w.gateway.calls] == ["create_intent", "confirm_intent", "confirm_intent"]
    assert w.repo.status(placed.order_id) is PaymentStatus.CAPTURED
