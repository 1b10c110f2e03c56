"""The catalog's settings: environment variables prefixed `KASSE_CATALOG_`."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from kasse_common.ratelimit import Rate
from kasse_common.settings import ServiceSettings


class CatalogSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="KASSE_CATALOG_", extra="ignore", frozen=True)

    service_name: ClassVar[str] = "catalog"

    http_port: int = 8001
    rate_limit_review_per_client: Rate = Field(
        "10/minute", description="Reviews one client IP may submit (kasse_common.ratelimit; None: off; per instance)"
    )
    admin_token: SecretStr | None = Field(
        None, description="Bearer token of the admin API; when unset the admin API refuses every call"
    )
    search_candidate_limit: int = Field(
        2000, ge=10, description="Most products scored in Python for a free-text query (FerretDB has no $text)"
    )
    low_stock_threshold: int = Field(5, ge=0, description="At or below this, a product shows as low stock")
    session_recent_views: int = Field(20, ge=1, le=100, description="Recent views kept per session")
    viewed_together_window: int = Field(
        10, ge=1, le=50, description="A view counts as 'viewed together' with this many previous views of the session"
    )
    pending_review_grace_s: float = Field(
        30.0, gt=0, description="A review still pending after this long was interrupted: the sweeper finishes it"
    )
    reservation_concurrency: int = Field(
        16,
        ge=1,
        le=256,
        description="Reservations still RESERVING (stored so before 2026-12-07, or interrupted) finished at the"
        " same time, beside the consumer",
    )
    reservation_resume_after_s: float = Field(
        15.0,
        gt=0,
        description="A reservation still being taken after this long, and not by this process, was interrupted:"
        " the resume job (every this many seconds) takes it up again",
    )
