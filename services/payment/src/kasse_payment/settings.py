"""Payment settings (env prefix KASSE_PAYMENT_). Secrets are SecretStr: never in a repr or a log."""

from __future__ import annotations

from enum import StrEnum
from typing import ClassVar

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from kasse_common.ratelimit import Rate
from kasse_common.settings import ServiceSettings

DEFAULT_DISPOSABLE_DOMAINS = (
    "mailinator.com",
    "guerrillamail.com",
    "10minutemail.com",
    "tempmail.com",
    "temp-mail.org",
    "yopmail.com",
    "trashmail.com",
    "sharklasers.com",
    "getnada.com",
    "dispostable.com",
)


class ConfirmationMode(StrEnum):
    CUSTOMER = "customer"  # the storefront confirms with the client secret (3-D Secure, wallets)
    SERVER = "server"  # the service confirms with a configured test payment method (demo, tests)


class FraudAction(StrEnum):
    FAIL = "fail"  # publish PaymentFailed(reason=fraud_suspected)
    HOLD = "hold"  # keep the payment for an admin's review


class PaymentSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="KASSE_PAYMENT_", extra="ignore", frozen=True)
    service_name: ClassVar[str] = "payment"
    # No usable default: production refuses to start without these (kit ServiceSettings, fail closed).
    dev_secrets: ClassVar[dict[str, str]] = {
        **ServiceSettings.dev_secrets,
        "stripe_api_key": "sk_test_123",  # stripe-mock accepts any test key
        "stripe_webhook_secret": "whsec_local_dev",
        "internal_token": "dev-internal",
    }

    http_port: int = 8003
    rate_limit_webhook_per_client: Rate = Field(
        "600/minute",
        description="Webhook calls one client IP may make (Stripe sends from few IPs; kasse_common.ratelimit)",
    )

    # Stripe
    stripe_api_key: SecretStr | None = Field(None, description="Required in production")
    stripe_webhook_secret: SecretStr | None = Field(None, description="Required in production")
    stripe_api_base: str = Field("https://api.stripe.com", description="stripe-mock's address in tests")
    stripe_timeout_s: float = Field(10.0, gt=0)
    stripe_max_network_retries: int = Field(3, ge=0, description="SDK retries (backoff, same idempotency key)")
    stripe_max_attempts: int = Field(
        5, ge=1, description="Charge attempts that failed transiently (after the SDK's retries) before giving up"
    )
    stripe_retry_backoff_s: float = Field(2.0, gt=0, description="First delay before the sweeper retries")
    webhook_tolerance_s: int = Field(300, ge=1, description="Max age of a Stripe-Signature timestamp")
    confirmation_mode: ConfirmationMode = ConfirmationMode.CUSTOMER
    server_payment_method: str = Field("pm_card_visa", description="Used in server confirmation mode")
    review_timeout_s: float = Field(
        86400.0,
        gt=0,
        description="A payment held for review (fraud, amount mismatch) is rejected when not decided by then",
    )
    sweep_interval_s: float = Field(5.0, gt=0, description="How often unfinished Stripe work is resumed")
    steps_concurrency: int = Field(
        16, ge=1, description="Orders whose screening and Stripe calls run at the same time, beside the consumer"
    )
    fraud_history_database: str = Field(
        "",
        description="Database of screening's per-key history (empty: the service's database name + "
        "'_fraud_history'). Its own database because FerretDB writes one database at a time and payment's "
        "writes queue there; on MongoDB it may name the service's own database",
    )

    # The seller on invoices and credit notes (§14 UStG: name, address, VAT id)
    seller_name: str = Field("Kasse Demo GmbH", description="The seller's name on invoices")
    seller_address: list[str] = Field(
        default_factory=lambda: ["Musterstraße 1", "10115 Berlin", "Deutschland"],
        description="The seller's postal address, one line each (JSON list in the environment)",
    )
    seller_vat_id: str = Field("DE000000000", description="The seller's VAT id (USt-IdNr.) on invoices")
    invoice_sweep_interval_s: float = Field(30.0, gt=0, description="How often unnumbered invoices are numbered")

    # Tokens
    internal_token: SecretStr | None = Field(None, description="Bearer token of the cart's order view")
    admin_token: SecretStr | None = Field(None, description="Bearer token of /v1/admin/…")

    # Fraud screening
    fraud_window_s: int = Field(3600, ge=1, description="Velocity window")
    fraud_max_orders_per_email: int = Field(5, ge=1, description="Orders per email in the window before it counts")
    fraud_max_orders_per_ip: int = Field(10, ge=1)
    fraud_max_orders_per_card: int = Field(5, ge=1)
    fraud_max_declines: int = Field(3, ge=1, description="Declined payments per email or IP in the window")
    fraud_amount_multiplier: float = Field(5.0, gt=1, description="'Far above history' = this x the average")
    fraud_min_history: int = Field(2, ge=1, description="Captured payments needed before amounts are compared")
    fraud_points_velocity: int = Field(60, ge=0)
    fraud_points_amount: int = Field(30, ge=0)
    fraud_points_country_mismatch: int = Field(25, ge=0)
    fraud_points_disposable_email: int = Field(40, ge=0)
    fraud_block_score: int = Field(50, ge=1, description="Score at or above which the payment is not attempted")
    fraud_action: FraudAction = FraudAction.FAIL
    fraud_disposable_domains: tuple[str, ...] = DEFAULT_DISPOSABLE_DOMAINS
