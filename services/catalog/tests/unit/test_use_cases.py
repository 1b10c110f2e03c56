"""Use cases against in-memory adapters: stock reservation under concurrency, idempotency, imports,
discovery events, reviews and recommendations."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import pytest

from kasse_catalog.application.discovery import Discovery, Shopper
from kasse_catalog.application.learning import Learner
from kasse_catalog.application.ports import RelationKind
from kasse_catalog.application.products import ProductCatalog
from kasse_catalog.application.reviews import OrderProof, ReviewDraft, Reviews
from kasse_catalog.application.stock import ChangeResult, StockKeeper, take_marker
from kasse_catalog.domain.product import Product, ProductDetails
from kasse_catalog.domain.reservation import ReservationStatus
from kasse_catalog.domain.review import ReviewSort
from kasse_catalog.domain.search import SearchCriteria, SortOrder
from kasse_common.envelope import OutgoingRecord, encode
from kasse_common.errors import Conflict, Forbidden, NotFound, Unprocessable
from kasse_common.steps import StepRunner
from kasse_contracts.base import Channel, Money
from kasse_contracts.events import (
    CancellationReason,
    ItemCondition,
    OrderCancelled,
    ProductChangeKind,
    ProductViewed,
    ReturnLine,
    ReturnReceived,
    ShipmentCancelled,
    ShipmentDelivered,
)
from kasse_contracts.events.common import TaxClass
from kasse_testkit import samples

from .fakes import (
    MemoryEvents,
    MemoryProducts,
    MemoryPurchaseLedger,
    MemoryReservations,
    MemoryReviews,
    MemorySignals,
)

pytestmark = pytest.mark.unit


def clock() -> datetime:
    return datetime.now(UTC)


def eur(amount: int) -> Money:
    return Money(amount=amount, currency="EUR")


def details(sku: str, *, category: str = "kitchen", price: int = 1000, stock: int = 10, **kw: object) -> ProductDetails:
    values: dict[str, object] = {
        "sku": sku,
        "name": kw.pop("name", f"Product {sku}"),
        "description": kw.pop("description", ""),
        "category": category,
        "price": eur(price),
        "stock_on_hand": stock,
    }
    values.update(kw)
    return ProductDetails(**values)  # type: ignore[arg-type]


@dataclass
class World:
    products: MemoryProducts = field(default_factory=MemoryProducts)
    reservations: MemoryReservations = field(default_factory=MemoryReservations)
    reviews_repo: MemoryReviews = field(default_factory=MemoryReviews)
    signals: MemorySignals = field(default_factory=MemorySignals)
    ledger: MemoryPurchaseLedger = field(default_factory=MemoryPurchaseLedger)
    events: MemoryEvents = field(default_factory=MemoryEvents)

    def __post_init__(self) -> None:
        enc = partial(encode, service="catalog")
        self.catalog = ProductCatalog(self.products, enc, clock)
        self.stock = StockKeeper(self.products, self.reservations, enc, clock)
        self.discovery = Discovery(self.products, self.signals, self.events, enc, clock)
        self.reviews = Reviews(self.products, self.reviews_repo, self.ledger, enc, clock)
        self.learner = Learner(self.products, self.signals, self.ledger)

    async def add(self, *items: ProductDetails) -> list[Product]:
        return [await self.catalog.create(item) for item in items]

    def stock_events(self, type_name: str) -> list[dict[str, Any]]:
        return [json.loads(r.value) for r in self.reservations.outbox if r.event_type.endswith(type_name + ".v1")]


def order(*lines: tuple[Product, int], order_id: str | None = None, **kw: object):  # type: ignore[no-untyped-def]
    return samples.order_placed(
        order_id,
        [samples.line_item(p.product_id, quantity=q, sku=p.sku, unit_price=p.price.amount) for p, q in lines],
        **kw,
    )


async def test_fifty_concurrent_orders_for_the_last_ten_units_reserve_exactly_ten() -> None:
    w = World()
    (knife,) = await w.add(details("KNIFE", stock=10))
    orders = [order((knife, 1)) for _ in range(50)]
    results = await asyncio.gather(*(w.stock.reserve(o, f"evt-{o.order_id}") for o in orders))
    statuses = [r.status for r in results]
    assert statuses.count(ReservationStatus.RESERVED) == 10
    assert statuses.count(ReservationStatus.REJECTED) == 40
    stored = w.products.docs[knife.product_id]
    assert (stored.stock_available, stored.stock_reserved, stored.stock_on_hand) == (0, 10, 10)
    assert len(w.stock_events("StockReserved")) == 10
    rejected = w.stock_events("StockRejected")
    assert len(rejected) == 40
    assert all(e["rejected_lines"][0]["available"] == 0 for e in rejected)


async def test_a_duplicate_order_placed_reserves_once() -> None:
    w = World()
    (knife,) = await w.add(details("KNIFE", stock=5))
    placed = order((knife, 2))
    first = await w.stock.reserve(placed, "evt-1")
    again = await w.stock.reserve(placed, "evt-1")  # redelivery
    other_id = await w.stock.reserve(placed, "evt-2")  # the producer published it twice
    assert first.status is again.status is other_id.status is ReservationStatus.RESERVED
    assert w.products.docs[knife.product_id].stock_available == 3
    assert len(w.stock_events("StockReserved")) == 1


async def test_concurrent_duplicates_of_one_order_reserve_once() -> None:
    w = World()
    (knife,) = await w.add(details("KNIFE", stock=5))
    placed = order((knife, 2))
    await asyncio.gather(*(w.stock.reserve(placed, f"evt-{i}") for i in range(5)), return_exceptions=True)
    await w.stock.reserve(placed, "evt-late")  # whichever run was interrupted by a stale write, finish it
    assert w.products.docs[knife.product_id].stock_available == 3
    outcome_ids = {r.event_id for r in w.reservations.outbox}
    assert len(outcome_ids) == 1


async def test_a_line_that_cannot_be_served_rejects_the_order_and_gives_back_the_others() -> None:
    w = World()
    knife, board, kettle = await w.add(details("KNIFE", stock=5), details("BOARD", stock=1), details("KETTLE", stock=9))
    result = await w.stock.reserve(order((knife, 2), (board, 3), (kettle, 1)), "evt-1")
    assert result.status is ReservationStatus.REJECTED
    (event,) = w.stock_events("StockRejected")
    assert event["rejected_lines"] == [{"product_id": board.product_id, "sku": "BOARD", "requested": 3, "available": 1}]
    for p, available in ((knife, 5), (board, 1), (kettle, 9)):
        assert w.products.docs[p.product_id].stock_available == available
        assert w.products.docs[p.product_id].stock_reserved == 0


async def test_unknown_and_inactive_products_are_rejected_with_nothing_available() -> None:
    w = World()
    (knife,) = await w.add(details("KNIFE", stock=5, active=False))
    placed = samples.order_placed(lines=[samples.line_item("prd_unknown"), samples.line_item(knife.product_id)])
    assert (await w.stock.reserve(placed, "e")).status is ReservationStatus.REJECTED
    (event,) = w.stock_events("StockRejected")
    assert [(x["product_id"], x["available"]) for x in event["rejected_lines"]] == [
        ("prd_unknown", 0),
        (knife.product_id, 0),
    ]


class CrashOnce(MemoryProducts):
    """Dies right after the Nth product write: the take is stored, the reservation's note is not."""

    def __init__(self, crash_after_saves: int) -> None:
        super().__init__()
        self.remaining = crash_after_saves

    async def save(self, product: Product, events: Sequence[OutgoingRecord], **kw: object) -> bool:
        applied = await super().save(product, events, **kw)  # type: ignore[arg-type]
        self.remaining -= 1
        if self.remaining == 0:
            raise ConnectionError("process died")
        return applied


async def test_a_reservation_interrupted_after_a_take_resumes_without_taking_twice() -> None:
    w = World(products=CrashOnce(crash_after_saves=1))
    knife, board = await w.add(details("KNIFE", stock=5), details("BOARD", stock=5))
    placed = order((knife, 2), (board, 1))
    with pytest.raises(ConnectionError):
        await w.stock.reserve(placed, "evt-1")
    # Nothing stored for the order yet: its OrderPlaced was not committed and comes again.
    assert placed.order_id not in w.reservations.docs
    result = await w.stock.reserve(placed, "evt-1")
    assert result.status is ReservationStatus.RESERVED
    assert w.products.docs[knife.product_id].stock_available == 3
    assert w.products.docs[board.product_id].stock_available == 4


def after_first_stock_write(w: World, between: Callable[[], Awaitable[object]]) -> None:
    """Runs `between` right after the first product write of a reservation returned to its run (a release
    beside the run). Not inside the write: the product's writer serves the release's give-back too."""
    change = w.stock.writes.change
    pending: list[Callable[[], Awaitable[object]]] = [between]

    async def change_then(product_id: str, marker: str, apply: Callable[[Product, datetime], object]) -> ChangeResult:
        result = await change(product_id, marker, apply)
        if pending:
            await pending.pop()()
        return result

    w.stock.writes.change = change_then  # type: ignore[method-assign]


async def test_a_release_while_the_lines_are_being_taken_gives_back_every_line_once() -> None:
    w = World()
    knife, board = await w.add(details("KNIFE", stock=5), details("BOARD", stock=5))
    placed = order((knife, 2), (board, 1))
    await w.stock.request(placed, "evt-1")
    # The release runs after the knife was taken and before the board is: it gives the knife back and
    # stores RELEASED; the run then takes the board and loses its own write to the release.
    after_first_stock_write(w, lambda: w.stock.release(placed.order_id, placed.session_id, "payment_failed:x"))
    await w.stock.advance(placed.order_id)
    assert w.reservations.docs[placed.order_id].status is ReservationStatus.RELEASED
    for p in (knife, board):
        stored = w.products.docs[p.product_id]
        assert (stored.stock_available, stored.stock_reserved, stored.stock_on_hand) == (5, 0, 5)
    assert w.stock_events("StockReserved") == []
    # A redelivered release or a resumed run changes nothing any more.
    await w.stock.release(placed.order_id, placed.session_id, "payment_failed:x")
    await w.stock.advance(placed.order_id)
    assert w.products.docs[board.product_id].stock_available == 5


async def test_the_handler_stores_the_reservation_and_the_runner_takes_orders_side_by_side() -> None:
    w = World()
    knife, board = await w.add(details("KNIFE", stock=50), details("BOARD", stock=50))
    w.stock.steps = StepRunner(w.stock.advance, concurrency=4, name="test-stock")
    orders = [order((knife if n % 2 else board, 1 + n % 3)) for n in range(20)]
    for n, placed in enumerate(orders):
        await w.stock.order_placed(placed, f"evt-{n}")
        assert w.reservations.docs[placed.order_id].requested_at is not None
    await w.stock.order_placed(orders[0], "evt-0")  # a redelivery while (or after) it runs
    await w.stock.steps.idle()
    assert {r.status for r in w.reservations.docs.values()} == {ReservationStatus.RESERVED}
    taken = {p.product_id: 0 for p in (knife, board)}
    for placed in orders:
        taken[placed.lines[0].product_id] += placed.lines[0].quantity
    for p in (knife, board):
        assert w.products.docs[p.product_id].stock_available == 50 - taken[p.product_id]
    assert len(w.stock_events("StockReserved")) == 20


async def test_reservations_a_crash_left_unfinished_are_resumed_and_the_running_ones_left_alone() -> None:
    now = datetime.now(UTC)
    later = now + timedelta(seconds=60)
    w = World(products=CrashOnce(crash_after_saves=1))
    knife, board = await w.add(details("KNIFE", stock=5), details("BOARD", stock=5))
    interrupted, untouched = order((knife, 2), (board, 1)), order((board, 2))
    # Stored RESERVING (as the code before 2026-12-07 did, and `request` does), then interrupted.
    await w.stock.request(interrupted, "evt-1")
    with pytest.raises(ConnectionError):
        await w.stock.advance(interrupted.order_id)  # died after taking the knife
    await w.stock.request(untouched, "evt-2")  # died before any take
    assert await w.stock.resume_unfinished(older_than_s=30) == 0  # not old enough yet
    w.stock.clock = lambda: later
    runner = StepRunner(w.stock.advance, concurrency=2, name="test-stock")
    w.stock.steps = runner
    assert await w.stock.resume_unfinished(older_than_s=30) == 2
    await runner.idle()
    assert {w.reservations.docs[o.order_id].status for o in (interrupted, untouched)} == {ReservationStatus.RESERVED}
    assert w.products.docs[knife.product_id].stock_available == 3
    assert w.products.docs[board.product_id].stock_available == 2
    assert await w.stock.resume_unfinished(older_than_s=30) == 0  # nothing unfinished any more


async def test_release_gives_stock_back_once_and_a_release_before_the_order_blocks_it() -> None:
    w = World()
    (knife,) = await w.add(details("KNIFE", stock=5))
    placed = order((knife, 2))
    await w.stock.reserve(placed, "evt-1")
    await w.stock.release(placed.order_id, placed.session_id, "payment_failed")
    await w.stock.release(placed.order_id, placed.session_id, "order_cancelled")
    assert w.products.docs[knife.product_id].stock_available == 5
    assert w.reservations.docs[placed.order_id].status is ReservationStatus.RELEASED

    early = order((knife, 1))
    await w.stock.release(early.order_id, early.session_id, "order_cancelled")
    late = await w.stock.reserve(early, "evt-late")
    assert late.status is ReservationStatus.RELEASED
    assert w.products.docs[knife.product_id].stock_available == 5


async def test_release_of_a_rejected_order_changes_nothing() -> None:
    w = World()
    (knife,) = await w.add(details("KNIFE", stock=1))
    placed = order((knife, 2))
    await w.stock.reserve(placed, "e")
    await w.stock.release(placed.order_id, placed.session_id, "order_cancelled")
    assert w.products.docs[knife.product_id].stock_available == 1
    assert w.reservations.docs[placed.order_id].status is ReservationStatus.REJECTED


async def test_import_upserts_by_sku_and_publishes_only_real_changes() -> None:
    w = World()
    items = [details("A", price=100), details("B", price=200)]
    first = await w.catalog.import_products(items)
    assert len(first.created) == 2 and not first.updated
    assert len(w.products.outbox) == 2
    again = await w.catalog.import_products([details("A", price=100), details("B", price=200)])
    assert len(again.unchanged) == 2 and len(w.products.outbox) == 2
    changed = await w.catalog.import_products([details("A", price=90), details("B", price=200, stock=3)])
    assert len(changed.updated) == 2
    events = [json.loads(r.value) for r in w.products.outbox[2:]]
    assert [e["changes"] for e in events] == [[ProductChangeKind.PRICE.value], [ProductChangeKind.STOCK.value]]
    assert events[0]["price"] == {"amount": 90, "currency": "EUR"} and events[0]["revision"] == 2
    with pytest.raises(Unprocessable, match="duplicate skus"):
        await w.catalog.import_products([details("C"), details("C")])


async def test_admin_changes_publish_product_changed_with_the_new_state() -> None:
    w = World()
    (knife,) = await w.add(details("KNIFE", stock=5))
    await w.catalog.adjust_stock(knife.product_id, delta=7)
    await w.catalog.deactivate(knife.product_id)
    await w.catalog.deactivate(knife.product_id)  # no change, no event
    events = [json.loads(r.value) for r in w.products.outbox]
    assert [e["changes"] for e in events] == [["created"], ["stock"], ["availability"]]
    assert events[1]["stock_available"] == 12 and events[2]["active"] is False
    assert [e["revision"] for e in events] == [1, 2, 3]
    with pytest.raises(NotFound):
        await w.catalog.update("prd_nope", {"name": "x"})


async def test_the_tax_class_is_kept_and_published_and_a_change_of_it_is_a_details_change() -> None:
    w = World()
    (book, knife) = await w.add(details("BOOK", category="books", tax_class=TaxClass.REDUCED), details("KNIFE"))
    assert (book.tax_class, knife.tax_class) == (TaxClass.REDUCED, TaxClass.STANDARD)
    await w.catalog.update(knife.product_id, {"tax_class": TaxClass.ZERO})
    events = [json.loads(r.value) for r in w.products.outbox]
    assert [(e["sku"], e["tax_class"]) for e in events] == [
        ("BOOK", "reduced"),
        ("KNIFE", "standard"),
        ("KNIFE", "zero"),
    ]
    assert events[2]["changes"] == ["details"]
    again = await w.catalog.import_products([details("BOOK", category="books", tax_class=TaxClass.REDUCED)])
    assert again.unchanged == [book.product_id]


async def test_search_and_view_publish_session_and_channel() -> None:
    w = World()
    await w.add(
        details("HP", name="Wireless Headphones", category="audio", price=20000),
        details("SP", name="Speaker", description="wireless speaker", category="audio", price=5000),
        details("KN", name="Knife", price=3000),
    )
    shopper = Shopper("sess-1", "cust-1")
    page = await w.discovery.search(SearchCriteria(query="wireless"), shopper, Channel.EMAIL)
    assert [p.sku for p in page.items] == ["HP", "SP"] and page.total == 2
    page = await w.discovery.search(
        SearchCriteria(category="audio", sort=SortOrder.PRICE_ASC, max_price=30000), shopper, Channel.DIRECT
    )
    assert [p.sku for p in page.items] == ["SP", "HP"]
    viewed = await w.discovery.view(page.items[0].slug, shopper, Channel.SOCIAL, "spring", "https://t.co/x")
    searched, _, view = (json.loads(r.value) for r in w.events.records)
    assert searched["session_id"] == "sess-1" and searched["channel"] == "email" and searched["result_count"] == 2
    assert searched["product_ids"] == [page.items[1].product_id, page.items[0].product_id]
    assert view["product_id"] == viewed.product_id and view["channel"] == "social" and view["campaign"] == "spring"
    assert view["customer_id"] == "cust-1"


async def test_reviews_update_the_rating_and_are_verified_after_delivery() -> None:
    w = World()
    (knife,) = await w.add(details("KNIFE"))
    placed = order((knife, 1), customer_id="cust-7")
    await w.learner.order_placed(placed, "evt-o")
    draft = ReviewDraft(rating=4, title="Sharp", text="Cuts tomatoes cleanly.", author_name="Ana")
    before, _ = await w.reviews.submit(knife.slug, draft, customer_id="cust-7", session_id="other")
    assert not before.verified_purchase  # ordered, not delivered yet
    await w.learner.shipment_delivered(
        ShipmentDelivered(
            occurred_at=clock(), session_id="s", order_id=placed.order_id, shipment_id="shp", delivered_at=clock()
        )
    )
    verified, p = await w.reviews.submit(
        knife.product_id, ReviewDraft(5, "Great", "Still sharp.", "Ana"), customer_id="cust-7", session_id="x"
    )
    assert verified.verified_purchase
    assert (p.rating_count, p.rating_average) == (2, 4.5)
    submitted = [json.loads(r.value) for r in w.products.outbox if r.event_type.endswith("ReviewSubmitted.v1")]
    assert [(e["rating"], e["rating_average"], e["verified_purchase"]) for e in submitted] == [
        (4, 4.0, False),
        (5, 4.5, True),
    ]
    _, listed = await w.reviews.for_product(knife.product_id, ReviewSort.HIGHEST_RATED, 1, 10)
    assert [r.rating for r in listed.items] == [5, 4] and listed.total == 2
    with pytest.raises(Unprocessable):
        await w.reviews.submit(knife.product_id, ReviewDraft(9, "t", "x", "a"), customer_id=None, session_id=None)
    with pytest.raises(NotFound):
        await w.reviews.submit("nope", draft, customer_id=None, session_id=None)


async def test_a_guest_review_is_verified_by_the_order_token_of_a_delivered_order_with_the_product() -> None:
    w = World()
    knife, pan = await w.add(details("KNIFE"), details("PAN"))
    token = "order-token-of-the-shopper"
    placed = order((knife, 1), order_token_sha256=hashlib.sha256(token.encode()).hexdigest())
    await w.learner.order_placed(placed, "evt-o")
    draft = ReviewDraft(rating=5, title="Sharp", text="Cuts cleanly.", author_name="Ana")

    def submit(product: Product, proof: OrderProof) -> Any:
        return w.reviews.submit(product.product_id, draft, customer_id=None, session_id="s", order=proof)

    with pytest.raises(Conflict, match="not delivered yet"):
        await submit(knife, OrderProof(placed.order_id, token))
    await w.learner.shipment_delivered(
        ShipmentDelivered(
            occurred_at=clock(), session_id="s", order_id=placed.order_id, shipment_id="shp", delivered_at=clock()
        )
    )
    with pytest.raises(Forbidden, match="does not prove"):
        await submit(knife, OrderProof(placed.order_id, "a-guessed-token"))
    with pytest.raises(Forbidden, match="does not prove"):
        await submit(knife, OrderProof("ord_unknown", token))
    early = order((knife, 1), order_token_sha256=hashlib.sha256(token.encode()).hexdigest())
    await w.learner.shipment_delivered(  # the delivery learned before the order (another topic)
        ShipmentDelivered(
            occurred_at=clock(), session_id="s", order_id=early.order_id, shipment_id="shp2", delivered_at=clock()
        )
    )
    with pytest.raises(Conflict, match="not known here yet"):
        await submit(knife, OrderProof(early.order_id, token))
    with pytest.raises(Forbidden, match="does not contain this product"):
        await submit(pan, OrderProof(placed.order_id, token))
    assert w.reviews_repo.docs == {}, "a refused proof stores nothing"

    review, product = await submit(knife, OrderProof(placed.order_id, token))
    assert review.verified_purchase and review.customer_id is None
    assert product.rating_count == 1


async def test_an_order_placed_without_a_token_hash_proves_nothing() -> None:
    w = World()
    (knife,) = await w.add(details("KNIFE"))
    placed = order((knife, 1))  # an OrderPlaced from before the field existed
    await w.learner.order_placed(placed, "evt-o")
    await w.learner.shipment_delivered(
        ShipmentDelivered(
            occurred_at=clock(), session_id="s", order_id=placed.order_id, shipment_id="shp", delivered_at=clock()
        )
    )
    with pytest.raises(Forbidden):
        await w.reviews.submit(
            knife.product_id,
            ReviewDraft(5, "t", "x", "a"),
            customer_id=None,
            session_id=None,
            order=OrderProof(placed.order_id, "anything"),
        )


async def test_an_interrupted_review_is_counted_once_by_the_sweeper() -> None:
    w = World()
    (knife,) = await w.add(details("KNIFE"))
    review, _ = await w.reviews.submit(
        knife.product_id, ReviewDraft(3, "Ok", "Fine.", "Bo"), customer_id=None, session_id=None
    )
    # As if the process had died before publishing: back to pending.
    w.reviews_repo.docs[review.review_id].status = review.status.PENDING
    from datetime import timedelta

    assert await w.reviews.finish_pending(timedelta(seconds=-1)) == 1
    assert w.products.docs[knife.product_id].rating_count == 1


async def test_recommendations_learn_co_purchases_and_views_once_and_fall_back_to_popular() -> None:
    w = World()
    knife, board, apron, kettle, tent = await w.add(
        details("KNIFE"), details("BOARD"), details("APRON"), details("KETTLE"), details("TENT", category="outdoor")
    )
    for i in range(3):
        await w.learner.order_placed(order((knife, 1), (board, 1)), f"o{i}")
    both = order((knife, 1), (apron, 1))
    await w.learner.order_placed(both, "o-apron")
    await w.learner.order_placed(both, "o-apron")  # redelivered: counted once

    recs = await w.discovery.for_product(knife.product_id, RelationKind.BOUGHT_TOGETHER, 3)
    assert [(r.product.sku, r.reason, r.score) for r in recs[:2]] == [
        ("BOARD", "bought_together", 3),
        ("APRON", "bought_together", 1),
    ]
    assert recs[2].reason == "popular_in_category" and recs[2].product.sku == "KETTLE"

    def viewed(pid: str, sid: str = "sess") -> ProductViewed:
        return ProductViewed(
            occurred_at=clock(),
            session_id=sid,
            product_id=pid,
            sku="x",
            category="c",
            price=eur(1),
            channel=Channel.DIRECT,
        )

    await w.learner.product_viewed(viewed(kettle.product_id), "v1")
    await w.learner.product_viewed(viewed(tent.product_id), "v2")
    await w.learner.product_viewed(viewed(tent.product_id), "v2")
    assert await w.signals.related(RelationKind.VIEWED_TOGETHER, tent.product_id, 5) == [(kettle.product_id, 1)]
    session_recs = await w.discovery.for_session("sess", 2)
    assert session_recs[0].product.sku not in ("TENT", "KETTLE")
    fresh = await w.discovery.for_session("unknown-session", 2)
    assert [r.reason for r in fresh] == ["popular", "popular"]
    assert fresh[0].product.sku == "KNIFE"  # four purchases make it the most popular


async def test_same_names_get_distinct_slugs_and_an_explicit_colliding_slug_refuses_the_import() -> None:
    w = World()
    (board,) = await w.add(details("A", name="Oak Board"))
    other = await w.catalog.create(details("B", name="Oak Board"))
    assert (board.slug, other.slug) == ("oak-board", "oak-board-b")
    result = await w.catalog.import_products([details("C", name="Oak Board"), details("D", name="Oak Board")])
    slugs = {w.products.docs[pid].slug for pid in result.created}
    assert slugs == {"oak-board-c", "oak-board-d"}
    with pytest.raises(Conflict, match="belongs to A"):
        await w.catalog.import_products([details("E", name="Knife"), details("F", name="Pan", slug="oak-board")])
    assert await w.products.get_by_sku("E") is None  # nothing of the refused import was written
    again = await w.catalog.import_products([details("C", name="Oak Board"), details("D", name="Oak Board")])
    assert len(again.unchanged) == 2


async def test_an_import_below_the_reserved_stock_is_refused_whole() -> None:
    w = World()
    (knife,) = await w.add(details("KNIFE", stock=5))
    await w.stock.reserve(order((knife, 4)), "e1")
    with pytest.raises(Conflict, match="4 units are reserved"):
        await w.catalog.import_products([details("NEW"), details("KNIFE", stock=3)])
    assert w.products.docs[knife.product_id].stock_on_hand == 5
    assert await w.products.get_by_sku("NEW") is None


async def test_delivery_takes_the_reserved_units_out_of_stock_on_hand_once() -> None:
    w = World()
    (knife,) = await w.add(details("KNIFE", stock=5))
    placed = order((knife, 2))
    await w.stock.reserve(placed, "e1")
    fulfilled = await w.stock.fulfil(placed.order_id)
    await w.stock.fulfil(placed.order_id)  # redelivered
    assert fulfilled is not None and fulfilled.status is ReservationStatus.FULFILLED
    stored = w.products.docs[knife.product_id]
    assert (stored.stock_on_hand, stored.stock_reserved, stored.stock_available) == (3, 0, 3)
    await w.stock.release(placed.order_id, placed.session_id, "too late")  # nothing to release any more
    assert w.products.docs[knife.product_id].stock_available == 3
    rejected = order((knife, 9))
    await w.stock.reserve(rejected, "e2")
    assert (await w.stock.fulfil(rejected.order_id)).status is ReservationStatus.REJECTED  # type: ignore[union-attr]
    assert await w.stock.fulfil("unknown-order") is None


def return_received(return_id: str, *lines: tuple[Product, int, ItemCondition | None]) -> ReturnReceived:
    return ReturnReceived(
        occurred_at=samples.now(),
        session_id="sess_1",
        order_id="ord_r",
        return_id=return_id,
        lines=[
            ReturnLine(product_id=p.product_id, sku=p.sku, quantity=q, refund_amount=eur(100), condition=c)
            for p, q, c in lines
        ],
        refund_amount=eur(100 * len(lines)),
    )


async def test_a_received_return_restocks_only_resellable_items_once() -> None:
    w = World()
    knife, mug, pan = await w.add(details("KNIFE", stock=5), details("MUG", stock=5), details("PAN", stock=5))
    arrival = return_received(
        "ret_1", (knife, 2, ItemCondition.RESELLABLE), (mug, 1, ItemCondition.DAMAGED), (pan, 1, None)
    )
    assert await w.stock.restock_return(arrival) == 2
    assert await w.stock.restock_return(arrival) == 0  # redelivered: nothing twice
    on_hand = {p.product_id: w.products.docs[p.product_id].stock_on_hand for p in (knife, mug, pan)}
    assert on_hand == {knife.product_id: 7, mug.product_id: 5, pan.product_id: 5}


async def test_a_refused_cancellation_takes_the_shipped_units_out_whether_the_release_came_first_or_not() -> None:
    w = World()
    (knife,) = await w.add(details("KNIFE", stock=10))
    released_first, refused_first = order((knife, 2)), order((knife, 3))
    for placed in (released_first, refused_first):
        await w.stock.reserve(placed, "e-" + placed.order_id)
    # OrderCancelled released the units, then shipping said the parcel had left.
    await w.stock.release(released_first.order_id, released_first.session_id, "order_cancelled")
    await w.stock.cancellation_refused(released_first.order_id)
    await w.stock.cancellation_refused(released_first.order_id)  # redelivered
    # Shipping's refusal overtook the OrderCancelled: the late release finds nothing to give back.
    await w.stock.cancellation_refused(refused_first.order_id)
    await w.stock.release(refused_first.order_id, refused_first.session_id, "order_cancelled")
    await w.stock.fulfil(refused_first.order_id)  # the delivery later changes nothing either
    stored = w.products.docs[knife.product_id]
    assert (stored.stock_on_hand, stored.stock_reserved, stored.stock_available) == (5, 0, 5)
    for placed in (released_first, refused_first):
        assert w.reservations.docs[placed.order_id].status is ReservationStatus.FULFILLED


async def test_a_cancellation_keeps_the_units_reserved_until_shipping_decides() -> None:
    """No oversell window: a cancelled order's units never look available while its parcel may be on its
    way. Shipping stops one parcel (its units go back), refuses another (its units leave stock), and
    answers an unpaid order's cancellation with nothing booked (its unit goes back)."""
    w = World()
    (knife,) = await w.add(details("KNIFE", stock=10))
    stopped, refused, unpaid = order((knife, 2)), order((knife, 3)), order((knife, 1))
    for placed in (stopped, refused, unpaid):
        await w.stock.reserve(placed, "e-" + placed.order_id)

    def cancelled(placed: Any, *, was_paid: bool) -> OrderCancelled:
        return OrderCancelled(
            occurred_at=samples.now(),
            session_id=placed.session_id,
            order_id=placed.order_id,
            reason=CancellationReason.CUSTOMER_REQUEST,
            was_paid=was_paid,
            total=placed.total,
        )

    def available() -> int:
        return w.products.docs[knife.product_id].stock_available

    def stopped_by_shipping(placed: Any) -> ShipmentCancelled:
        return ShipmentCancelled(
            occurred_at=samples.now(), session_id=placed.session_id, order_id=placed.order_id, reason="customer"
        )

    # The cart had not heard of the refused order's payment yet: it says unpaid. No matter.
    await w.stock.order_cancelled(cancelled(refused, was_paid=False))
    await w.stock.order_cancelled(cancelled(stopped, was_paid=True))
    await w.stock.order_cancelled(cancelled(unpaid, was_paid=False))
    assert available() == 4  # every unit still held: shipping has not answered
    await w.stock.cancellation_refused(refused.order_id)  # the parcel had left
    assert available() == 4
    await w.stock.shipment_cancelled(stopped_by_shipping(unpaid))  # nothing was booked
    assert available() == 5
    await w.stock.shipment_cancelled(stopped_by_shipping(stopped))
    await w.stock.shipment_cancelled(stopped_by_shipping(stopped))  # redelivered
    stored = w.products.docs[knife.product_id]
    assert (stored.stock_on_hand, stored.stock_reserved, stored.stock_available) == (7, 0, 7)
    assert w.reservations.docs[refused.order_id].status is ReservationStatus.FULFILLED
    assert w.reservations.docs[stopped.order_id].status is ReservationStatus.RELEASED


async def test_orders_racing_for_one_product_share_its_writes_and_lose_no_race() -> None:
    # Each order used to write the product itself: racing orders lost the version check and wrote again
    # (304 product writes for 100 takes in the 100-order bench). Now the orders waiting for one product
    # go together in its next write, each with its own marker.
    w = World()
    (knife,) = await w.add(details("KNIFE", stock=100))
    saves_before = w.products.saves
    orders = [order((knife, 1 + n % 3)) for n in range(40)]
    results = await asyncio.gather(*(w.stock.reserve(o, f"evt-{o.order_id}") for o in orders))
    assert {r.status for r in results} == {ReservationStatus.RESERVED}
    stored = w.products.docs[knife.product_id]
    wanted = sum(o.lines[0].quantity for o in orders)
    assert (stored.stock_reserved, stored.stock_available) == (wanted, 100 - wanted)
    assert all(take_marker(o.order_id, knife.product_id) in w.products.markers[knife.product_id] for o in orders)
    writes = w.products.saves - saves_before
    assert writes == w.stock.writes.writes
    assert writes <= 40 // 4, writes  # 8 changes per write at most: 5 writes when every order waits at once
    # And each order's reservation is written once, with its outcome (it was stored RESERVING, then saved).
    assert w.reservations.writes == 40
    # A redelivered order (its reservation forgotten, a resumed run) finds its marker: nothing taken twice.
    again = orders[0]
    del w.reservations.docs[again.order_id]
    await w.stock.reserve(again, "evt-again")
    assert w.products.docs[knife.product_id].stock_reserved == wanted


async def test_a_reserved_order_released_after_its_take_marker_was_forgotten_gives_its_units_back() -> None:
    # The product remembers markers for its last ~1,000 writes (the kit's bounded dedupe window): a hot
    # product's take marker can be gone when an unpaid order expires half an hour later.
    w = World()
    (knife,) = await w.add(details("KNIFE", stock=5))
    placed = order((knife, 2))
    assert (await w.stock.reserve(placed, "evt-1")).status is ReservationStatus.RESERVED
    w.products.markers[knife.product_id].discard(take_marker(placed.order_id, knife.product_id))
    await w.stock.release(placed.order_id, placed.session_id, "payment_failed:expired")
    await w.stock.release(placed.order_id, placed.session_id, "payment_failed:expired")  # redelivered
    stored = w.products.docs[knife.product_id]
    assert (stored.stock_available, stored.stock_reserved) == (5, 0)


async def test_a_release_arriving_while_the_handler_takes_the_lines_gets_every_line_back() -> None:
    # The handler stores the reservation only at the end: a release in between stores RELEASED first,
    # the handler's insert then loses, and every line it took goes back, once.
    w = World()
    knife, board = await w.add(details("KNIFE", stock=5), details("BOARD", stock=5))
    placed = order((knife, 2), (board, 1))
    after_first_stock_write(w, lambda: w.stock.release(placed.order_id, placed.session_id, "payment_failed:x"))
    await w.stock.order_placed(placed, "evt-1")
    assert w.reservations.docs[placed.order_id].status is ReservationStatus.RELEASED
    for p in (knife, board):
        stored = w.products.docs[p.product_id]
        assert (stored.stock_available, stored.stock_reserved, stored.stock_on_hand) == (5, 0, 5)
    assert w.stock_events("StockReserved") == []
    await w.stock.order_placed(placed, "evt-1")  # redelivered: reserves nothing
    assert w.products.docs[knife.product_id].stock_available == 5
