"""Builds the catalog's adapters and use cases on a ServiceRuntime (used by the app and the seed)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from kasse_catalog.adapters.mongo import (
    MongoProducts,
    MongoPurchaseLedger,
    MongoReservations,
    MongoReviews,
    MongoSignals,
)
from kasse_catalog.application.discovery import Discovery
from kasse_catalog.application.learning import Learner
from kasse_catalog.application.products import ProductCatalog
from kasse_catalog.application.reviews import Reviews
from kasse_catalog.application.stock import StockKeeper
from kasse_catalog.settings import CatalogSettings
from kasse_common.experiments import ExperimentBook
from kasse_common.runtime import ServiceRuntime


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Catalog:
    products: MongoProducts
    reservations: MongoReservations
    reviews_repo: MongoReviews
    signals: MongoSignals
    ledger: MongoPurchaseLedger
    catalog: ProductCatalog
    discovery: Discovery
    reviews: Reviews
    stock: StockKeeper
    learner: Learner
    experiments: ExperimentBook

    async def ensure_indexes(self) -> None:
        await self.products.ensure_indexes()
        await self.reservations.ensure_indexes()
        await self.reviews_repo.ensure_indexes()
        await self.signals.ensure_indexes()
        await self.ledger.ensure_indexes()


def build(runtime: ServiceRuntime, settings: CatalogSettings) -> Catalog:
    encode = runtime.encode
    products = MongoProducts(runtime.document_store("products"), candidate_limit=settings.search_candidate_limit)
    reservations = MongoReservations(runtime.document_store("reservations"))
    reviews_repo = MongoReviews(runtime.db["reviews"])
    signals = MongoSignals(runtime.db["relations"], runtime.db["sessions"])
    ledger = MongoPurchaseLedger(runtime.db["purchases"])
    # Experiments on the recommendation strategy: definitions from ExperimentChanged, one exposure per session.
    experiments = ExperimentBook(runtime.db["experiments"], encode, runtime.standalone_events.add)
    return Catalog(
        products=products,
        reservations=reservations,
        reviews_repo=reviews_repo,
        signals=signals,
        ledger=ledger,
        catalog=ProductCatalog(products, encode, utc_now),
        discovery=Discovery(products, signals, runtime.standalone_events, encode, utc_now, experiments),
        reviews=Reviews(products, reviews_repo, ledger, encode, utc_now),
        stock=StockKeeper(products, reservations, encode, utc_now),
        learner=Learner(
            products,
            signals,
            ledger,
            recent_views=settings.session_recent_views,
            viewed_together_window=settings.viewed_together_window,
        ),
        experiments=experiments,
    )
