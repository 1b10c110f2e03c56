"""Reserving and releasing stock for orders, without transactions.

A reservation document per order holds its state (RESERVING until settled). Each line is taken from
its product by a version-checked write of the product (`stock_available` must still cover it) that
carries the product's ProductChanged and a marker derived from the order and product: the progress is
recorded in the same atomic write as the take itself, so it can never be lost or wrong. After a crash
or a redelivery, a resumed run finds the markers and takes nothing twice. When a line cannot be
served, the lines already taken are given back (again with markers), and the reservation ends
REJECTED with StockRejected in its outbox; otherwise RESERVED with StockReserved.

The handler of OrderPlaced only stores the reservation (RESERVING, with `requested_at`); the takes run
beside the consumer, a bounded number of orders at once (the kit's StepRunner): orders for different
products go in parallel, orders racing for one product retry their version-checked write. A run that a
crash stopped is taken up by the resume job (`resume_unfinished`, reading the reservations' DueWork).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

from kasse_catalog.application.events import product_changed
from kasse_catalog.application.ports import (
    AlreadyExists,
    Clock,
    Encoder,
    ProductRepository,
    ReservationRepository,
)
from kasse_catalog.domain.product import InsufficientStock
from kasse_catalog.domain.reservation import Reservation, ReservationLine, ReservationStatus, Shortfall
from kasse_common.envelope import derived_event_id
from kasse_common.errors import ConcurrencyError
from kasse_common.retry import retry_on_conflict
from kasse_common.steps import StepRunner
from kasse_contracts.events import (
    ItemCondition,
    OrderCancelled,
    OrderPlaced,
    ProductChangeKind,
    RejectedLine,
    ReturnLine,
    ReturnReceived,
    ShipmentCancelled,
    StockLine,
    StockRejected,
    StockReserved,
)

log = logging.getLogger(__name__)

# Fifty orders racing for one product need up to fifty rounds: a write fails only because another won.
RESERVE_ATTEMPTS = 400
# A reservation's own write lost to another writer (a release, another run): look again this many times.
ADVANCE_ROUNDS = 5


def take_marker(order_id: str, product_id: str) -> str:
    return str(derived_event_id("stock-take", order_id, product_id))


def fulfil_marker(order_id: str, product_id: str) -> str:
    return str(derived_event_id("stock-fulfil", order_id, product_id))


def restock_marker(return_id: str, product_id: str) -> str:
    return str(derived_event_id("stock-restock", return_id, product_id))


def left_marker(order_id: str, product_id: str) -> str:
    return str(derived_event_id("stock-left-after-cancel", order_id, product_id))


def give_back_marker(order_id: str, product_id: str) -> str:
    return str(derived_event_id("stock-give-back", order_id, product_id))


@dataclass(frozen=True)
class _Taken:
    ok: bool
    available: int = 0


class StockKeeper:
    def __init__(
        self, products: ProductRepository, reservations: ReservationRepository, encode: Encoder, clock: Clock
    ) -> None:
        self.products = products
        self.reservations = reservations
        self.encode = encode
        self.clock = clock
        # Set by the app: reservations are then taken beside the consumer, a bounded number at once
        # (kit StepRunner); without it (tests of the use cases) the handler takes them before it returns.
        self.steps: StepRunner | None = None
        self._fresh: set[str] = set()  # reservations this process created and no run has taken up yet

    async def order_placed(self, order: OrderPlaced, event_id: str) -> None:
        """Record the order's reservation (one write), then have its lines taken: beside the consumer when
        the app gave a runner, else before returning. A burst of orders used to wait here for each
        earlier order's product writes, one order at a time (issue 12)."""
        if await self.request(order, event_id) is None:
            return
        if self.steps is None:
            await self.advance(order.order_id)
        else:
            self.steps.schedule(order.order_id)

    async def reserve(self, order: OrderPlaced, event_id: str) -> Reservation:
        """Request and take at once; the reservation as it ends."""
        await self.request(order, event_id)
        await self.advance(order.order_id)
        reservation = await self.reservations.get(order.order_id)
        assert reservation is not None
        return reservation

    async def request(self, order: OrderPlaced, event_id: str) -> Reservation | None:
        """Store the reservation RESERVING (idempotent per order); None when it is settled already."""
        reservation = Reservation.start(
            order.order_id,
            order.session_id,
            order.customer_id,
            [(line.product_id, line.sku, line.quantity) for line in order.lines],
            requested_at=self.clock(),
        )
        try:
            await self.reservations.add(reservation)
            reservation.version = 1
            self._fresh.add(order.order_id)
            return reservation
        except AlreadyExists:
            existing = await self.reservations.get(order.order_id)
            assert existing is not None
        if not existing.in_progress:
            log.info(
                "order's stock already settled",
                extra={"order_id": order.order_id, "status": existing.status.value, "event_id": event_id},
            )
            return None
        return existing

    async def advance(self, order_id: str) -> None:
        """Take what a RESERVING reservation still needs and settle it (RESERVED or REJECTED).

        Safe beside a release of the same order and beside another run of it (another replica's resume
        job): the reservation is written once, at the end, version-checked. A run that loses that race
        reads who settled it: settled RELEASED or REJECTED, every line this order took goes back (each
        exactly once, by the give-back marker — a release may have missed a line taken after it looked);
        still RESERVING, it goes round again.
        """
        # The first run after this process created the reservation has no earlier run's takes to look for.
        fresh = order_id in self._fresh
        self._fresh.discard(order_id)
        for _ in range(ADVANCE_ROUNDS):
            reservation = await self.reservations.get(order_id)
            if reservation is None or not reservation.in_progress:
                return
            try:
                await self._settle(reservation, check_markers=not fresh)
                return
            except ConcurrencyError:
                fresh = False
                settled = await self.reservations.get(order_id)
                if settled is None or settled.status is ReservationStatus.RESERVING:
                    continue
                if settled.status in (ReservationStatus.RELEASED, ReservationStatus.REJECTED):
                    for line in reservation.lines:
                        await self._give_back(order_id, line)
                return
        raise ConcurrencyError(f"reservation of {order_id}: still contended after {ADVANCE_ROUNDS} rounds")

    async def resume_unfinished(self, older_than_s: float, limit: int = 100) -> int:
        """Reservations still RESERVING after `older_than_s` whose run stopped (a crash, a failed step):
        taken up again. Those this process is still working on are left to their run."""
        before = self.clock() - timedelta(seconds=older_than_s)
        resumed = 0
        for order_id in await self.reservations.unfinished_since(before, limit):
            if self.steps is not None:
                if order_id in self.steps:
                    continue
                self.steps.schedule(order_id)
            else:
                await self.advance(order_id)
            resumed += 1
        if resumed:
            log.info("unfinished reservations resumed", extra={"count": resumed})
        return resumed

    async def _settle(self, reservation: Reservation, *, check_markers: bool) -> None:
        shortfalls: list[Shortfall] = []
        for line in reservation.lines:
            if line.taken:
                continue
            taken = await self._take(reservation.order_id, line, check_marker=check_markers)
            if taken.ok:
                line.taken = True
            else:
                shortfalls.append(Shortfall(line.product_id, line.sku, line.quantity, taken.available))

        now = self.clock()
        event: StockRejected | StockReserved
        if shortfalls:
            for line in reservation.lines:
                # Every line with a take, not only this run's: another run of the order may have taken one.
                await self._give_back(reservation.order_id, line)
                line.taken = False
            reservation.reject(shortfalls)
            event = StockRejected(
                occurred_at=now,
                session_id=reservation.session_id,
                customer_id=reservation.customer_id,
                order_id=reservation.order_id,
                rejected_lines=[
                    RejectedLine(product_id=s.product_id, sku=s.sku, requested=s.requested, available=s.available)
                    for s in shortfalls
                ],
            )
        else:
            reservation.confirm()
            event = StockReserved(
                occurred_at=now,
                session_id=reservation.session_id,
                customer_id=reservation.customer_id,
                order_id=reservation.order_id,
                lines=[
                    StockLine(product_id=ln.product_id, sku=ln.sku, quantity=ln.quantity) for ln in reservation.lines
                ],
            )
        # The outcome event's id is derived from the order: a resumed run can only ever publish one.
        record = self.encode(event, event_id=derived_event_id("stock-outcome", reservation.order_id))
        await self.reservations.save(reservation, [record])
        reservation.version = (reservation.version or 0) + 1

    async def release(self, order_id: str, session_id: str, reason: str) -> Reservation:
        """Give back what the order holds. Idempotent; a release before the order blocks its reservation."""
        reservation = await self.reservations.get(order_id)
        if reservation is None:
            tombstone = Reservation.released_before_placed(order_id, session_id, reason)
            try:
                await self.reservations.add(tombstone)
                return tombstone
            except AlreadyExists:
                reservation = await self.reservations.get(order_id)
                assert reservation is not None
        if not reservation.holds_stock:
            return reservation
        for line in reservation.lines:
            # Also lines not marked taken: a crash may have come between the take and the progress note.
            await self._give_back(order_id, line)
        reservation.release(reason)
        await self.reservations.save(reservation)
        reservation.version = (reservation.version or 0) + 1
        return reservation

    async def order_cancelled(self, event: OrderCancelled) -> Reservation | None:
        """The units wait for shipping's verdict, which it gives for every cancellation: its
        ShipmentCancelled gives them back (`shipment_cancelled`), its CancellationRefused takes them out
        of stock (`cancellation_refused`). Releasing here showed a shipped order's units as available
        until the refusal arrived — sold twice in that window. The cart's `was_paid` cannot decide it:
        a cart that has not heard of the payment yet cancels a paid order as unpaid."""
        log.info("order cancelled: its stock waits for shipping's verdict", extra={"order_id": event.order_id})
        return None

    async def shipment_cancelled(self, event: ShipmentCancelled) -> Reservation:
        """Shipping stopped the parcel (or none was booked): the order's units go back (idempotent)."""
        return await self.release(event.order_id, event.session_id, f"shipment_cancelled:{event.reason}")

    async def fulfil(self, order_id: str) -> Reservation | None:
        """The order was delivered: its reserved units leave stock on hand (available is unchanged).
        Without this, reserved units of delivered orders would pile up and block stock counts."""
        reservation = await self.reservations.get(order_id)
        if reservation is None or reservation.status is not ReservationStatus.RESERVED:
            return reservation
        for line in reservation.lines:
            await self._fulfil_line(order_id, line)
        reservation.fulfil()
        await self.reservations.save(reservation)
        reservation.version = (reservation.version or 0) + 1
        return reservation

    async def cancellation_refused(self, order_id: str) -> Reservation | None:
        """Shipping refused the order's cancellation: the parcel had left. If the release already gave the
        units back, they leave stock on hand now; if not, the reservation is fulfilled as on delivery (and the
        late OrderCancelled then finds nothing to release)."""
        reservation = await self.reservations.get(order_id)
        if reservation is None:
            return None
        if reservation.status is ReservationStatus.RESERVED:
            return await self.fulfil(order_id)
        if reservation.status is not ReservationStatus.RELEASED or not reservation.lines:
            return reservation
        for line in reservation.lines:
            marker = left_marker(order_id, line.product_id)

            async def attempt(line: ReservationLine = line, marker: str = marker) -> None:
                product = await self.products.get(line.product_id)
                if product is None:
                    return
                now = self.clock()
                product.left_unreserved(line.quantity, now)
                event = self.encode(product_changed(product, [ProductChangeKind.STOCK], now))
                await self.products.save(product, [event], marker=marker)

            await retry_on_conflict(attempt, f"shipped {line.product_id} for {order_id}", attempts=RESERVE_ATTEMPTS)
        reservation.status = ReservationStatus.FULFILLED
        await self.reservations.save(reservation)
        reservation.version = (reservation.version or 0) + 1
        return reservation

    async def restock_return(self, event: ReturnReceived) -> int:
        """Returned items the warehouse found resellable go back on hand, once per return and product."""
        restocked = 0
        for line in event.lines:
            if line.condition != ItemCondition.RESELLABLE:
                continue  # damaged (or not said): written off, not sold again
            marker = restock_marker(event.return_id, line.product_id)

            async def attempt(line: ReturnLine = line, marker: str = marker) -> bool:
                product = await self.products.get(line.product_id)
                if product is None:
                    return False
                now = self.clock()
                product.adjust_stock(line.quantity, now)
                change = self.encode(product_changed(product, [ProductChangeKind.STOCK], now))
                return await self.products.save(product, [change], marker=marker)

            what = f"restock {line.product_id} from {event.return_id}"
            if await retry_on_conflict(attempt, what, attempts=RESERVE_ATTEMPTS):
                restocked += line.quantity
        if restocked:
            log.info("returned items restocked", extra={"return_id": event.return_id, "units": restocked})
        return restocked

    async def _fulfil_line(self, order_id: str, line: ReservationLine) -> None:
        marker = fulfil_marker(order_id, line.product_id)

        async def attempt() -> None:
            product = await self.products.get(line.product_id)
            if product is None:
                return
            now = self.clock()
            product.fulfil(line.quantity, now)
            event = self.encode(product_changed(product, [ProductChangeKind.STOCK], now))
            await self.products.save(product, [event], marker=marker)

        await retry_on_conflict(attempt, f"fulfil {line.product_id} for {order_id}", attempts=RESERVE_ATTEMPTS)

    async def _take(self, order_id: str, line: ReservationLine, *, check_marker: bool) -> _Taken:
        marker = take_marker(order_id, line.product_id)
        if check_marker and await self.products.was_applied(line.product_id, marker):
            return _Taken(ok=True)

        async def attempt() -> _Taken:
            product = await self.products.get(line.product_id)
            if product is None:
                return _Taken(ok=False, available=0)
            now = self.clock()
            try:
                product.reserve(line.quantity, now)
            except InsufficientStock as short:
                return _Taken(ok=False, available=short.available)
            event = self.encode(product_changed(product, [ProductChangeKind.STOCK], now))
            await self.products.save(product, [event], marker=marker, require_available=line.quantity)
            return _Taken(ok=True)  # False from save means: taken by an earlier run, also fine

        return await retry_on_conflict(attempt, f"reserve {line.product_id} for {order_id}", attempts=RESERVE_ATTEMPTS)

    async def _give_back(self, order_id: str, line: ReservationLine) -> None:
        taken, given = take_marker(order_id, line.product_id), give_back_marker(order_id, line.product_id)
        if not await self.products.was_applied(line.product_id, taken):
            return

        async def attempt() -> None:
            product = await self.products.get(line.product_id)
            if product is None:
                return
            now = self.clock()
            product.release(line.quantity, now)
            event = self.encode(product_changed(product, [ProductChangeKind.STOCK], now))
            await self.products.save(product, [event], marker=given)

        await retry_on_conflict(attempt, f"release {line.product_id} for {order_id}", attempts=RESERVE_ATTEMPTS)
