"""Discovery: search and browse, the product page, recommendations. Searches and views are
published as standalone outbox events; recommendations are read from precomputed state."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from kasse_catalog.application.ports import (
    STRATEGY_KINDS,
    Clock,
    Encoder,
    EventSink,
    ExperimentAssigner,
    ProductRepository,
    RecommendationStrategy,
    RelationKind,
    SignalStore,
)
from kasse_catalog.domain.product import Product
from kasse_catalog.domain.search import SearchCriteria
from kasse_common.errors import NotFound
from kasse_contracts.base import Channel
from kasse_contracts.events import ExperimentParameter, ProductSearched, ProductViewed, SearchFilters


@dataclass(frozen=True)
class Shopper:
    session_id: str
    customer_id: str | None = None


@dataclass(frozen=True)
class SearchPage:
    items: list[Product]
    total: int
    criteria: SearchCriteria


@dataclass(frozen=True)
class Recommendation:
    product: Product
    reason: str  # a RelationKind value, "popular_in_category" or "popular"
    score: int


class Discovery:
    def __init__(
        self,
        products: ProductRepository,
        signals: SignalStore,
        events: EventSink,
        encode: Encoder,
        clock: Clock,
        experiments: ExperimentAssigner | None = None,
    ) -> None:
        self.experiments = experiments
        self.products = products
        self.signals = signals
        self.events = events
        self.encode = encode
        self.clock = clock

    async def search(self, criteria: SearchCriteria, shopper: Shopper, channel: Channel) -> SearchPage:
        items, total = await self.products.search(criteria)
        event = ProductSearched(
            occurred_at=self.clock(),
            session_id=shopper.session_id,
            customer_id=shopper.customer_id,
            query=criteria.query,
            filters=SearchFilters(
                category=criteria.category,
                min_price=criteria.min_price,
                max_price=criteria.max_price,
                in_stock=criteria.in_stock,
                min_rating=criteria.min_rating,
            ),
            sort=criteria.sort.value,
            page=criteria.page,
            result_count=total,
            product_ids=[p.product_id for p in items],
            channel=channel,
        )
        await self.events.add(self.encode(event))
        return SearchPage(items, total, criteria)

    async def categories(self) -> list[tuple[str, int]]:
        return await self.products.categories()

    async def find(self, id_or_slug: str) -> Product:
        """A product shoppers may see: active, by id or by slug."""
        product = await self.products.get(id_or_slug) or await self.products.get_by_slug(id_or_slug)
        if product is None or not product.active:
            raise NotFound(f"no product {id_or_slug!r}")
        return product

    async def view(
        self, id_or_slug: str, shopper: Shopper, channel: Channel, campaign: str | None, referrer: str | None
    ) -> Product:
        product = await self.find(id_or_slug)
        event = ProductViewed(
            occurred_at=self.clock(),
            session_id=shopper.session_id,
            customer_id=shopper.customer_id,
            product_id=product.product_id,
            sku=product.sku,
            category=product.category,
            price=product.price,
            channel=channel,
            campaign=campaign,
            referrer=referrer,
        )
        await self.events.add(self.encode(event))
        return product

    async def strategy(self, shopper: Shopper | None) -> RecommendationStrategy:
        """The session's variant while an experiment on `recommendation_strategy` runs (the first call
        records the session's exposure), else blended. A value that names no strategy (a typo in the
        definition) gives blended: the shopper still sees recommendations."""
        if shopper is None or self.experiments is None:
            return RecommendationStrategy.BLENDED
        assignment = await self.experiments.assign(
            ExperimentParameter.RECOMMENDATION_STRATEGY, shopper.session_id, shopper.customer_id
        )
        if assignment is None:
            return RecommendationStrategy.BLENDED
        try:
            return RecommendationStrategy(assignment.value)
        except ValueError:
            return RecommendationStrategy.BLENDED

    async def for_product(
        self,
        id_or_slug: str,
        kind: RelationKind | None,
        limit: int,
        strategy: RecommendationStrategy = RecommendationStrategy.BLENDED,
    ) -> list[Recommendation]:
        """`kind` when asked for explicitly, else the relations of `strategy`."""
        product = await self.find(id_or_slug)
        kinds = [kind] if kind else list(STRATEGY_KINDS[strategy])
        scores: dict[str, int] = defaultdict(int)
        reasons: dict[str, str] = {}
        for k in kinds:
            # Bought together counts more than viewed together when both are asked for.
            weight = 3 if k is RelationKind.BOUGHT_TOGETHER and len(kinds) > 1 else 1
            for other_id, count in await self.signals.related(k, product.product_id, limit * 3):
                scores[other_id] += count * weight
                reasons.setdefault(other_id, k.value)
        picked = await self._rank(scores, reasons, exclude={product.product_id}, limit=limit)
        return await self._fill_with_popular(picked, product.category, {product.product_id}, limit)

    async def for_session(
        self, session_id: str, limit: int, strategy: RecommendationStrategy = RecommendationStrategy.BLENDED
    ) -> list[Recommendation]:
        recent = await self.signals.recent_views(session_id)
        kinds = STRATEGY_KINDS[strategy]
        scores: dict[str, int] = defaultdict(int)
        reasons: dict[str, str] = {}
        for rank, viewed_id in enumerate(recent[:5]):
            recency_weight = 5 - rank  # the latest view says most about what the shopper wants now
            for kind in kinds:
                weight = 3 if kind is RelationKind.BOUGHT_TOGETHER else 1
                for other_id, count in await self.signals.related(kind, viewed_id, limit * 2):
                    scores[other_id] += count * weight * recency_weight
                    reasons.setdefault(other_id, kind.value)
        exclude = set(recent)
        picked = await self._rank(scores, reasons, exclude=exclude, limit=limit)
        category = None
        if recent:
            latest = await self.products.get(recent[0])
            category = latest.category if latest else None
        return await self._fill_with_popular(picked, category, exclude, limit)

    async def _rank(
        self, scores: dict[str, int], reasons: dict[str, str], exclude: set[str], limit: int
    ) -> list[Recommendation]:
        ranked = sorted((pid for pid in scores if pid not in exclude), key=lambda pid: (-scores[pid], pid))
        found = {p.product_id: p for p in await self.products.get_many(ranked[: limit * 2])}
        out = [
            Recommendation(found[pid], reasons[pid], scores[pid])
            for pid in ranked
            if pid in found and found[pid].active
        ]
        return out[:limit]

    async def _fill_with_popular(
        self, picked: list[Recommendation], category: str | None, exclude: set[str], limit: int
    ) -> list[Recommendation]:
        if len(picked) >= limit:
            return picked
        taken = exclude | {r.product.product_id for r in picked}
        for scope in [category, None] if category else [None]:
            if len(picked) >= limit:
                break
            reason = "popular_in_category" if scope else "popular"
            for product in await self.products.popular(category=scope, exclude=taken, limit=limit - len(picked)):
                picked.append(Recommendation(product, reason, product.popularity))
                taken.add(product.product_id)
        return picked
