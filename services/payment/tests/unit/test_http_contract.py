from __future__ import annotations

import pytest

from kasse_payment.main import create_app
from kasse_payment.settings import ConfirmationMode, PaymentSettings

pytestmark = pytest.mark.unit


def test_openapi_documents_the_payment_api_with_its_models_and_errors() -> None:
    schema = create_app(PaymentSettings(profile="development", internal_token="t", admin_token="a")).openapi()
    paths = schema["paths"]
    assert set(paths) >= {
        "/v1/payments/{order_id}",
        "/v1/webhooks/stripe",
        "/v1/admin/fraud-decisions",
        "/v1/admin/payments/{order_id}",
        "/v1/admin/payments/{order_id}/review",
    }
    view = paths["/v1/payments/{order_id}"]["get"]
    assert view["summary"] and set(view["responses"]) >= {"200", "401", "403", "404"}
    assert view["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/PaymentView")
    assert set(schema["components"]["schemas"]["PaymentView"]["properties"]) == {
        "order_id",
        "status",
        "payment_intent_id",
        "client_secret",
    }
    assert "400" in paths["/v1/webhooks/stripe"]["post"]["responses"]
    assert "409" in paths["/v1/admin/payments/{order_id}/review"]["post"]["responses"]
    assert schema["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"


def test_settings_come_from_the_environment_and_secrets_do_not_show(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KASSE_PAYMENT_STRIPE_API_KEY", "sk_test_from_env")
    monkeypatch.setenv("KASSE_PAYMENT_STRIPE_WEBHOOK_SECRET", "whsec_from_env")
    monkeypatch.setenv("KASSE_PAYMENT_CONFIRMATION_MODE", "server")
    monkeypatch.setenv("KASSE_PAYMENT_FRAUD_MAX_ORDERS_PER_EMAIL", "7")
    monkeypatch.setenv("KASSE_PAYMENT_INTERNAL_TOKEN", "internal-from-env")
    monkeypatch.setenv("KASSE_PAYMENT_ADMIN_TOKEN", "admin-from-env")
    settings = PaymentSettings()
    assert settings.secret("stripe_api_key").get_secret_value() == "sk_test_from_env"
    assert settings.confirmation_mode is ConfirmationMode.SERVER
    assert settings.fraud_max_orders_per_email == 7
    assert settings.http_port == 8003 and settings.service_name == "payment"
    shown = repr(settings) + str(settings.model_dump())
    assert "sk_test_from_env" not in shown and "whsec_from_env" not in shown


def test_production_refuses_to_start_without_the_operators_stripe_secrets_and_tokens(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Issue 13: the Stripe key and webhook secret had usable defaults (sk_test_123, whsec_test_secret).
    for name in ("STRIPE_API_KEY", "STRIPE_WEBHOOK_SECRET", "INTERNAL_TOKEN", "ADMIN_TOKEN"):
        monkeypatch.delenv(f"KASSE_PAYMENT_{name}", raising=False)
    monkeypatch.delenv("KASSE_PROFILE", raising=False)
    with pytest.raises(ValueError) as refused:
        PaymentSettings()
    for name in ("STRIPE_API_KEY", "STRIPE_WEBHOOK_SECRET", "INTERNAL_TOKEN", "ADMIN_TOKEN"):
        assert f"KASSE_PAYMENT_{name}" in str(refused.value)
    # the public development values are no secret either
    with pytest.raises(ValueError, match="public development value: KASSE_PAYMENT_STRIPE_WEBHOOK_SECRET"):
        PaymentSettings(
            stripe_api_key="sk_live_operator",
            stripe_webhook_secret="whsec_local_dev",
            internal_token="i-operator",
            admin_token="a-operator",
        )
    # development says so and takes the dev values
    dev = PaymentSettings(profile="development")
    assert dev.secret("stripe_webhook_secret").get_secret_value() == "whsec_local_dev"
    assert "KASSE_PAYMENT_STRIPE_API_KEY" in dev.dev_secrets_in_use()


def test_screening_history_is_written_to_a_database_of_its_own() -> None:
    # FerretDB writes one database at a time: the history's writes do not queue behind the payments'.
    app = create_app(PaymentSettings(profile="development", mongo_database="kasse_payment"))
    assert app.state.payments.repository.collection.database.name == "kasse_payment"
    assert app.state.payments.history.history.database.name == "kasse_payment_fraud_history"
    named = create_app(PaymentSettings(profile="development", fraud_history_database="kasse_payment"))
    assert named.state.payments.history.history.database.name == "kasse_payment"
