"""The admin API, bad input, the OpenAPI document and the seed, on the real stack."""

from __future__ import annotations

from typing import Any

import pytest

from kasse_catalog.main import create_app
from kasse_catalog.seed import sample_catalog, seed
from kasse_catalog.settings import CatalogSettings
from kasse_contracts import topics
from kasse_contracts.events import ProductChanged
from kasse_testkit import running_app

pytestmark = pytest.mark.integration

ADMIN = {"Authorization": "Bearer integration-admin"}
KNIFE = {
    "sku": "KIT-KNIFE",
    "name": "Chef's Knife",
    "description": "Damascus steel.",
    "category": "kitchen",
    "price": {"amount": 8900, "currency": "EUR"},
    "stock_on_hand": 4,
    "images": [{"url": "https://img.example/knife.jpg", "alt": "A chef's knife on a board"}],
    "attributes": {"blade": "20 cm"},
}


async def test_admin_api_guards_validates_and_publishes_product_changes(settings_for: Any, topic_reader: Any) -> None:
    settings = settings_for(CatalogSettings, admin_token="integration-admin", max_body_bytes=20_000)
    async with topic_reader(topics.CATALOG) as reader, running_app(create_app(settings)) as client:
        assert (await client.post("/v1/admin/products", json=KNIFE)).status_code == 401
        wrong = await client.post("/v1/admin/products", json=KNIFE, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 403 and wrong.headers["content-type"].startswith("application/problem+json")

        created = await client.post("/v1/admin/products", json=KNIFE, headers=ADMIN)
        assert created.status_code == 201, created.text
        knife = created.json()
        assert knife["slug"] == "chef-s-knife" and knife["stock_available"] == 4 and knife["low_stock"] is True
        again = await client.post("/v1/admin/products", json=KNIFE, headers=ADMIN)
        assert again.status_code == 409

        pid = knife["product_id"]
        sale = await client.patch(
            f"/v1/admin/products/{pid}",
            json={
                "price": {"amount": 6900, "currency": "EUR"},
                "compare_at_price": {"amount": 8900, "currency": "EUR"},
            },
            headers=ADMIN,
        )
        assert sale.status_code == 200 and sale.json()["compare_at_price"]["amount"] == 8900
        bad_sale = await client.patch(
            f"/v1/admin/products/{pid}", json={"compare_at_price": {"amount": 100, "currency": "EUR"}}, headers=ADMIN
        )
        assert bad_sale.status_code == 422 and "higher than price" in bad_sale.json()["detail"]
        stock = await client.post(f"/v1/admin/products/{pid}/stock", json={"delta": 6}, headers=ADMIN)
        assert stock.json()["stock_on_hand"] == 10
        both = await client.post(f"/v1/admin/products/{pid}/stock", json={"delta": 1, "on_hand": 3}, headers=ADMIN)
        assert both.status_code == 422
        negative = await client.post(f"/v1/admin/products/{pid}/stock", json={"delta": -11}, headers=ADMIN)
        assert negative.status_code == 422
        coerced = await client.patch(f"/v1/admin/products/{pid}", json={"active": 0}, headers=ADMIN)
        assert coerced.status_code == 422, coerced.text  # strict: 0 is not a yes/no answer (nothing changed)
        off = await client.post(f"/v1/admin/products/{pid}/deactivate", headers=ADMIN)
        assert off.json()["active"] is False
        assert (await client.get(f"/v1/products/{pid}")).status_code == 404  # off sale: hidden from shoppers
        assert (await client.get("/v1/products")).json()["total"] == 0

        events = [e for e in await reader.wait_for_events(ProductChanged, count=4) if e.product_id == pid]
        assert [e.changes for e in events] == [["created"], ["price"], ["stock"], ["availability"]]
        assert [e.revision for e in events] == [1, 2, 3, 4]
        assert events[1].price.amount == 6900 and events[1].compare_at_price is not None
        assert events[2].stock_available == 10 and events[3].active is False

        # Field errors name each field; unknown fields are refused; oversized bodies get 413.
        invalid = await client.post(
            "/v1/admin/products",
            json={**KNIFE, "sku": "lower case", "price": {"amount": 10.5, "currency": "eur"}, "colour": "red"},
            headers=ADMIN,
        )
        assert invalid.status_code == 422
        assert {e["field"] for e in invalid.json()["errors"]} == {
            "sku",
            "price.amount",
            "price.currency",
            "colour",
        }
        huge = {**KNIFE, "sku": "HUGE", "description": "x" * 30_000}
        assert (await client.post("/v1/admin/products", json=huge, headers=ADMIN)).status_code == 413
        assert (await client.get("/v1/admin/products/prd_missing", headers=ADMIN)).status_code == 404
        assert (await client.get("/v1/products/prd_missing")).status_code == 404


async def test_openapi_documents_the_api(settings_for: Any) -> None:
    # The document needs no running broker: the app is built, not started.
    spec = create_app(settings_for(CatalogSettings)).openapi()
    paths = spec["paths"]
    expected = {
        ("/v1/products", "get"),
        ("/v1/products/{product_ref}", "get"),
        ("/v1/products/{product_ref}/reviews", "get"),
        ("/v1/products/{product_ref}/reviews", "post"),
        ("/v1/products/{product_ref}/recommendations", "get"),
        ("/v1/recommendations", "get"),
        ("/v1/categories", "get"),
        ("/v1/admin/products", "post"),
        ("/v1/admin/products/import", "post"),
        ("/v1/admin/products/{product_id}", "get"),
        ("/v1/admin/products/{product_id}", "patch"),
        ("/v1/admin/products/{product_id}/deactivate", "post"),
        ("/v1/admin/products/{product_id}/stock", "post"),
    }
    assert expected <= {(path, method) for path, ops in paths.items() for method in ops}
    for path, method in expected:
        op = paths[path][method]
        assert op["summary"], f"{method} {path} has no summary"
        assert "200" in op["responses"] or "201" in op["responses"]
        if path != "/v1/categories":  # the one operation that takes no input
            assert "422" in op["responses"] or (method == "get" and "404" in op["responses"])
    assert "401" in paths["/v1/admin/products"]["post"]["responses"]
    assert "403" in paths["/v1/admin/products"]["post"]["responses"]
    assert any("HTTPBearer" in s for s in spec["components"]["securitySchemes"])
    assert "404" in paths["/v1/products/{product_ref}"]["get"]["responses"]
    assert "X-Session-Id" in paths["/v1/products"]["get"]["responses"]["200"]["headers"]
    assert "X-Session-Id" in paths["/v1/products/{product_ref}/reviews"]["post"]["responses"]["201"]["headers"]


async def test_the_seed_is_idempotent_and_its_events_go_out_when_the_service_runs(
    settings_for: Any, topic_reader: Any
) -> None:
    settings = settings_for(CatalogSettings)
    data = sample_catalog()
    assert len(data["products"]) >= 60
    assert len({p["category"] for p in data["products"]}) >= 5
    first = await seed(settings)  # the service is not running
    assert len(first.created) == len(data["products"])
    again = await seed(settings)
    assert len(again.unchanged) == len(data["products"]) and not again.created and not again.updated

    async with topic_reader(topics.CATALOG) as reader, running_app(create_app(settings)) as client:
        published = await reader.wait_for_events(ProductChanged, count=len(data["products"]), timeout=60)
        assert {e.sku for e in published} == {p["sku"] for p in data["products"]}
        audio = (await client.get("/v1/products", params={"category": "audio", "page_size": 100})).json()
        assert audio["total"] == sum(p["category"] == "audio" for p in data["products"])
        # Seeding while the service runs works as well (here: nothing to change).
        third = await seed(settings)
        assert len(third.unchanged) == len(data["products"])
