"""The HTTP surface without infrastructure: the documented API and the admin guard."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from fastapi import FastAPI
from pydantic import SecretStr

from kasse_shipping.adapters.carrier import SimulatedCarrier
from kasse_shipping.domain.fulfilment import ShipmentStatus
from kasse_shipping.main import create_app
from kasse_shipping.settings import ShippingSettings

pytestmark = pytest.mark.unit


@pytest.fixture
def app() -> FastAPI:
    # create_app does no I/O; these requests never reach Mongo or Kafka.
    return create_app(ShippingSettings(admin_token="s3cret", log_json=False))  # type: ignore[arg-type]


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as c:
        yield c


async def test_openapi_documents_every_route_with_summaries_and_problem_responses(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    paths = spec["paths"]
    expected = {
        ("/v1/shipping/methods", "get"),
        ("/v1/shipping/quotes", "post"),
        ("/v1/orders/{order_id}/shipment", "get"),
        ("/v1/tracking/{tracking_number}", "get"),
        ("/v1/returns/policy", "get"),
        ("/v1/orders/{order_id}/returns", "post"),
        ("/v1/admin/returns/{return_id}/received", "post"),
    }
    assert expected <= {(p, m) for p, ops in paths.items() for m in ops}
    for path, method in expected:
        op = paths[path][method]
        assert op["summary"], path
        assert "200" in op["responses"] or "201" in op["responses"], path
    assert "422" in paths["/v1/shipping/quotes"]["post"]["responses"]
    assert {"401", "403", "404"} <= set(paths["/v1/admin/returns/{return_id}/received"]["post"]["responses"])
    assert "QuoteOut" in spec["components"]["schemas"] and "TrackingOut" in spec["components"]["schemas"]


async def test_admin_endpoint_needs_the_right_bearer_token(client: httpx.AsyncClient) -> None:
    url = "/v1/admin/returns/ret_1/received"
    missing = await client.post(url)
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
    wrong = await client.post(url, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 403 and wrong.headers["content-type"] == "application/problem+json"


async def test_without_a_configured_token_production_refuses_to_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KASSE_SHIPPING_ADMIN_TOKEN", raising=False)
    monkeypatch.delenv("KASSE_ADMIN_TOKEN", raising=False)
    monkeypatch.delenv("KASSE_PROFILE", raising=False)
    with pytest.raises(ValueError, match="not set: KASSE_SHIPPING_ADMIN_TOKEN"):
        ShippingSettings(log_json=False)
    # the development profile runs with its public dev token, never with an open admin API
    app = create_app(ShippingSettings(profile="development", log_json=False))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as c:
        r = await c.post("/v1/admin/returns/ret_1/received", headers={"Authorization": "Bearer anything"})
        assert r.status_code == 403
        r = await c.post("/v1/admin/returns/ret_1/received")
        assert r.status_code == 401


async def test_return_request_validation_is_a_422_with_fields(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/v1/orders/o1/returns",
        json={"email": "a@b.de", "lines": [{"product_id": "p", "quantity": 0}], "reason": "meh"},
    )
    assert r.status_code == 422
    fields = {e["field"] for e in r.json()["errors"]}
    assert {"lines.0.quantity", "reason"} <= fields


async def test_the_slow_carrier_switch_is_guarded_validated_and_read_back() -> None:
    app = create_app(ShippingSettings(admin_token=SecretStr("t0k"), log_json=False))
    admin = {"Authorization": "Bearer t0k"}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        slow = {"dispatch_after_s": 600.0, "deliver_after_s": 3600.0}
        assert (await client.put("/v1/admin/carrier", json=slow)).status_code == 401
        assert (
            await client.put("/v1/admin/carrier", json=slow, headers={"Authorization": "Bearer x"})
        ).status_code == 403
        assert (await client.put("/v1/admin/carrier", json=slow, headers=admin)).json() == slow
        assert (await client.get("/v1/admin/carrier", headers=admin)).json() == slow
        negative = {"dispatch_after_s": -1, "deliver_after_s": 1}
        assert (await client.put("/v1/admin/carrier", json=negative, headers=admin)).status_code == 422
        # Strict types: a boolean or a numeric string is not a number of seconds.
        for wrong in (False, "5"):
            coerced = {"dispatch_after_s": wrong, "deliver_after_s": 1}
            r = await client.put("/v1/admin/carrier", json=coerced, headers=admin)
            assert r.status_code == 422, (wrong, r.text)
        assert (await client.get("/v1/admin/carrier", headers=admin)).json() == slow  # nothing changed


def test_new_timings_apply_to_the_scans_scheduled_after_the_change() -> None:
    carrier = SimulatedCarrier(dispatch_after=timedelta(seconds=1), deliver_after=timedelta(seconds=1))
    since = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
    carrier.set_timings(dispatch_after=timedelta(minutes=10), deliver_after=timedelta(hours=1))
    assert carrier.next_scan(ShipmentStatus.CREATED, since) == since + timedelta(minutes=10)
    assert carrier.next_scan(ShipmentStatus.DISPATCHED, since) == since + timedelta(hours=1)
