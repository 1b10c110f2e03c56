"""Reviews: submit (verified when the reviewer's order with the product was delivered) and list.

The order is proven either by a proven customer (a verified customer token: a delivered order of theirs
holds the product) or by the order itself: its id and its order token, checked against the token's hash
that OrderPlaced carried — no call to cart at request time.

Two documents change without a transaction: the review is stored PENDING first, then the product's
rating is updated with ReviewSubmitted in its outbox (marked with the review id, so it counts once),
then the review is PUBLISHED. If the process dies in between, `finish_pending` completes it later.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta

from kasse_catalog.application.ports import Clock, Encoder, ProductRepository, PurchaseLedger, ReviewRepository
from kasse_catalog.domain.product import Product
from kasse_catalog.domain.review import Review, ReviewSort, ReviewStatus, check_order_proof
from kasse_common.envelope import derived_event_id
from kasse_common.errors import NotFound
from kasse_common.retry import retry_on_conflict
from kasse_contracts.events import ReviewSubmitted


@dataclass(frozen=True)
class ReviewDraft:
    rating: int
    title: str
    text: str
    author_name: str


@dataclass(frozen=True)
class OrderProof:
    """The order a guest's review claims: its id and the order token the shopper was given."""

    order_id: str
    order_token: str


@dataclass(frozen=True)
class ReviewPage:
    items: list[Review]
    total: int


class Reviews:
    def __init__(
        self,
        products: ProductRepository,
        reviews: ReviewRepository,
        ledger: PurchaseLedger,
        encode: Encoder,
        clock: Clock,
    ) -> None:
        self.products = products
        self.reviews = reviews
        self.ledger = ledger
        self.encode = encode
        self.clock = clock

    async def _product(self, id_or_slug: str) -> Product:
        product = await self.products.get(id_or_slug) or await self.products.get_by_slug(id_or_slug)
        if product is None or not product.active:
            raise NotFound(f"no product {id_or_slug!r}")
        return product

    async def submit(
        self,
        id_or_slug: str,
        draft: ReviewDraft,
        *,
        customer_id: str | None,
        session_id: str | None,
        order: OrderProof | None = None,
    ) -> tuple[Review, Product]:
        product = await self._product(id_or_slug)
        # Verified only with proof: the order's own token, or a proven customer (a verified customer token).
        # A session id is chosen by the client and proves nothing.
        verified_order: str | None = None
        if order is not None:
            check_order_proof(await self.ledger.purchase(order.order_id), product.product_id, order.order_token)
            verified_order = order.order_id
        elif customer_id:
            verified_order = await self.ledger.delivered_order_with(product.product_id, customer_id)
        review = Review(
            review_id="rev_" + uuid.uuid4().hex,
            product_id=product.product_id,
            rating=draft.rating,
            title=draft.title.strip(),
            text=draft.text.strip(),
            author_name=draft.author_name.strip(),
            verified_purchase=verified_order is not None,
            created_at=self.clock(),
            customer_id=customer_id,
            session_id=session_id,
        )
        await self.reviews.add(review)
        product = await self._count(review)
        return review, product

    async def _count(self, review: Review) -> Product:
        marker = derived_event_id("review", review.review_id)

        async def attempt() -> Product:
            product = await self.products.get(review.product_id)
            if product is None:
                raise NotFound(f"no product {review.product_id!r}")
            if await self.products.was_applied(product.product_id, marker):
                return product
            product.add_rating(review.rating)
            event = ReviewSubmitted(
                occurred_at=review.created_at,
                product_id=product.product_id,
                review_id=review.review_id,
                rating=review.rating,
                verified_purchase=review.verified_purchase,
                customer_id=review.customer_id,
                session_id=review.session_id,
                rating_average=product.rating_average,
                rating_count=product.rating_count,
            )
            await self.products.save(product, [self.encode(event, event_id=marker)], marker=marker)
            product.version = (product.version or 0) + 1
            return product

        product = await retry_on_conflict(attempt, f"rate {review.product_id}")
        await self.reviews.mark_published(review.review_id)
        review.status = ReviewStatus.PUBLISHED
        return product

    async def finish_pending(self, older_than: timedelta, limit: int = 100) -> int:
        pending = await self.reviews.pending_since(self.clock() - older_than, limit)
        for review in pending:
            await self._count(review)
        return len(pending)

    async def for_product(
        self, id_or_slug: str, sort: ReviewSort, page: int, page_size: int
    ) -> tuple[Product, ReviewPage]:
        product = await self._product(id_or_slug)
        items, total = await self.reviews.for_product(product.product_id, sort, (page - 1) * page_size, page_size)
        return product, ReviewPage(items, total)
