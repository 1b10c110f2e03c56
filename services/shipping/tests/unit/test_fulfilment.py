from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest

from kasse_common.errors import NotFound, Unprocessable
from kasse_contracts.events import (
    CancellationReason,
    CancellationRefused,
    OrderCancelled,
    ReturnReason,
    ReturnReceived,
    ReturnRequested,
    ShipmentCancelled,
    ShipmentCreated,
    ShipmentDelivered,
    ShipmentDispatched,
)
from kasse_shipping.domain.fulfilment import RequestedLine
from kasse_testkit.samples import line_item, order_placed

from .helpers import World

pytestmark = pytest.mark.unit


def paid_order(world: World, **kw: object):  # type: ignore[no-untyped-def]
    from kasse_contracts.events import PaymentCaptured

    order = order_placed(**kw)  # type: ignore[arg-type]
    payment = PaymentCaptured(
        occurred_at=world.clock(),
        session_id=order.session_id,
        order_id=order.order_id,
        payment_intent_id="pi_1",
        amount=order.total,
    )
    return order, payment


async def test_one_shipment_whatever_the_order_of_arrival_and_however_often_events_come() -> None:
    world = World()
    order, payment = paid_order(world)
    await world.service.payment_captured(payment, "evt-pay")  # payment first: nothing to ship yet
    assert world.published(ShipmentCreated) == []
    await world.service.order_placed(order, "evt-order")
    await world.service.order_placed(order, "evt-order")  # redelivered
    await world.service.payment_captured(payment, "evt-pay")  # redelivered
    await world.service.payment_captured(payment, "evt-pay-again")  # re-emitted under a new id
    (created,) = world.published(ShipmentCreated)
    assert created.order_id == order.order_id and created.session_id == order.session_id
    # Standard to DE, paid Tuesday 10:00 Berlin before the cut-off: leaves today, latest +3 days.
    assert created.promised_delivery_date.isoformat() == "2026-11-27"
    assert created.carrier == "SimPost" and created.tracking_number.startswith("SIM")


async def test_scans_missed_while_down_are_caught_up_on_their_schedule() -> None:
    world = World()
    order, payment = paid_order(world)
    await world.service.order_placed(order, "e1")
    await world.service.payment_captured(payment, "e2")
    created_at = world.clock()
    world.clock.advance(hours=5)
    assert await world.service.advance_due_shipments() == 0
    world.clock.advance(days=3)  # the service was down through both scans
    assert await world.service.advance_due_shipments() == 1
    (dispatched,) = world.published(ShipmentDispatched)
    (delivered,) = world.published(ShipmentDelivered)
    assert dispatched.dispatched_at == created_at + timedelta(hours=6)
    assert delivered.delivered_at == created_at + timedelta(hours=54)
    assert await world.service.advance_due_shipments() == 0  # nothing left to do
    tracking = await world.service.tracking_by_number(dispatched.tracking_number)
    assert [e.status for e in tracking.shipment.timeline] == ["created", "dispatched", "delivered"]  # type: ignore[union-attr]


def cancellation(order_id: str, session_id: str, world: World) -> OrderCancelled:
    return OrderCancelled(
        occurred_at=world.clock(),
        session_id=session_id,
        order_id=order_id,
        reason=CancellationReason.FRAUD_SUSPECTED,
        was_paid=True,
        total={"amount": 100, "currency": "EUR"},  # type: ignore[arg-type]
    )


async def test_cancellation_stops_an_undispatched_shipment_but_not_a_dispatched_one() -> None:
    world = World()
    early, early_pay = paid_order(world)
    late, late_pay = paid_order(world)
    for o, p in ((early, early_pay), (late, late_pay)):
        await world.service.order_placed(o, "placed-" + o.order_id)
        await world.service.payment_captured(p, "paid-" + o.order_id)
    world.clock.advance(hours=1)
    await world.service.order_cancelled(cancellation(early.order_id, early.session_id, world), "c1")
    world.clock.advance(hours=6)
    await world.service.advance_due_shipments()  # only `late` is dispatched
    await world.service.order_cancelled(cancellation(late.order_id, late.session_id, world), "c2")
    world.clock.advance(days=3)
    await world.service.advance_due_shipments()

    stopped = (await world.service.tracking_by_order(early.order_id)).shipment
    assert stopped is not None and stopped.status.value == "cancelled" and stopped.next_transition_at is None
    moving = (await world.service.tracking_by_order(late.order_id)).shipment
    assert moving is not None and moving.status.value == "delivered"
    assert any("refused: the parcel had already left" in t.description for t in moving.timeline)
    assert [e.order_id for e in world.published(ShipmentDispatched)] == [late.order_id]
    # Shipping's verdicts: payment refunds only the stopped one; the dispatched one's cancellation is refused.
    (stopped_event,) = world.published(ShipmentCancelled)
    assert (stopped_event.order_id, stopped_event.shipment_id) == (early.order_id, stopped.shipment_id)
    (refused,) = world.published(CancellationRefused)
    assert (refused.order_id, refused.shipment_id, refused.reason) == (
        late.order_id,
        moving.shipment_id,
        "already_dispatched",
    )
    assert refused.dispatched_at == moving.dispatched_at
    # A redelivered cancellation decides nothing again.
    await world.service.order_cancelled(cancellation(late.order_id, late.session_id, world), "c2-again")
    assert len(world.published(CancellationRefused)) == 1


async def test_cancelled_before_payment_never_ships() -> None:
    world = World()
    order, payment = paid_order(world)
    await world.service.order_placed(order, "e1")
    await world.service.order_cancelled(cancellation(order.order_id, order.session_id, world), "e2")
    await world.service.payment_captured(payment, "e3")
    assert world.published(ShipmentCreated) == []
    with pytest.raises(NotFound, match="cancelled before it shipped"):
        await world.service.tracking_by_order(order.order_id)


async def delivered_order(world: World):  # type: ignore[no-untyped-def]
    order, payment = paid_order(world, lines=[line_item("mug", quantity=3, unit_price=1000), line_item("pan", 1, 5000)])
    await world.service.order_placed(order, "e1")
    await world.service.payment_captured(payment, "e2")
    world.clock.advance(days=3)
    await world.service.advance_due_shipments()
    return order


async def test_returns_inside_the_window_up_to_the_delivered_quantity() -> None:
    world = World(window_days=14)
    order = await delivered_order(world)

    async def ask(*lines: tuple[str, int], email: str = "erika@example.com"):  # type: ignore[no-untyped-def]
        return await world.service.request_return(
            order.order_id,
            email=email,
            lines=[RequestedLine(product_id=p, quantity=q) for p, q in lines],
            reason=ReturnReason.CHANGED_MIND,
            comment="",
            session_id="s1",
        )

    first = await ask(("mug", 1), ("mug", 1))  # the same product twice is summed
    assert first.refund_amount.amount == 2000 and first.label_reference.startswith("RL-")
    with pytest.raises(Unprocessable, match="mug: 2 requested but only 1 can still be returned"):
        await ask(("mug", 2))
    with pytest.raises(Unprocessable, match="lamp was not delivered"):
        await ask(("lamp", 1))
    with pytest.raises(NotFound):
        await ask(("pan", 1), email="someone@else.de")
    second = await ask(("mug", 1), ("pan", 1), email="ERIKA@example.com ")
    # Everything is back: the default policy refunds the shipping (4.95) with the last return.
    assert second.refund_amount.amount == 6000 + 495 and second.shipping_refund.amount == 495
    (received,) = [await world.service.receive_return(second.return_id)]
    assert received[1].status.value == "received"
    await world.service.receive_return(second.return_id)  # a second scan changes nothing
    assert len(world.published(ReturnRequested)) == 2
    assert [e.refund_amount.amount for e in world.published(ReturnReceived)] == [6495]


async def test_the_window_closes_exactly_window_days_after_delivery() -> None:
    world = World(window_days=14)
    order = await delivered_order(world)
    delivered_at = (await world.service.tracking_by_order(order.order_id)).shipment.delivered_at  # type: ignore[union-attr]
    assert delivered_at is not None

    async def ask():  # type: ignore[no-untyped-def]
        return await world.service.request_return(
            order.order_id,
            email="erika@example.com",
            lines=[RequestedLine(product_id="pan", quantity=1)],
            reason=ReturnReason.DAMAGED,
            comment="",
            session_id="s",
        )

    world.clock.now = delivered_at + timedelta(days=14, milliseconds=1)
    with pytest.raises(Unprocessable, match="14-day return window ended") as refused:
        await ask()
    assert refused.value.extra["reason"] == "window_closed"
    world.clock.now = delivered_at + timedelta(days=14)
    assert (await ask()).status.value == "requested"


async def test_items_not_yet_delivered_cannot_be_returned() -> None:
    world = World()
    order, payment = paid_order(world)
    await world.service.order_placed(order, "e1")
    await world.service.payment_captured(payment, "e2")
    with pytest.raises(Unprocessable, match="only delivered items can be returned; this order is created") as refused:
        await world.service.request_return(
            order.order_id,
            email=order.email,
            lines=[RequestedLine(product_id="prod_1", quantity=1)],
            reason=ReturnReason.DAMAGED,
            comment="",
            session_id="s",
        )
    assert refused.value.extra["reason"] == "not_delivered"


async def test_a_retried_return_request_with_the_same_idempotency_key_creates_one_return() -> None:
    world = World()
    order = await delivered_order(world)

    async def ask(key: str):  # type: ignore[no-untyped-def]
        return await world.service.request_return(
            order.order_id,
            email="erika@example.com",
            lines=[RequestedLine(product_id="mug", quantity=3)],
            reason=ReturnReason.WRONG_ITEM,
            comment="",
            session_id="s",
            idempotency_key=key,
        )

    first = await ask("click-1")
    again = await ask("click-1")  # all 3 mugs are in a return already, yet the retry is answered
    assert again == first
    assert len(world.published(ReturnRequested)) == 1
    with pytest.raises(Unprocessable, match="only 0 can still be returned"):
        await ask("click-2")


async def test_order_and_payment_handled_at_the_same_moment_still_ship_once() -> None:
    """The payment's handler commits between the order handler's load and save: the order handler's
    write is refused as stale, it reloads, sees the payment and creates the one shipment."""
    world = World()
    order, payment = paid_order(world)
    original_save = world.repo.save
    raced = False

    async def save_after_a_concurrent_payment(*args, **kwargs):  # type: ignore[no-untyped-def]
        nonlocal raced
        if not raced:
            raced = True
            await world.service.payment_captured(payment, "evt-pay")  # lands first
        return await original_save(*args, **kwargs)

    world.repo.save = save_after_a_concurrent_payment  # type: ignore[method-assign]
    await world.service.order_placed(order, "evt-order")
    assert raced
    assert len(world.published(ShipmentCreated)) == 1
    assert await world.repo.was_processed(order.order_id, "evt-order")
    assert await world.repo.was_processed(order.order_id, "evt-pay")


async def test_due_shipments_are_advanced_side_by_side_and_each_once() -> None:
    """A scan round loads several due shipments at once (one after the other took minutes under load)."""
    world = World()
    for n in range(4):
        order, payment = paid_order(world, order_id=f"ord_side_{n}")
        await world.service.order_placed(order, f"placed-{n}")
        await world.service.payment_captured(payment, f"captured-{n}")
    world.clock.advance(days=3)  # both scans of every shipment are due

    due = await world.repo.due_for_scan(world.clock(), 100)
    assert len(due) == 4

    async def the_due(now: object, limit: int) -> list[str]:
        return due  # the fake finds them with `load`, which this test holds back

    loading = 0
    all_loading = asyncio.Event()
    load = world.repo.load

    async def load_when_all_are_loading(order_id: str) -> Any:
        # Each load waits until every due shipment's load has begun: run one after the other, the
        # first never returns and the round times out.
        nonlocal loading
        loading += 1
        if loading == 4:
            all_loading.set()
        await all_loading.wait()
        return await load(order_id)

    world.repo.load = load_when_all_are_loading  # type: ignore[method-assign]
    world.repo.due_for_scan = the_due  # type: ignore[method-assign]
    assert await asyncio.wait_for(world.service.advance_due_shipments(concurrency=4), timeout=10) == 4
    assert len(world.published(ShipmentDispatched)) == 4 and len(world.published(ShipmentDelivered)) == 4
    world.repo.load = load  # type: ignore[method-assign]
    del world.repo.due_for_scan
    assert await world.service.advance_due_shipments() == 0  # nothing left to do
