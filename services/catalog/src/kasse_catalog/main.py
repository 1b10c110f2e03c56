"""The catalog service: app factory and console entry point (`kasse-catalog`)."""

from __future__ import annotations

import logging
from datetime import timedelta

from fastapi import FastAPI

from kasse_catalog import wiring
from kasse_catalog.entrypoints import consumers
from kasse_catalog.entrypoints.http import CatalogServices, routers
from kasse_catalog.settings import CatalogSettings
from kasse_common.identity import CustomerVerifier
from kasse_common.ratelimit import RateLimiter
from kasse_common.runtime import ServiceRuntime, serve
from kasse_common.steps import StepRunner
from kasse_contracts.events import (
    ExperimentChanged,
    ExperimentExposed,
    ProductChanged,
    ProductSearched,
    ProductViewed,
    ReviewSubmitted,
    StockRejected,
    StockReserved,
)

log = logging.getLogger(__name__)

DESCRIPTION = """Products, discovery (search, product pages, recommendations), reviews and stock.

Storefront calls identify the shopper with `X-Session-Id` (minted and returned when absent) and
optionally a customer token (`Authorization: Bearer <OIDC JWT>`; none: a guest). Admin calls need
`Authorization: Bearer <KASSE_CATALOG_ADMIN_TOKEN>`.
Errors are `application/problem+json`. Money is integer minor units plus a currency."""


def create_app(settings: CatalogSettings | None = None) -> FastAPI:
    settings = settings or CatalogSettings()
    runtime = ServiceRuntime(settings)
    catalog = wiring.build(runtime, settings)
    runtime.produces(
        ProductViewed, ProductSearched, ProductChanged, ReviewSubmitted, StockReserved, StockRejected, ExperimentExposed
    )
    runtime.consumer.on(ExperimentChanged, catalog.experiments.apply)
    runtime.on_startup(catalog.ensure_indexes)
    consumers.register(runtime.consumer, catalog.stock, catalog.learner)
    catalog.stock.steps = StepRunner(catalog.stock.advance, settings.reservation_concurrency, name="stock-reservation")
    runtime.on_shutdown(catalog.stock.steps.stop)
    runtime.on_shutdown(catalog.stock.writes.stop)

    async def resume_unfinished_reservations() -> None:
        """Reservations whose run a crash (or a failed step) stopped are finished here."""
        await catalog.stock.resume_unfinished(settings.reservation_resume_after_s)

    runtime.every(settings.reservation_resume_after_s, resume_unfinished_reservations, name="reservation-resume")

    async def finish_interrupted_reviews() -> None:
        """Reviews stored but not yet counted (the process died in between) are completed here."""
        await catalog.reviews.finish_pending(timedelta(seconds=settings.pending_review_grace_s))

    runtime.every(settings.pending_review_grace_s, finish_interrupted_reviews, name="interrupted-reviews")
    app = runtime.create_app(title="Kasse catalog", description=DESCRIPTION, routers=routers)
    app.state.catalog = CatalogServices(
        settings=settings,
        catalog=catalog.catalog,
        discovery=catalog.discovery,
        reviews=catalog.reviews,
        identity=CustomerVerifier.from_settings(settings),
        review_limit=RateLimiter(enabled=settings.rate_limits_enabled).limit(
            "rate_limit_review_per_client", settings.rate_limit_review_per_client
        ),
    )
    return app


def run() -> None:
    settings = CatalogSettings()
    serve(create_app(settings), settings)


if __name__ == "__main__":
    run()
