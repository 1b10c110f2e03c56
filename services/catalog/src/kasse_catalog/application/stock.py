"""Reserving and releasing stock for orders, without transactions.

A reservation document per order holds its state (RESERVING until settled). Each line is taken from
its product by a version-checked write of the product (`stock_available` must still cover it) that
carries the product's ProductChanged and a marker derived from the order and product: the progress is
recorded in the same atomic write as the take itself, so it can never be lost or wrong. After a crash
or a redelivery, a resumed run finds the markers and takes nothing twice. When a line cannot be
served, the lines already taken are given back (again with markers), and the reservation ends
REJECTED with StockRejected in its outbox; otherwise RESERVED with StockReserved.

The handler of OrderPlaced takes the order's lines and then stores the reservation once, with its
outcome and StockReserved/StockRejected (one write; the kit's consumer handles up to 16 orders side by
side). A crash or failure before that write leaves no reservation: the OrderPlaced comes again (its
offset is not committed before the handler returned) and finds its takes by their markers. Until
2026-12-07 the handler stored the reservation RESERVING and a StepRunner took the lines beside the
consumer, then wrote the reservation again: two reservation writes per order, a marker for the resume
job, and a read, on FerretDB's one writer per database (issue 12; the consumer was one record at a time
then). Reservations still RESERVING (stored by that code, or by `request`) are finished by `advance`,
run by the StepRunner and the resume job (`resume_unfinished`, reading the reservations' DueWork).

Every stock change of a product (take, give back, fulfil, restock, shipped after a release) goes through
`ProductStockWrites`: one write at a time per product in this process, carrying every change that waited
for it (up to MAX_CHANGES_PER_WRITE, each with its marker). Before, each order wrote the product itself
and the runs racing for one product lost their version check and retried: in the 100-order bench (five
products) catalog sent 304 take writes for 100 takes, each waiting ~6 s for FerretDB's one writer per
database (issue 12). Several processes still race on the version and retry, as before.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from kasse_catalog.application.events import product_changed
from kasse_catalog.application.ports import (
    AlreadyExists,
    Clock,
    Encoder,
    ProductRepository,
    ReservationRepository,
)
from kasse_catalog.domain.product import InsufficientStock, Product
from kasse_catalog.domain.reservation import Reservation, ReservationLine, ReservationStatus, Shortfall
from kasse_common.envelope import derived_event_id
from kasse_common.errors import ConcurrencyError
from kasse_common.progress import report_progress
from kasse_common.retry import retry_on_conflict
from kasse_common.steps import StepRunner
from kasse_contracts.events import (
    ItemCondition,
    OrderCancelled,
    OrderPlaced,
    ProductChangeKind,
    RejectedLine,
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
# Orders' changes one product write carries at most. The write records each one's marker, and the kit's
# dedupe window counts writes, so this also bounds the markers a product document holds: at most
# 2 x dedupe window (1,000) x 8 ids, ~1 MB, whatever the number of orders.
MAX_CHANGES_PER_WRITE = 8


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


def _units(quantity: int, change: Callable[[Product, int, datetime], object]) -> Callable[[Product, datetime], object]:
    """A stock change of `quantity` units, as ProductStockWrites applies it."""
    return lambda product, now: change(product, quantity, now)


@dataclass(frozen=True)
class ChangeResult:
    """What became of one change: written now, written before (its marker was there), or not applicable."""

    applied: bool = False
    earlier: bool = False
    short: InsufficientStock | None = None  # a take the product cannot serve
    missing: bool = False  # no such product


@dataclass
class _Change:
    marker: str
    apply: Callable[[Product, datetime], object]  # mutates the product; InsufficientStock: cannot apply
    done: asyncio.Future[ChangeResult]
    context: contextvars.Context = field(default_factory=contextvars.copy_context)  # the waiter's (progress)


class ProductStockWrites:
    """Stock changes of one product, several orders' in one version-checked write (see the module doc).

    `change(product_id, marker, apply)` waits for the write that carries it. A change whose marker the
    product remembers already is not applied again (`earlier`). Writes of one product go one at a time;
    changes that arrive meanwhile go together in the next write.
    """

    def __init__(self, products: ProductRepository, encode: Encoder, clock: Clock) -> None:
        self.products = products
        self.encode = encode
        self.clock = clock
        self._waiting: dict[str, list[_Change]] = {}
        self._writers: dict[str, asyncio.Task[None]] = {}
        self.writes = 0  # product writes that landed (figures, tests)

    async def change(self, product_id: str, marker: str, apply: Callable[[Product, datetime], object]) -> ChangeResult:
        change = _Change(marker, apply, asyncio.get_running_loop().create_future())
        self._waiting.setdefault(product_id, []).append(change)
        if product_id not in self._writers:
            # A context of its own: the writer serves many orders, not the trace or handler that started it.
            self._writers[product_id] = asyncio.create_task(
                self._write_while_waiting(product_id), name=f"stock-writes-{product_id}", context=contextvars.Context()
            )
        return await change.done

    async def stop(self) -> None:
        writers = list(self._writers.values())
        for task in writers:
            task.cancel()
        if writers:
            await asyncio.wait(writers, timeout=2)

    async def _write_while_waiting(self, product_id: str) -> None:
        waiting = self._waiting[product_id]
        try:
            while waiting:
                batch = [c for c in waiting[:MAX_CHANGES_PER_WRITE] if not c.done.done()]  # done: waiter cancelled
                del waiting[:MAX_CHANGES_PER_WRITE]
                if not batch:
                    continue
                try:
                    results = await self._write(product_id, batch)
                except Exception as exc:  # every change of the batch fails alike; their callers retry
                    for c in batch:
                        if not c.done.done():
                            c.done.set_exception(exc)
                    continue
                for c in batch:
                    if not c.done.done():
                        c.done.set_result(results[c.marker])
                for c in waiting:  # the changes still waiting saw a write complete: their handlers progress
                    c.context.run(report_progress)
        finally:
            self._writers.pop(product_id, None)
            for c in waiting:  # cancelled (shutdown): nobody writes them now
                if not c.done.done():
                    c.done.cancel()
            self._waiting.pop(product_id, None)

    async def _write(self, product_id: str, batch: list[_Change]) -> dict[str, ChangeResult]:
        results: dict[str, ChangeResult] = {}

        async def attempt() -> None:
            todo = [c for c in batch if c.marker not in results]
            if not todo:
                return
            product = await self.products.get(product_id)
            if product is None:
                results.update({c.marker: ChangeResult(missing=True) for c in todo})
                return
            now = self.clock()
            available = product.stock_available
            outcome: dict[str, ChangeResult] = {}
            for c in todo:
                if c.marker in outcome:
                    continue  # the same change twice (two runs of one order): applied once, both told
                try:
                    c.apply(product, now)
                    outcome[c.marker] = ChangeResult(applied=True)
                except InsufficientStock as short:
                    outcome[c.marker] = ChangeResult(short=short)
            applied = [m for m, r in outcome.items() if r.applied]
            if applied:
                event = self.encode(product_changed(product, [ProductChangeKind.STOCK], now))
                # The stock this write was computed from is still there (the version says so too).
                if not await self.products.save(product, [event], markers=applied, require_available=available):
                    # Some change was written before (a redelivery, a resumed run): find which, write the rest.
                    for c in todo:
                        if c.marker in applied and await self.products.was_applied(product_id, c.marker):
                            results[c.marker] = ChangeResult(earlier=True)
                    raise ConcurrencyError(f"{product_id}: some of the changes were written before")
                self.writes += 1
            results.update(outcome)

        await retry_on_conflict(attempt, f"stock of {product_id}", attempts=RESERVE_ATTEMPTS)
        return results


class StockKeeper:
    def __init__(
        self, products: ProductRepository, reservations: ReservationRepository, encode: Encoder, clock: Clock
    ) -> None:
        self.products = products
        self.reservations = reservations
        self.encode = encode
        self.clock = clock
        self.writes = ProductStockWrites(products, encode, clock)
        # Set by the app: reservations are then taken beside the consumer, a bounded number at once
        # (kit StepRunner); without it (tests of the use cases) the handler takes them before it returns.
        self.steps: StepRunner | None = None
        self._fresh: set[str] = set()  # reservations this process created and no run has taken up yet

    async def order_placed(self, order: OrderPlaced, event_id: str) -> None:
        """Take the order's lines, then store its reservation with the outcome (one reservation write).
        A redelivery finds the reservation stored (nothing to do) or, after a crash before that write,
        the takes by their markers."""
        existing = await self.reservations.get(order.order_id)
        if existing is not None:
            if existing.in_progress:  # stored RESERVING by the code before 2026-12-07 (or `request`)
                if self.steps is None:
                    await self.advance(order.order_id)
                else:
                    self.steps.schedule(order.order_id)
            else:
                log.info(
                    "order's stock already settled",
                    extra={"order_id": order.order_id, "status": existing.status.value, "event_id": event_id},
                )
            return
        reservation = self._new_reservation(order)
        try:
            await self._settle(reservation, check_markers=False, stored=False)
        except AlreadyExists:
            # Stored meanwhile: a release that came first (RELEASED, no lines) or another run of the order.
            settled = await self.reservations.get(order.order_id)
            if settled is not None and settled.in_progress:
                await self.advance(order.order_id)
            elif settled is not None and settled.status in (ReservationStatus.RELEASED, ReservationStatus.REJECTED):
                for line in reservation.lines:
                    await self._give_back(order.order_id, line)

    def _new_reservation(self, order: OrderPlaced) -> Reservation:
        return Reservation.start(
            order.order_id,
            order.session_id,
            order.customer_id,
            [(line.product_id, line.sku, line.quantity) for line in order.lines],
            requested_at=self.clock(),
        )

    async def reserve(self, order: OrderPlaced, event_id: str) -> Reservation:
        """Take at once (`order_placed`); the reservation as it ends."""
        await self.order_placed(order, event_id)
        reservation = await self.reservations.get(order.order_id)
        assert reservation is not None
        return reservation

    async def request(self, order: OrderPlaced, event_id: str) -> Reservation | None:
        """Store the reservation RESERVING (idempotent per order); None when it is settled already."""
        reservation = self._new_reservation(order)
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

    async def _settle(self, reservation: Reservation, *, check_markers: bool, stored: bool = True) -> None:
        """Take what is not taken yet and write the outcome: a save of the stored reservation, or (not
        `stored`) its insert, which raises AlreadyExists when another writer stored it first."""
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
        if not stored:
            await self.reservations.add(reservation, [record])
            reservation.version = 1
            return
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
            await self.writes.change(
                line.product_id,
                left_marker(order_id, line.product_id),
                _units(line.quantity, Product.left_unreserved),
            )
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
            result = await self.writes.change(
                line.product_id,
                restock_marker(event.return_id, line.product_id),
                _units(line.quantity, Product.adjust_stock),
            )
            if result.applied:
                restocked += line.quantity
        if restocked:
            log.info("returned items restocked", extra={"return_id": event.return_id, "units": restocked})
        return restocked

    async def _fulfil_line(self, order_id: str, line: ReservationLine) -> None:
        await self.writes.change(
            line.product_id,
            fulfil_marker(order_id, line.product_id),
            _units(line.quantity, Product.fulfil),
        )

    async def _take(self, order_id: str, line: ReservationLine, *, check_marker: bool) -> _Taken:
        marker = take_marker(order_id, line.product_id)
        if check_marker and await self.products.was_applied(line.product_id, marker):
            return _Taken(ok=True)
        result = await self.writes.change(line.product_id, marker, _units(line.quantity, Product.reserve))
        if result.short is not None:
            if not check_marker and await self.products.was_applied(line.product_id, marker):
                return _Taken(ok=True)  # a redelivered order whose line was taken before the stock ran out
            return _Taken(ok=False, available=result.short.available)
        return _Taken(ok=not result.missing)  # earlier: taken by an earlier run, also fine

    async def _give_back(self, order_id: str, line: ReservationLine) -> None:
        taken, given = take_marker(order_id, line.product_id), give_back_marker(order_id, line.product_id)
        # A line the reservation noted as taken was taken: its marker may have left the product's bounded
        # dedupe window since (~1,000 writes of a hot product while the order waited for its payment).
        if not line.taken and not await self.products.was_applied(line.product_id, taken):
            return
        await self.writes.change(line.product_id, given, _units(line.quantity, Product.release))
