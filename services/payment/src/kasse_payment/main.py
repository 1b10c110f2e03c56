"""Wiring of the payment service: `create_app()` builds everything, nothing runs at import time."""

from __future__ import annotations

import logging
from typing import Any

import stripe
from fastapi import FastAPI
from prometheus_client.core import CounterMetricFamily

from kasse_common.ratelimit import RateLimiter
from kasse_common.runtime import ServiceRuntime, serve
from kasse_common.steps import StepRunner
from kasse_contracts.events import CreditNoteIssued, InvoiceIssued, PaymentCaptured, PaymentFailed, PaymentRefunded
from kasse_payment.adapters.invoices import InvoiceRepository
from kasse_payment.adapters.mongo import MongoPayments
from kasse_payment.adapters.stripe_gateway import StripeGateway, build_client
from kasse_payment.application.invoicing import Invoicing, document_record
from kasse_payment.application.service import PaymentConfig, PaymentService, utcnow
from kasse_payment.domain.fraud import FraudPolicy
from kasse_payment.domain.invoice import Seller
from kasse_payment.entrypoints import consumers, http
from kasse_payment.settings import ConfirmationMode, FraudAction, PaymentSettings

log = logging.getLogger(__name__)


def fraud_policy(s: PaymentSettings) -> FraudPolicy:
    return FraudPolicy(
        window_s=s.fraud_window_s,
        max_orders_per_email=s.fraud_max_orders_per_email,
        max_orders_per_ip=s.fraud_max_orders_per_ip,
        max_orders_per_card=s.fraud_max_orders_per_card,
        max_declines=s.fraud_max_declines,
        amount_multiplier=s.fraud_amount_multiplier,
        min_history=s.fraud_min_history,
        points_velocity=s.fraud_points_velocity,
        points_amount=s.fraud_points_amount,
        points_country_mismatch=s.fraud_points_country_mismatch,
        points_disposable_email=s.fraud_points_disposable_email,
        block_score=s.fraud_block_score,
        hold_for_review=s.fraud_action is FraudAction.HOLD,
        disposable_domains=frozenset(d.lower() for d in s.fraud_disposable_domains),
    )


def create_app(
    settings: PaymentSettings | None = None, *, stripe_http_client: stripe.HTTPClient | None = None
) -> FastAPI:
    """`stripe_http_client` lets tests record what is sent to Stripe; production uses httpx."""
    settings = settings or PaymentSettings()
    runtime = ServiceRuntime(settings)
    history_db = settings.fraud_history_database or f"{settings.database_name}_fraud_history"
    repository = MongoPayments(
        runtime.document_store("payments", trace_per_document=True),
        runtime.encode,
        runtime.mongo[history_db]["payment_fraud_history"],
    )
    gateway = StripeGateway(
        build_client(
            settings.secret("stripe_api_key").get_secret_value(),
            settings.stripe_api_base,
            timeout_s=settings.stripe_timeout_s,
            max_network_retries=settings.stripe_max_network_retries,
            http_client=stripe_http_client,
        )
    )
    payments = PaymentService(
        repository,
        repository,
        gateway,
        PaymentConfig(
            server_confirmation=settings.confirmation_mode is ConfirmationMode.SERVER,
            server_payment_method=settings.server_payment_method,
            fraud=fraud_policy(settings),
            max_attempts=settings.stripe_max_attempts,
            retry_backoff_s=settings.stripe_retry_backoff_s,
            review_timeout_s=settings.review_timeout_s,
        ),
    )
    payments.steps = StepRunner(payments.advance, settings.steps_concurrency, name="payment-steps")
    runtime.on_shutdown(payments.steps.stop)
    documents = InvoiceRepository(
        runtime.document_store("invoices"),
        runtime.db["invoice_sequences"],
        runtime.db["invoice_orders"],
        document_record(runtime.encode, utcnow),
    )
    invoicing = Invoicing(
        documents, Seller(settings.seller_name, tuple(settings.seller_address), settings.seller_vat_id), utcnow
    )
    runtime.produces(PaymentCaptured, PaymentFailed, PaymentRefunded, InvoiceIssued, CreditNoteIssued)
    runtime.on_startup(repository.ensure_indexes)
    runtime.on_startup(documents.ensure_indexes)
    consumers.register(runtime.consumer, payments, invoicing)

    async def number_unnumbered_invoices() -> None:
        # A process killed between claiming a number and writing it leaves the newest claim open: finish it.
        await invoicing.sweep()

    runtime.every(settings.invoice_sweep_interval_s, number_unnumbered_invoices, name="invoice-sweeper")

    async def resume_unfinished_payments() -> None:
        # Work interrupted by a crash or a transient Stripe error is picked up again here.
        await payments.sweep(idle_s=settings.sweep_interval_s)

    runtime.every(settings.sweep_interval_s, resume_unfinished_payments, name="payment-sweeper", wait_first=True)
    app = runtime.create_app(
        title="Kasse payment",
        description="Stripe PaymentIntents for orders, signed webhooks, refunds and fraud screening.",
        routers=http.routers(
            payments,
            invoicing,
            internal_token=settings.internal_token,
            admin_token=settings.admin_token,
            webhook_secret=settings.secret("stripe_webhook_secret"),
            webhook_tolerance_s=settings.webhook_tolerance_s,
            webhook_limit=RateLimiter(enabled=settings.rate_limits_enabled).limit(
                "rate_limit_webhook_per_client", settings.rate_limit_webhook_per_client
            ),
        ),
    )
    runtime.prometheus_registry().register(_HeldCollector(payments))
    app.state.payments = payments
    return app


class _HeldCollector:
    """kasse_payment_held_for_review_total{reason}: fraud holds and captures whose amount differs."""

    def __init__(self, payments: PaymentService) -> None:
        self.payments = payments

    def collect(self) -> Any:
        family = CounterMetricFamily(
            "kasse_payment_held_for_review", "Payments held for an admin's review, by reason", labels=["reason"]
        )
        for reason in ("fraud", "amount_mismatch"):
            family.add_metric([reason], self.payments.held_for_review.get(reason, 0))
        yield family


def run() -> None:
    settings = PaymentSettings()
    serve(create_app(settings), settings)
