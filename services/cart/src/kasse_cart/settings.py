"""Cart settings: environment variables prefixed KASSE_CART_ (shared endpoints may be unprefixed)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from kasse_common.ratelimit import Rate
from kasse_common.settings import ServiceSettings


class CartSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="KASSE_CART_", extra="ignore", frozen=True)

    service_name: ClassVar[str] = "cart"
    dev_secrets: ClassVar[dict[str, str]] = {**ServiceSettings.dev_secrets, "payment_internal_token": "dev-internal"}

    http_port: int = 8002
    admin_token: SecretStr | None = Field(None, description="Bearer token of /v1/admin/*; unset: admin refused")

    currency: str = Field("EUR", pattern=r"^[A-Z]{3}$", description="The currency of every cart")
    max_quantity_per_line: int = Field(20, ge=1, le=1000)
    max_lines: int = Field(50, ge=1, le=500)
    free_shipping_threshold: int | None = Field(
        5000, ge=0, description="Automatic promotion: free shipping from this items total (minor units); None: off"
    )

    abandonment_idle_s: float = Field(3600.0, gt=0, description="Idle time after which a cart with items is abandoned")
    abandonment_check_interval_s: float = Field(60.0, gt=0)

    unpaid_order_timeout_s: float = Field(
        1800.0, gt=0, description="An order not paid within this time is cancelled (reason payment_timeout)"
    )
    held_order_timeout_s: float = Field(
        86400.0, gt=0, description="Deadline of an order whose payment is held for fraud review"
    )
    unpaid_check_interval_s: float = Field(30.0, gt=0, description="How often unpaid orders are checked")

    # Abuse limits (kasse_common.ratelimit, "N/second|minute|hour" or None = off; per instance).
    rate_limit_cart_creation: Rate = Field("60/minute", description="Carts one client IP may create")
    rate_limit_coupon_per_client: Rate = Field("30/minute", description="Coupon attempts per client IP")
    rate_limit_coupon_per_cart: Rate = Field("10/minute", description="Coupon attempts on one cart")
    rate_limit_order_per_client: Rate = Field("30/minute", description="Order placements per client IP")
    rate_limit_order_per_cart: Rate = Field(
        "10/minute", description="Order placements (and idempotent retries) on one cart"
    )

    payment_base_url: str | None = Field(
        "http://127.0.0.1:8003", description="The payment service, for the order view's client secret"
    )
    payment_internal_token: SecretStr | None = None
    payment_timeout_s: float = Field(1.0, gt=0, le=10)
