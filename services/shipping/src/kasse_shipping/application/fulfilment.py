"""Use cases of an order's fulfilment: react to orders, payments and cancellations, advance the
carrier's scans, take return requests and record returns arriving at the warehouse."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

from kasse_common.envelope import derived_event_id
from kasse_common.errors import ConcurrencyError, NotFound
from kasse_common.retry import retry_on_conflict
from kasse_contracts.base import Event, Money
from kasse_contracts.events import ItemCondition, OrderCancelled, OrderPlaced, PaymentCaptured, ReturnReason
from kasse_shipping.application.ports import Carrier, FulfilmentRepository, PendingEvent
from kasse_shipping.application.rates import RateTableService
from kasse_shipping.domain.fulfilment import (
    CancellationInfo,
    Fulfilment,
    OrderInfo,
    OrderLine,
    PaymentInfo,
    RequestedLine,
    ReturnCase,
    ReturnPolicy,
    ShipmentStatus,
)
from kasse_shipping.domain.rates import rate_for

log = logging.getLogger(__name__)

ATTEMPTS = 8


def to_millis(moment: datetime) -> datetime:
    """Mongo stores milliseconds: times that are queried as BSON dates and also carried in events are
    truncated, so the stored schedule and the published times are the same instant."""
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def _now() -> datetime:
    return to_millis(datetime.now(UTC))


# Due shipments advanced at once by a carrier-scan round (each a load and a save of its own document).
SCANS_SIDE_BY_SIDE = 8


class FulfilmentService:
    def __init__(
        self,
        repository: FulfilmentRepository,
        carrier: Carrier,
        rates: RateTableService,
        policy: ReturnPolicy,
        clock: Callable[[], datetime] = _now,
    ) -> None:
        self._repo = repository
        self._carrier = carrier
        self._rates = rates
        self.policy = policy
        self._clock = clock

    # -- events from other services ---------------------------------------------------------------
    async def order_placed(self, event: OrderPlaced, event_id: str) -> None:
        info = OrderInfo(
            session_id=event.session_id,
            customer_id=event.customer_id,
            email=event.email,
            lines=[
                OrderLine(
                    product_id=line.product_id,
                    sku=line.sku,
                    name=line.name,
                    quantity=line.quantity,
                    unit_price=line.unit_price,
                    discounted_total=line.discounted_total,
                )
                for line in event.lines
            ],
            method_id=event.shipping.method_id,
            method_name=event.shipping.name,
            carrier=event.shipping.carrier,
            promised_from=event.shipping.promised_from,
            promised_to=event.shipping.promised_to,
            address=event.shipping_address,
            placed_at=event.occurred_at,
            shipping_charged=Money(
                amount=event.shipping_total.amount
                - sum(d.amount.amount for d in event.discounts if d.applies_to == "shipping"),
                currency=event.shipping_total.currency,
            ),
        )
        await self._apply(event.order_id, event_id, lambda f, now: f.record_order(info))

    async def payment_captured(self, event: PaymentCaptured, event_id: str) -> None:
        payment = PaymentInfo(
            payment_intent_id=event.payment_intent_id,
            captured_at=event.occurred_at,
            session_id=event.session_id,
            customer_id=event.customer_id,
        )
        await self._apply(event.order_id, event_id, lambda f, now: f.record_payment(payment))

    async def order_cancelled(self, event: OrderCancelled, event_id: str) -> None:
        cancellation = CancellationInfo(
            reason=event.reason.value,
            cancelled_at=event.occurred_at,
            session_id=event.session_id,
            customer_id=event.customer_id,
        )
        await self._apply(event.order_id, event_id, lambda f, now: f.record_cancellation(cancellation, now))

    async def _apply(
        self, order_id: str, event_id: str, change: Callable[[Fulfilment, datetime], list[Event] | None]
    ) -> None:
        """Record one consumed fact; create the shipment if the fact completed the picture."""

        async def attempt() -> None:  # again when the order's other topic wrote at the same moment
            if await self._repo.was_processed(order_id, event_id):
                return
            loaded = await self._repo.load(order_id)
            now = self._clock()
            events = list(change(loaded.fulfilment, now) or [])
            if loaded.fulfilment.ready_to_ship():
                events += await self._ship(loaded.fulfilment, now)
            await self._repo.save(loaded, self._pending(order_id, events), consumed_event_id=event_id)

        await retry_on_conflict(attempt, f"apply {event_id} to order {order_id}", attempts=ATTEMPTS)

    async def _ship(self, f: Fulfilment, now: datetime) -> list[Event]:
        assert f.order is not None and f.payment is not None
        table = self._rates.table
        method = table.method(f.order.method_id)
        rate = rate_for(method, f.order.address.country) if method else None
        # The promise for a parcel booked now; an order whose method we no longer offer keeps the
        # dates the cart promised.
        promised = table.window(rate, f.payment.captured_at)[2] if rate else f.order.promised_to
        shipment_id = "shp_" + uuid.UUID(derived_event_id("shipment", f.order_id)).hex[:20]
        booking = await self._carrier.book(
            shipment_id=shipment_id,
            order_id=f.order_id,
            carrier=method.carrier if method else f.order.carrier,
            method_id=f.order.method_id,
        )
        first_scan = self._carrier.next_scan(ShipmentStatus.CREATED, now)
        assert first_scan is not None
        first_scan = to_millis(first_scan)
        log.info("shipment created", extra={"order_id": f.order_id, "shipment_id": shipment_id})
        return f.create_shipment(
            shipment_id=shipment_id, booking=booking, promised=promised, now=now, first_scan_at=first_scan
        )

    # -- the carrier's progress ---------------------------------------------------------------------
    async def advance_due_shipments(self, limit: int = 100, concurrency: int = SCANS_SIDE_BY_SIDE) -> int:
        """Apply every carrier scan that is due (also those missed while the service was down).

        Returns the number of shipments that moved. Another instance moving the same shipment first
        is fine: the version check makes us skip it. Shipments are independent documents, so up to
        `concurrency` are advanced side by side: one after the other, a round of 100 due shipments at
        ~1.5 s per load and save under load took minutes (300-order chaos: 126 paid orders waited
        for their dispatch and delivery scans). A failure ends the round after the others finished.
        """
        now = self._clock()
        slots = asyncio.Semaphore(concurrency)

        async def advance(order_id: str) -> bool:
            async with slots:
                return await self._advance_shipment(order_id, now)

        due = await self._repo.due_for_scan(now, limit)
        outcomes = await asyncio.gather(*(advance(order_id) for order_id in due), return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        return sum(1 for outcome in outcomes if outcome is True)

    async def _advance_shipment(self, order_id: str, now: datetime) -> bool:
        loaded = await self._repo.load(order_id)
        events: list[Event] = []
        shipment = loaded.fulfilment.shipment
        while shipment and shipment.next_transition_at is not None and shipment.next_transition_at <= now:
            scanned_at = shipment.next_transition_at
            reached = (
                ShipmentStatus.DISPATCHED if shipment.status is ShipmentStatus.CREATED else ShipmentStatus.DELIVERED
            )
            next_scan = self._carrier.next_scan(reached, scanned_at)
            next_scan = to_millis(next_scan) if next_scan else None
            step = loaded.fulfilment.advance(scanned_at=scanned_at, next_scan_at=next_scan)
            if not step:
                shipment.next_transition_at = None  # nothing left to scan
            events += step
        try:
            await self._repo.save(loaded, self._pending(order_id, events))
        except ConcurrencyError:
            log.info("shipment changed while advancing; next round", extra={"order_id": order_id})
            return False
        return True

    # -- returns ------------------------------------------------------------------------------------
    async def request_return(
        self,
        order_id: str,
        *,
        email: str,
        lines: list[RequestedLine],
        reason: ReturnReason,
        comment: str,
        session_id: str,
        idempotency_key: str | None = None,
    ) -> ReturnCase:
        """A retried request with the same `idempotency_key` gets the return it created before."""

        async def attempt() -> ReturnCase:
            loaded = await self._repo.load(order_id)
            f = loaded.fulfilment
            if f.order is None or f.order.email.casefold() != email.strip().casefold():
                # One answer for "no such order" and "not your order": order ids are not secrets.
                raise NotFound(f"no order {order_id} with that email address")
            if idempotency_key:
                return_id = "ret_" + uuid.UUID(derived_event_id("return", order_id, idempotency_key)).hex[:20]
                existing = f.find_return(return_id)
                if existing is not None:
                    return existing
            else:
                return_id = "ret_" + uuid.uuid4().hex[:20]
            label = await self._carrier.return_label(return_id=return_id, order_id=order_id)
            now = self._clock()
            events = f.request_return(
                return_id=return_id,
                label_reference=label,
                lines=lines,
                reason=reason,
                comment=comment,
                policy=self.policy,
                now=now,
                session_id=session_id,
            )
            await self._repo.save(loaded, self._pending(order_id, events))
            case = f.find_return(return_id)
            assert case is not None
            return case

        return await retry_on_conflict(attempt, f"return for order {order_id}", attempts=ATTEMPTS)

    async def receive_return(
        self, return_id: str, conditions: dict[str, ItemCondition] | None = None
    ) -> tuple[str, ReturnCase]:
        order_id = await self._repo.order_id_of_return(return_id)
        if order_id is None:
            raise NotFound(f"no return {return_id}")

        async def attempt() -> tuple[str, ReturnCase]:
            loaded = await self._repo.load(order_id)
            events = loaded.fulfilment.receive_return(return_id, self._clock(), conditions)
            if events:
                await self._repo.save(loaded, self._pending(order_id, events))
            case = loaded.fulfilment.find_return(return_id)
            assert case is not None
            return order_id, case

        return await retry_on_conflict(attempt, f"receive return {return_id}", attempts=ATTEMPTS)

    # -- queries ------------------------------------------------------------------------------------
    async def tracking_by_order(self, order_id: str) -> Fulfilment:
        f = (await self._repo.load(order_id)).fulfilment
        if f.shipment is None:
            if f.order is not None and f.cancelled:
                raise NotFound(f"order {order_id} was cancelled before it shipped")
            raise NotFound(f"no shipment for order {order_id} yet")
        return f

    async def tracking_by_number(self, tracking_number: str) -> Fulfilment:
        f = await self._repo.by_tracking_number(tracking_number)
        if f is None or f.shipment is None:
            raise NotFound(f"no shipment with tracking number {tracking_number}")
        return f

    async def returns_of(self, order_id: str, email: str) -> Fulfilment:
        f = (await self._repo.load(order_id)).fulfilment
        if f.order is None or f.order.email.casefold() != email.strip().casefold():
            raise NotFound(f"no order {order_id} with that email address")
        return f

    @staticmethod
    def _pending(order_id: str, events: list[Event]) -> list[PendingEvent]:
        """Ids derived from what happened, so re-running the same change publishes the same ids."""
        pending = []
        for event in events:
            discriminator = str(getattr(event, "return_id", None) or getattr(event, "shipment_id", ""))
            pending.append(PendingEvent(event, derived_event_id(order_id, event.event_type, discriminator)))
        return pending
