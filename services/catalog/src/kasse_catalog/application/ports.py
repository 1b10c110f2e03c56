"""What the use cases need from the outside world; Mongo adapters and in-memory fakes implement it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from enum import StrEnum
from typing import Protocol

from kasse_catalog.domain.product import Product
from kasse_catalog.domain.reservation import Reservation
from kasse_catalog.domain.review import Purchase, Review, ReviewSort
from kasse_catalog.domain.search import SearchCriteria
from kasse_common.envelope import OutgoingRecord
from kasse_common.experiments import Assignment
from kasse_contracts.base import Event
from kasse_contracts.events import ExperimentParameter


class AlreadyExists(Exception):
    """A document with that id (or unique key) exists already."""


class Encoder(Protocol):
    def __call__(self, event: Event, *, event_id: str | None = None) -> OutgoingRecord: ...


Clock = Callable[[], datetime]


class ProductRepository(Protocol):
    async def get(self, product_id: str) -> Product | None: ...
    async def get_by_sku(self, sku: str) -> Product | None: ...
    async def get_by_slug(self, slug: str) -> Product | None: ...
    async def get_many(self, product_ids: Sequence[str]) -> list[Product]: ...
    async def get_by_skus(self, skus: Sequence[str]) -> dict[str, Product]: ...
    async def get_by_slugs(self, slugs: Sequence[str]) -> dict[str, Product]: ...

    async def add(self, product: Product, events: Sequence[OutgoingRecord]) -> None:
        """Insert; raises AlreadyExists (same id, sku or slug)."""

    async def save(
        self,
        product: Product,
        events: Sequence[OutgoingRecord],
        *,
        marker: str | None = None,
        require_available: int | None = None,
        markers: Sequence[str] = (),
    ) -> bool:
        """Write the product's state with its events if it is still at `product.version`.

        `marker`: an id remembered with the write; a second save with it changes nothing and returns
        False. `markers`: more such ids (several orders' stock changes in one write); False when any of
        them was remembered before, and nothing is written. `require_available`: the stored product must
        still have that much stock available.
        Raises ConcurrencyError when the version or the guard does not hold."""

    async def was_applied(self, product_id: str, marker: str) -> bool: ...
    async def search(self, criteria: SearchCriteria) -> tuple[list[Product], int]: ...
    async def popular(self, *, category: str | None, exclude: set[str], limit: int) -> list[Product]: ...
    async def categories(self) -> list[tuple[str, int]]:
        """Categories of active products with how many each has, by name."""

    async def record_interest(self, product_id: str, *, views: int, purchases: int, event_id: str) -> None:
        """Count a view or purchase once per event id (popularity), outside the versioned state."""


class ReservationRepository(Protocol):
    async def get(self, order_id: str) -> Reservation | None: ...

    async def add(self, reservation: Reservation, events: Sequence[OutgoingRecord] = ()) -> None:
        """Insert; raises AlreadyExists."""

    async def save(self, reservation: Reservation, events: Sequence[OutgoingRecord] = ()) -> None:
        """Write if still at `reservation.version`; raises ConcurrencyError."""

    async def unfinished_since(self, before: datetime, limit: int) -> list[str]:
        """Order ids of reservations still RESERVING that were requested at or before `before`."""


class ReviewRepository(Protocol):
    async def add(self, review: Review) -> None: ...
    async def mark_published(self, review_id: str) -> None: ...
    async def for_product(
        self, product_id: str, sort: ReviewSort, offset: int, limit: int
    ) -> tuple[list[Review], int]: ...
    async def pending_since(self, before: datetime, limit: int) -> list[Review]: ...


class RelationKind(StrEnum):
    BOUGHT_TOGETHER = "bought_together"
    VIEWED_TOGETHER = "viewed_together"


class RecommendationStrategy(StrEnum):
    """Which relations a recommendation without an explicit `kind` uses (the values an experiment on
    `recommendation_strategy` may give its variants); every strategy fills up with popular products."""

    BLENDED = "blended"  # bought together (weight 3) and viewed together: the default
    BOUGHT_TOGETHER = "bought_together"
    VIEWED_TOGETHER = "viewed_together"
    POPULAR = "popular"  # no relations, popular products only


STRATEGY_KINDS: dict[RecommendationStrategy, tuple[RelationKind, ...]] = {
    RecommendationStrategy.BLENDED: (RelationKind.BOUGHT_TOGETHER, RelationKind.VIEWED_TOGETHER),
    RecommendationStrategy.BOUGHT_TOGETHER: (RelationKind.BOUGHT_TOGETHER,),
    RecommendationStrategy.VIEWED_TOGETHER: (RelationKind.VIEWED_TOGETHER,),
    RecommendationStrategy.POPULAR: (),
}


class ExperimentAssigner(Protocol):
    """The session's variant of the running experiment on a parameter (kasse_common.experiments.ExperimentBook)."""

    async def assign(
        self, parameter: ExperimentParameter, session_id: str | None, customer_id: str | None = None
    ) -> Assignment | None: ...


class SignalStore(Protocol):
    """Precomputed recommendation state: co-occurrence counters and each session's recent views."""

    async def increment_pair(self, kind: RelationKind, product_id: str, other_id: str, event_id: str) -> None:
        """Add one to the pair's counter, once per event id."""

    async def related(self, kind: RelationKind, product_id: str, limit: int) -> list[tuple[str, int]]: ...
    async def recent_views(self, session_id: str) -> list[str]: ...

    async def record_view(self, session_id: str, product_id: str, event_id: str, keep: int) -> None:
        """Put the product first in the session's recent views (once per event id), keep `keep`."""


class PurchaseLedger(Protocol):
    """Who bought what, and whether it was delivered: the verified-purchase check of reviews."""

    async def record_order(
        self,
        order_id: str,
        customer_id: str | None,
        session_id: str,
        product_ids: Sequence[str],
        order_token_sha256: str | None = None,
    ) -> None: ...
    async def mark_delivered(self, order_id: str, delivered_at: datetime) -> None: ...
    async def delivered_order_with(self, product_id: str, customer_id: str) -> str | None: ...
    async def purchase(self, order_id: str) -> Purchase | None: ...


class EventSink(Protocol):
    """Events with no state change behind them (searches, views): the standalone outbox."""

    async def add(self, *records: OutgoingRecord) -> None: ...
