"""Reviews and recommendations on the real stack: verified purchases and co-purchases learned from
events fed through Kafka, served from precomputed state through the HTTP API."""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from kasse_catalog.main import create_app
from kasse_catalog.settings import CatalogSettings
from kasse_contracts import topics
from kasse_contracts.events import ReviewSubmitted, ShipmentDelivered, StockReserved
from kasse_testkit import running_app, samples, wait_until
from kasse_testkit.identity import TestIdentityProvider

pytestmark = pytest.mark.integration

ADMIN = {"Authorization": "Bearer integration-admin"}


def product(sku: str, category: str) -> dict[str, Any]:
    return {
        "sku": sku,
        "name": f"Product {sku.title()}",
        "category": category,
        "price": {"amount": 2500, "currency": "EUR"},
        "stock_on_hand": 100,
    }


async def test_reviews_update_the_rating_and_delivered_orders_make_them_verified(
    settings_for: Any, test_publisher: Any, topic_reader: Any
) -> None:
    idp = TestIdentityProvider()
    settings = settings_for(
        CatalogSettings, admin_token="integration-admin", identity_public_key=idp.public_pem, identity_issuer=idp.issuer
    )
    async with (
        topic_reader(topics.CATALOG, topics.STOCK) as catalog_topic,
        running_app(create_app(settings)) as client,
    ):
        pid = (await client.post("/v1/admin/products", json=product("LAMP", "home"), headers=ADMIN)).json()[
            "product_id"
        ]
        placed = samples.order_placed(lines=[samples.line_item(pid, sku="LAMP")], customer_id="cust-42")
        await test_publisher.publish(placed)
        # As in the shop: the shipment (and its delivery) only exists once the stock was reserved.
        await catalog_topic.wait_for_events(StockReserved)
        await test_publisher.publish(
            ShipmentDelivered(
                occurred_at=samples.now(),
                session_id=placed.session_id,
                customer_id="cust-42",
                order_id=placed.order_id,
                shipment_id="shp_1",
                delivered_at=samples.now(),
            )
        )
        review = {"rating": 5, "title": "Lovely light", "text": "Warm and even.", "author_name": "Ola"}

        async def delivered_known() -> bool:
            mongo: AsyncMongoClient[Any] = AsyncMongoClient(settings.mongo_uri.get_secret_value())
            try:
                doc = await mongo[settings.database_name]["purchases"].find_one({"_id": placed.order_id})
                return bool(doc and doc.get("delivered") and doc.get("product_ids"))
            finally:
                await mongo.close()

        await wait_until(delivered_known, timeout=20, message="order and delivery learned from Kafka")

        async def stock_after_delivery() -> bool:
            r = await client.get(f"/v1/admin/products/{pid}", headers=ADMIN)
            return bool((r.json()["stock_on_hand"], r.json()["stock_reserved"]) == (99, 0))

        await wait_until(stock_after_delivery, timeout=20, message="delivered units left stock on hand")
        first = await client.post(f"/v1/products/{pid}/reviews", json=review, headers=idp.bearer("cust-42"))
        assert first.status_code == 201, first.text
        assert first.json()["verified_purchase"] is True
        # Issue 13: a client-chosen X-Customer-Id (or the order's session id) used to earn the badge.
        second = await client.post(
            f"/v1/products/{pid}/reviews",
            json={**review, "rating": 2, "title": "Flickers"},
            headers={"X-Customer-Id": "cust-42", "X-Session-Id": placed.session_id},
        )
        assert second.json()["verified_purchase"] is False
        forged = TestIdentityProvider().bearer("cust-42")  # signed by a key the catalog does not trust
        assert (await client.post(f"/v1/products/{pid}/reviews", json=review, headers=forged)).status_code == 401
        assert second.json()["product_rating"] == {"average": 3.5, "count": 2}

        detail = (await client.get(f"/v1/products/{pid}")).json()
        assert detail["rating"] == {"average": 3.5, "count": 2}
        listed = (await client.get(f"/v1/products/{pid}/reviews", params={"sort": "highest_rated"})).json()
        assert [r["rating"] for r in listed["items"]] == [5, 2] and listed["total"] == 2
        newest = (await client.get(f"/v1/products/{pid}/reviews", params={"page_size": 1})).json()
        assert [r["title"] for r in newest["items"]] == ["Flickers"]

        events = await catalog_topic.wait_for_events(ReviewSubmitted, count=2)
        assert [(e.rating, e.verified_purchase, e.rating_count, e.rating_average) for e in events] == [
            (5, True, 1, 5.0),
            (2, False, 2, 3.5),
        ]

        # Invalid reviews: one message per field; unknown product: 404; never a 500.
        bad = await client.post(
            f"/v1/products/{pid}/reviews", json={"rating": 6, "title": "", "text": "ok", "extra": 1}
        )
        assert bad.status_code == 422
        assert {e["field"] for e in bad.json()["errors"]} == {"rating", "title", "author_name", "extra"}
        assert (await client.post("/v1/products/prd_nope/reviews", json=review)).status_code == 404
        not_json = await client.post(
            f"/v1/products/{pid}/reviews", content=b"{oops", headers={"content-type": "application/json"}
        )
        assert not_json.status_code == 422


async def test_recommendations_reflect_co_purchases_fed_through_kafka(settings_for: Any, test_publisher: Any) -> None:
    settings = settings_for(CatalogSettings, admin_token="integration-admin")
    async with running_app(create_app(settings)) as client:
        ids = {}
        for sku, category in (
            ("PAN", "kitchen"),
            ("OIL", "kitchen"),
            ("SPATULA", "kitchen"),
            ("APRON", "kitchen"),
            ("TENT", "outdoor"),
        ):
            r = await client.post("/v1/admin/products", json=product(sku, category), headers=ADMIN)
            ids[sku] = r.json()["product_id"]

        def line(sku: str) -> Any:
            return samples.line_item(ids[sku], sku=sku)

        # Before any order: the category's popular products fill in.
        cold = (await client.get(f"/v1/products/{ids['PAN']}/recommendations", params={"limit": 3})).json()
        assert {r["reason"] for r in cold["items"]} == {"popular_in_category"}
        assert ids["TENT"] not in {r["product"]["product_id"] for r in cold["items"]}

        for _ in range(3):
            await test_publisher.publish(samples.order_placed(lines=[line("PAN"), line("OIL")]))
        duplicate = await test_publisher.publish(samples.order_placed(lines=[line("PAN"), line("SPATULA")]))
        await test_publisher.publish_record(duplicate)  # delivered twice: counted once

        async def learned() -> list[tuple[str, str, int]] | None:
            r = await client.get(
                f"/v1/products/{ids['PAN']}/recommendations", params={"kind": "bought_together", "limit": 3}
            )
            items = [(x["product"]["sku"], x["reason"], x["score"]) for x in r.json()["items"]]
            return items if items[:2] == [("OIL", "bought_together", 3), ("SPATULA", "bought_together", 1)] else None

        items = await wait_until(learned, timeout=30, message="co-purchases learned from OrderPlaced")
        assert items[2][1] == "popular_in_category" and items[2][0] == "APRON"

        async def oil_learned() -> bool:  # OIL's own document is another write than PAN's: wait for it too
            oil = (await client.get(f"/v1/products/{ids['OIL']}/recommendations", params={"limit": 1})).json()
            return bool(oil["items"]) and oil["items"][0]["product"]["sku"] == "PAN"

        await wait_until(oil_learned, timeout=30, message="OIL's co-purchase with PAN learned")

        # A session's recommendations come from its recent views (ProductViewed consumed back).
        session = {"X-Session-Id": "sess-reco"}
        assert (await client.get(f"/v1/products/{ids['OIL']}", headers=session)).status_code == 200

        async def session_recs() -> list[str] | None:
            r = await client.get("/v1/recommendations", params={"limit": 2}, headers=session)
            skus = [x["product"]["sku"] for x in r.json()["items"]]
            return skus if skus and skus[0] == "PAN" else None

        await wait_until(session_recs, timeout=20, message="session's view learned")
        assert (await client.get("/v1/products/prd_nope/recommendations")).status_code == 404


async def test_review_submission_is_rate_limited_per_client(settings_for: Any) -> None:
    settings = settings_for(
        CatalogSettings,
        admin_token="integration-admin",
        rate_limits_enabled=True,
        rate_limit_review_per_client="2/minute",
    )
    async with running_app(create_app(settings)) as client:
        pid = (await client.post("/v1/admin/products", json=product("RUG", "home"), headers=ADMIN)).json()["product_id"]
        review = {"rating": 4, "title": "Soft", "text": "Nice rug.", "author_name": "Ola"}
        for _ in range(2):
            assert (await client.post(f"/v1/products/{pid}/reviews", json=review)).status_code == 201
        limited = await client.post(f"/v1/products/{pid}/reviews", json=review)
        assert limited.status_code == 429
        assert limited.headers["content-type"] == "application/problem+json"
        assert int(limited.headers["Retry-After"]) >= 1


async def test_a_guests_review_is_verified_by_the_order_token_of_the_delivered_order(
    settings_for: Any, test_publisher: Any, topic_reader: Any
) -> None:
    """Issue 13: verified purchase by the order's own token, checked against the hash OrderPlaced carried."""
    settings = settings_for(CatalogSettings, admin_token="integration-admin")
    token = "tok-" + uuid.uuid4().hex
    async with (
        topic_reader(topics.CATALOG, topics.STOCK) as catalog_topic,
        running_app(create_app(settings)) as client,
    ):
        lamp, vase = [
            (await client.post("/v1/admin/products", json=product(sku, "home"), headers=ADMIN)).json()["product_id"]
            for sku in ("TLAMP", "TVASE")
        ]
        placed = samples.order_placed(
            lines=[samples.line_item(lamp, sku="TLAMP")],
            order_token_sha256=hashlib.sha256(token.encode()).hexdigest(),
        )
        await test_publisher.publish(placed)
        await catalog_topic.wait_for_events(StockReserved)
        review = {
            "rating": 4,
            "title": "Good lamp",
            "text": "Bright.",
            "author_name": "Ola",
            "order_id": placed.order_id,
        }

        async def learned(field: str) -> bool:
            mongo: AsyncMongoClient[Any] = AsyncMongoClient(settings.mongo_uri.get_secret_value())
            try:
                doc = await mongo[settings.database_name]["purchases"].find_one({"_id": placed.order_id})
                return bool(doc and doc.get(field))
            finally:
                await mongo.close()

        await wait_until(lambda: learned("order_token_sha256"), timeout=20, message="the order learned from Kafka")
        early = await client.post(f"/v1/products/{lamp}/reviews", json=review, headers={"X-Order-Token": token})
        assert early.status_code == 409, early.text  # placed, not delivered

        await test_publisher.publish(
            ShipmentDelivered(
                occurred_at=samples.now(),
                session_id=placed.session_id,
                order_id=placed.order_id,
                shipment_id="shp_t",
                delivered_at=samples.now(),
            )
        )
        await wait_until(lambda: learned("delivered"), timeout=20, message="the delivery learned from Kafka")

        guessed = await client.post(f"/v1/products/{lamp}/reviews", json=review, headers={"X-Order-Token": "guess"})
        assert guessed.status_code == 403, guessed.text
        assert guessed.headers["content-type"] == "application/problem+json"
        other = await client.post(f"/v1/products/{vase}/reviews", json=review, headers={"X-Order-Token": token})
        assert other.status_code == 403, other.text
        half = await client.post(f"/v1/products/{lamp}/reviews", json=review)
        assert half.status_code == 422 and half.json()["errors"][0]["field"] == "header.x-order-token"
        assert (await client.get(f"/v1/products/{lamp}/reviews")).json()["total"] == 0, "refusals store nothing"

        verified = await client.post(f"/v1/products/{lamp}/reviews", json=review, headers={"X-Order-Token": token})
        assert verified.status_code == 201, verified.text
        assert verified.json()["verified_purchase"] is True
        (event,) = await catalog_topic.wait_for_events(ReviewSubmitted)
        assert event.verified_purchase is True and event.customer_id is None
