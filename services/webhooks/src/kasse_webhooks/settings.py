"""Webhooks settings (environment prefix KASSE_WEBHOOKS_)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from kasse_common.settings import ServiceSettings


class WebhooksSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="KASSE_WEBHOOKS_", extra="ignore", frozen=True)

    service_name: ClassVar[str] = "webhooks"

    http_port: int = 8006
    admin_token: SecretStr | None = Field(
        None, description="Bearer token of /v1/admin/…; unset: every admin call is refused"
    )

    # The retry schedule: attempt n waits initial * base^(n-1) (at most max) after attempt n-1.
    # 11 attempts with 15 s, x3, at most 6 h span about 22.5 hours; then the endpoint is disabled.
    retry_max_attempts: int = Field(11, ge=1, description="Attempts per delivery before the endpoint is disabled")
    retry_initial_s: float = Field(15.0, gt=0, description="Wait after the first failed attempt")
    retry_base: float = Field(3.0, ge=1, description="Each further wait is this many times the previous")
    retry_max_s: float = Field(6 * 3600.0, gt=0, description="No wait is longer (also caps Retry-After)")

    # Outbound safety
    allowed_networks: list[str] = Field(
        default_factory=list,
        description="CIDRs that endpoints may resolve to although private, loopback or link-local "
        "(e.g. 127.0.0.1/32 for a local receiver); everything else must be a public address",
    )
    connect_timeout_s: float = Field(5.0, gt=0)
    request_timeout_s: float = Field(15.0, gt=0, description="Whole attempt: connect, send, wait for the answer")
    response_excerpt_bytes: int = Field(1024, ge=0, description="How much of a response body is read and kept")

    # Workers
    endpoint_concurrency: int = Field(4, ge=1, description="Deliveries in flight per endpoint (distinct keys)")
    dispatch_poll_interval_s: float = Field(1.0, gt=0, description="Safety-net poll; new deliveries wake at once")
    delivery_lease_s: float = Field(
        60.0, gt=0, description="Worker lease per endpoint: another replica takes the endpoint over after this"
    )
    secret_grace_period_s: float = Field(24 * 3600.0, ge=0, description="Old secret stays valid after a rotation")
    event_log_retention_days: float = Field(7.0, gt=0, description="Events kept for replay (as long as Kafka)")
