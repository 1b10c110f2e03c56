"""The storefront's settings (env prefix KASSE_STOREFRONT_). It reads and writes through the other
services' HTTP APIs, so it needs their URLs; Kafka and Mongo only for the layout experiments."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from kasse_common.settings import ServiceSettings


class StorefrontSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="KASSE_STOREFRONT_", extra="ignore", frozen=True)
    service_name: ClassVar[str] = "storefront"

    http_port: int = 8000

    catalog_url: str = "http://127.0.0.1:8001"
    cart_url: str = "http://127.0.0.1:8002"
    payment_url: str = "http://127.0.0.1:8003"
    shipping_url: str = "http://127.0.0.1:8004"
    backend_timeout_s: float = Field(3.0, gt=0, description="Calls the page cannot do without (product, cart)")
    optional_timeout_s: float = Field(
        0.8, gt=0, description="Calls for blocks that degrade (reviews, recommendations, delivery promise)"
    )
    backend_max_connections: int = Field(50, ge=1, description="Per backend service, pooled")
    cache_ttl_s: float = Field(
        20.0,
        ge=0,
        description="How long answers the same for every shopper are kept: the home listing, reviews, "
        "shipping quotes (0: not kept). Searches, product views and recommendations are never cached.",
    )
    cache_max_entries: int = Field(2048, ge=16, description="Entries per cache (bounded memory)")
    workers: int = Field(1, ge=1, le=32, description="uvicorn worker processes (each with its own caches)")

    # No admin API here (the kit's fail-closed rule would require KASSE_STOREFRONT_ADMIN_TOKEN otherwise);
    # the session secret has its own rule below.
    dev_secrets: ClassVar[dict[str, str]] = {}

    # The session cookie is signed with this; outside the development profile there is no default.
    session_secret: SecretStr | None = None
    session_max_age_s: int = Field(14 * 24 * 3600, ge=60)
    # Behind TLS (the production default): Secure cookie and HSTS. Development serves plain HTTP.
    https: bool | None = Field(None, description="Default: true in production, false in development")

    stripe_publishable_key: str | None = Field(
        None, description="pk_…: checkout confirms the PaymentIntent with Stripe's Payment Element"
    )
    stripe_js_url: str = Field(
        "https://js.stripe.com/v3/",
        pattern=r"^https?://[^/?#]+/",
        description="Stripe.js, loaded from Stripe (never bundled); tests point it at a local stand-in",
    )
    # Development only: the test-payment page signs Stripe's webhook with payment's endpoint secret.
    test_payment_webhook_secret: SecretStr | None = None
    # …and asks payment's internal view for the order's PaymentIntent id (KASSE_PAYMENT_INTERNAL_TOKEN).
    test_payment_internal_token: SecretStr | None = None

    experiments_enabled: bool = Field(
        True,
        description="Honour layout experiments (checkout layout, template variant): needs Kafka and Mongo "
        "(KASSE_KAFKA_BOOTSTRAP, KASSE_MONGO_URI) for the experiments' read model and exposures",
    )
    experiment_timeout_s: float = Field(0.3, gt=0, description="A page waits this long for its variant")
    default_country: str = Field("DE", pattern=r"^[A-Z]{2}$")
    page_size: int = Field(12, ge=1, le=100)

    @model_validator(mode="after")
    def _fail_closed(self) -> StorefrontSettings:
        if self.is_development:
            return self
        if self.session_secret is None or len(self.session_secret.get_secret_value()) < 32:
            raise ValueError(
                "KASSE_STOREFRONT_SESSION_SECRET must be set (32+ characters) outside the development profile"
            )
        if not self.stripe_js_url.startswith("https://"):
            raise ValueError("KASSE_STOREFRONT_STRIPE_JS_URL must be https outside the development profile")
        if self.test_payment_webhook_secret is not None or self.test_payment_internal_token is not None:
            raise ValueError(
                "KASSE_STOREFRONT_TEST_PAYMENT_* settings enable test payments: only in the development profile"
            )
        return self

    @property
    def behind_tls(self) -> bool:
        return (not self.is_development) if self.https is None else self.https

    @property
    def stripe_js_origin(self) -> str:
        """scheme://host[:port] of Stripe.js, for the payment page's Content-Security-Policy."""
        scheme, rest = self.stripe_js_url.split("://", 1)
        return f"{scheme}://{rest.split('/', 1)[0]}"

    @property
    def test_payments(self) -> bool:
        return (
            self.is_development
            and self.test_payment_webhook_secret is not None
            and self.test_payment_internal_token is not None
        )

    @property
    def effective_session_secret(self) -> str:
        if self.session_secret is not None:
            return self.session_secret.get_secret_value()
        # Development only (the validator refuses production without one): a fixed, obviously local value.
        return "kasse-storefront-development-session-secret"
