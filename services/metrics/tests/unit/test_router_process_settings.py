"""The settings a service hands its router process (`ServiceSettings.revealed`) build the same settings."""

from __future__ import annotations

import json

from kasse_metrics.settings import MetricsSettings


def test_settings_handed_to_the_router_process_are_the_services_own() -> None:
    settings = MetricsSettings(
        profile="production",
        admin_token="an-admin-token-of-this-shop",
        mongo_uri="mongodb://user:p%40ss@db.example:27017/",
        kafka_sasl_password="a-broker-password",
        funnel_steps=("viewed", "paid"),
        funnel_conversion_window_s=3600.5,
        deployment="blue",
        max_kpi_streams=None,
        ingest_max_records=1234,
    )
    again = MetricsSettings(**json.loads(json.dumps(settings.revealed())))
    assert again == settings
    assert again.secret("admin_token").get_secret_value() == "an-admin-token-of-this-shop"
    assert again.mongo_uri.get_secret_value() == "mongodb://user:p%40ss@db.example:27017/"
