"""Shipping settings (environment prefix KASSE_SHIPPING_)."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from kasse_common.money.refunds import ShippingRefundPolicy
from kasse_common.settings import ServiceSettings


class ShippingSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="KASSE_SHIPPING_", extra="ignore", frozen=True)

    service_name: ClassVar[str] = "shipping"

    http_port: int = 8004
    admin_token: SecretStr | None = Field(
        None, description="Bearer token of /v1/admin/…; unset: every admin call is refused"
    )
    rate_table_path: Path | None = Field(
        None, description="A rate table JSON file; unset: the table shipped with the service"
    )

    # The simulated carrier. Realistic by default; a demo sets seconds.
    carrier_dispatch_after_s: float = Field(6 * 3600, ge=0, description="Booking to pick-up scan")
    carrier_deliver_after_s: float = Field(48 * 3600, ge=0, description="Pick-up to delivery scan")
    carrier_scan_interval_s: float = Field(5.0, gt=0, description="How often due carrier scans are applied")
    carrier_tracking_url_template: str | None = "https://track.simpost.example/{tracking_number}"

    return_window_days: int = Field(30, ge=0)
    return_refund_shipping: ShippingRefundPolicy = Field(
        ShippingRefundPolicy.WHEN_ALL_RETURNED,
        description="when_all_returned: the return that brings the last unit back refunds the shipping; never",
    )
