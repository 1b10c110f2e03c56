"""The cart service's composition root: wires adapters, use cases and entrypoints on the kit."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from fastapi import FastAPI

from kasse_cart.adapters.mongo import (
    MongoCartRepository,
    MongoCouponRepository,
    MongoOrderRepository,
    MongoProductReadModel,
    MongoRateTableReadModel,
)
from kasse_cart.adapters.payment_client import HttpPaymentLookup
from kasse_cart.application.abandonment import AbandonmentJob
from kasse_cart.application.admin import Admin
from kasse_cart.application.carts import CartService
from kasse_cart.application.orders import OrderLife
from kasse_cart.application.payment_deadline import PaymentDeadlineJob
from kasse_cart.application.read_models import ReadModels
from kasse_cart.domain.cart import CartLimits
from kasse_cart.domain.promotions import FreeShippingPromotion
from kasse_cart.entrypoints import consumers
from kasse_cart.entrypoints.http import admin_router, storefront_router
from kasse_cart.settings import CartSettings
from kasse_common.experiments import ExperimentBook
from kasse_common.identity import CustomerVerifier, proven_customer
from kasse_common.runtime import ServiceRuntime, serve
from kasse_contracts.events import (
    CartAbandoned,
    CartUpdated,
    CheckoutStarted,
    ExperimentChanged,
    ExperimentExposed,
    OrderCancelled,
    OrderPlaced,
)

log = logging.getLogger(__name__)


def utc_now() -> datetime:
    return datetime.now(UTC)


def create_app(settings: CartSettings | None = None) -> FastAPI:
    settings = settings or CartSettings()
    runtime = ServiceRuntime(settings)
    carts_repo = MongoCartRepository(runtime.document_store("carts"))
    orders_repo = MongoOrderRepository(runtime.document_store("orders", trace_per_document=True))
    products = MongoProductReadModel(runtime.db["products"])
    rate_tables = MongoRateTableReadModel(runtime.db["rate_tables"])
    coupons = MongoCouponRepository(runtime.db["coupons"])

    free_shipping = (
        FreeShippingPromotion(settings.free_shipping_threshold, settings.currency)
        if settings.free_shipping_threshold is not None
        else None
    )
    # Experiments on the free-shipping threshold: definitions from ExperimentChanged, the session's
    # variant from the kit's assignment rule, exposures recorded once per session (standalone events).
    experiments = ExperimentBook(runtime.db["experiments"], runtime.encode, runtime.standalone_events.add)
    carts = CartService(
        carts=carts_repo,
        products=products,
        rate_tables=rate_tables,
        coupons=coupons,
        orders=orders_repo,
        encode=runtime.encode,
        clock=utc_now,
        limits=CartLimits(settings.max_quantity_per_line, settings.max_lines),
        free_shipping=free_shipping,
        currency=settings.currency,
        payment_timeout=timedelta(seconds=settings.unpaid_order_timeout_s),
        experiments=experiments,
    )
    payments = HttpPaymentLookup(settings.payment_base_url, settings.payment_internal_token, settings.payment_timeout_s)
    orders = OrderLife(orders=orders_repo, encode=runtime.encode, clock=utc_now, payments=payments)
    admin = Admin(coupons=coupons, orders=orders_repo)
    abandonment = AbandonmentJob(
        carts=carts_repo, encode=runtime.encode, clock=utc_now, idle=timedelta(seconds=settings.abandonment_idle_s)
    )

    payment_deadline = PaymentDeadlineJob(
        orders=orders_repo,
        life=orders,
        payments=payments,
        clock=utc_now,
        review_timeout=timedelta(seconds=settings.held_order_timeout_s),
        recheck_after=timedelta(seconds=settings.unpaid_check_interval_s * 2),
    )

    runtime.produces(CartUpdated, CartAbandoned, CheckoutStarted, OrderPlaced, OrderCancelled, ExperimentExposed)
    runtime.consumer.on(ExperimentChanged, experiments.apply)
    consumers.register(runtime.consumer, orders, ReadModels(carts))

    async def create_indexes() -> None:
        await carts_repo.ensure_indexes()
        await orders_repo.ensure_indexes()

    async def report_abandoned_carts() -> None:
        await abandonment.run_once()

    async def expire_unpaid_orders() -> None:
        await payment_deadline.run_once()

    runtime.on_startup(create_indexes)
    runtime.on_shutdown(payments.aclose)
    runtime.every(settings.abandonment_check_interval_s, report_abandoned_carts, name="abandoned-carts")
    runtime.every(settings.unpaid_check_interval_s, expire_unpaid_orders, name="unpaid-orders")
    app = runtime.create_app(
        title="Kasse cart",
        description=(
            "Carts (addressed by an unguessable token), promotions, checkout and the order's life. "
            "Errors are application/problem+json."
        ),
        routers=[
            storefront_router(carts, orders, proven_customer(CustomerVerifier.from_settings(settings)), settings),
            admin_router(settings, admin, orders),
        ],
    )
    app.state.abandonment = abandonment
    app.state.payment_deadline = payment_deadline
    return app


def run() -> None:
    settings = CartSettings()
    serve(create_app(settings), settings)
