"""What the use cases need from the outside world (implemented in adapters/)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Protocol

from kasse_cart.domain.cart import Cart, ProductInfo
from kasse_cart.domain.order import Order, OrderStatus
from kasse_cart.domain.promotions import Coupon
from kasse_cart.domain.shipping import RateTable
from kasse_common.envelope import OutgoingRecord
from kasse_common.experiments import Assignment
from kasse_contracts.base import Event
from kasse_contracts.events import ExperimentParameter

Encoder = Callable[..., OutgoingRecord]  # (event, *, event_id=None) -> record (ServiceRuntime.encode)
Clock = Callable[[], datetime]


class CartRepository(Protocol):
    async def get(self, cart_id: str) -> Cart | None: ...

    async def add(self, cart: Cart, events: Sequence[OutgoingRecord]) -> None: ...

    async def save(self, cart: Cart, events: Sequence[OutgoingRecord], *, consumed_event_id: str | None = None) -> bool:
        """Write the cart at `cart.version + 1` with its events. False: `consumed_event_id` was applied
        before (nothing written). Raises ConcurrencyError when the cart changed since it was loaded."""
        ...

    async def ids_with_product(self, product_id: str) -> list[str]: ...

    async def idle_since(self, cutoff: datetime, limit: int) -> list[Cart]:
        """Open carts with items, never reported abandoned, with no activity since `cutoff`."""
        ...


class ProductReadModel(Protocol):
    async def get(self, product_id: str) -> ProductInfo | None: ...

    async def upsert(self, product: ProductInfo) -> bool:
        """Keep the product if its revision is newer than the stored one; True when it was."""
        ...


class RateTableReadModel(Protocol):
    async def current(self) -> RateTable | None: ...

    async def upsert(self, rate_table_id: str, table: RateTable) -> bool: ...


class CouponRepository(Protocol):
    async def get(self, code: str, customer_key: str | None = None) -> Coupon | None: ...

    async def add(self, coupon: Coupon) -> None:
        """Raises kasse_common.errors.Conflict when the code exists."""
        ...

    async def all(self) -> list[Coupon]: ...

    async def redeem(self, coupon: Coupon, order_id: str, customer_key: str | None) -> bool:
        """Count one use for `order_id` within the limits; idempotent per order. False: limit reached."""
        ...


class OrderRepository(Protocol):
    async def get(self, order_id: str) -> Order | None: ...

    async def add(self, order: Order, events: Sequence[OutgoingRecord]) -> bool:
        """Insert; False when an order with that id exists already."""
        ...

    async def save(
        self, order: Order, events: Sequence[OutgoingRecord], *, consumed_event_id: str | None = None
    ) -> bool: ...

    async def search(
        self, *, status: OrderStatus | None, email: str | None, text: str | None, limit: int, offset: int
    ) -> list[Order]: ...

    async def unpaid_past_deadline(self, now: datetime, limit: int) -> list[Order]:
        """Orders neither paid nor cancelled whose `payment_due_at` is not after `now` (indexed)."""
        ...


class PaymentLookup(Protocol):
    async def client_secret(self, order_id: str) -> str | None:
        """The client secret while the payment needs the customer's action; None otherwise or on failure."""
        ...

    async def invoices(self, order_id: str) -> list[dict[str, Any]] | None:
        """The order's invoice and credit notes (number, kind, totals); None when payment cannot say."""
        ...

    async def invoice_pdf(self, order_id: str, number: str) -> bytes | None:
        """One of them as PDF; None when there is no such document or payment cannot say."""
        ...

    async def payment_status(self, order_id: str) -> str | None:
        """The payment's status (`held_for_review`, `captured`, ...); None when unknown or unreachable."""
        ...


def encode_all(encoder: Encoder, events: Sequence[tuple[Event, str | None]]) -> list[OutgoingRecord]:
    return [encoder(event, event_id=event_id) for event, event_id in events]


class ExperimentAssigner(Protocol):
    """The session's variant of the running experiment on a parameter (kasse_common.experiments.ExperimentBook)."""

    async def assign(
        self, parameter: ExperimentParameter, session_id: str | None, customer_id: str | None = None
    ) -> Assignment | None: ...
