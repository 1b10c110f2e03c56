"""Carts over HTTP on real Kafka and FerretDB: events, totals, coupons, free shipping, repricing."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from kasse_contracts import topics
from kasse_contracts.events import CartAction, CartUpdated, CheckoutStarted
from kasse_testkit import wait_until

from .conftest import ADDRESS, ADMIN, new_cart, product, rate_table

pytestmark = pytest.mark.integration


async def test_a_cart_built_over_http_yields_its_cart_updated_events_and_totals_with_coupon_and_free_shipping(
    cart_service: Any, seed: Any, topic_reader: Any
) -> None:
    async with topic_reader(topics.CARTS) as reader, cart_service() as (_, client):
        await seed(product("p1", 1999), product("p2", 2500), table=rate_table())
        r = await client.post(
            "/v1/admin/coupons",
            json={"code": "save10", "kind": "percent", "value": 10, "min_subtotal": 3000},
            headers=ADMIN,
        )
        assert r.status_code == 201, r.text
        cart_id, token = await new_cart(client)

        r = await client.post(f"/v1/carts/{cart_id}/items", json={"product_id": "p1", "quantity": 2}, headers=token)
        assert r.json()["totals"]["subtotal"]["amount"] == 3998
        await client.post(f"/v1/carts/{cart_id}/items", json={"product_id": "p2"}, headers=token)
        r = await client.put(f"/v1/carts/{cart_id}/items/p1", json={"quantity": 1}, headers=token)
        assert r.json()["totals"]["subtotal"]["amount"] == 4499
        r = await client.put(f"/v1/carts/{cart_id}/coupon", json={"code": "SAVE10"}, headers=token)
        assert r.status_code == 200, r.text
        totals = r.json()["totals"]
        assert totals["discounts"] == [
            {
                "code": "SAVE10",
                "description": "10% off with SAVE10",
                "amount": {"amount": 449, "currency": "EUR"},
                "applies_to": "items",
            }
        ]
        assert totals["total"]["amount"] == 4050 and totals["free_shipping"] is False

        # 3 x p1 + p2 = 8497, minus 10% = 7648: over the 50.00 threshold, shipping becomes free.
        r = await client.put(f"/v1/carts/{cart_id}/items/p1", json={"quantity": 3}, headers=token)
        assert r.json()["totals"]["free_shipping"] is True
        options = await client.get(f"/v1/carts/{cart_id}/shipping-options", params={"country": "DE"}, headers=token)
        assert [(o["method_id"], o["price"]["amount"]) for o in options.json()] == [("standard", 495), ("express", 990)]
        none = await client.get(f"/v1/carts/{cart_id}/shipping-options", params={"country": "FR"}, headers=token)
        assert none.status_code == 200 and none.json() == []
        r = await client.post(
            f"/v1/carts/{cart_id}/checkout",
            json={"email": "erika@example.com", "shipping_address": ADDRESS, "shipping_method_id": "standard"},
            headers=token,
        )
        assert r.status_code == 200, r.text
        checkout = r.json()
        assert checkout["shipping"]["price"]["amount"] == 495
        assert checkout["shipping"]["promised_from"] <= checkout["shipping"]["promised_to"]
        assert [(d["code"], d["amount"]["amount"], d["applies_to"]) for d in checkout["totals"]["discounts"]] == [
            ("SAVE10", 849, "items"),
            (None, 495, "shipping"),
        ]
        assert checkout["totals"]["shipping_total"]["amount"] == 495
        assert checkout["totals"]["total"]["amount"] == 8497 - 849

        updates: list[CartUpdated] = await reader.wait_for_events(CartUpdated, count=5)
        assert [(u.action, u.quantity_delta) for u in updates] == [
            (CartAction.ADDED, 2),
            (CartAction.ADDED, 1),
            (CartAction.QUANTITY_CHANGED, -1),
            (CartAction.COUPON_APPLIED, 0),
            (CartAction.QUANTITY_CHANGED, 2),
        ]
        last = updates[-1]
        assert last.cart_id == cart_id and last.session_id == "sess-1"
        assert last.line is not None and last.line.product_id == "p1" and last.line.quantity == 3
        assert last.subtotal.amount == 8497 and last.total.amount == 7648
        assert last.coupon_codes == ["SAVE10"] and [d.amount.amount for d in last.discounts] == [849]
        (started,) = await reader.wait_for_events(CheckoutStarted)
        assert started.total.amount == 7648 and len(started.items) == 2


async def test_bad_requests_are_refused_with_reasons_and_leave_the_cart_as_it_was(
    cart_service: Any, seed: Any, topic_reader: Any
) -> None:
    async with cart_service() as (_, client):
        await seed(product("p1", 1000, stock=3), product("gone", 500, active=False), table=rate_table())
        await client.post(
            "/v1/admin/coupons",
            json={"code": "OLD", "kind": "fixed", "value": 500, "valid_until": "2020-01-01T00:00:00Z"},
            headers=ADMIN,
        )
        cart_id, token = await new_cart(client)
        ok = await client.post(f"/v1/carts/{cart_id}/items", json={"product_id": "p1", "quantity": 2}, headers=token)
        before = ok.json()

        wrong = await client.get(f"/v1/carts/{cart_id}", headers={"X-Cart-Token": "not-the-token"})
        unknown = await client.get("/v1/carts/cart_nope", headers=token)
        assert wrong.status_code == unknown.status_code == 404
        assert wrong.json()["detail"] == unknown.json()["detail"]  # which one was wrong is not revealed
        assert wrong.headers["content-type"] == "application/problem+json"

        cases = [
            (client.post(f"/v1/carts/{cart_id}/items", json={"product_id": "p1", "quantity": 0}, headers=token), 422),
            (client.post(f"/v1/carts/{cart_id}/items", json={"product_id": "p1", "quantity": "2"}, headers=token), 422),
            (client.post(f"/v1/carts/{cart_id}/items", json={"product_id": "zzz"}, headers=token), 422),
            (client.post(f"/v1/carts/{cart_id}/items", json={"product_id": "gone"}, headers=token), 422),
            (client.post(f"/v1/carts/{cart_id}/items", json={"product_id": "p1", "quantity": 2}, headers=token), 422),
            (client.put(f"/v1/carts/{cart_id}/coupon", json={"code": "NOPE"}, headers=token), 422),
            (client.put(f"/v1/carts/{cart_id}/coupon", json={"code": "OLD"}, headers=token), 422),
            (
                client.post(
                    f"/v1/carts/{cart_id}/checkout",
                    json={
                        "email": "e@example.com",
                        "shipping_address": {**ADDRESS, "postal_code": "1"},
                        "shipping_method_id": "standard",
                    },
                    headers=token,
                ),
                422,
            ),
            (
                client.post(
                    f"/v1/carts/{cart_id}/checkout",
                    json={"email": "e@example.com", "shipping_address": ADDRESS, "shipping_method_id": "teleport"},
                    headers=token,
                ),
                422,
            ),
            (client.post(f"/v1/carts/{cart_id}/order", headers={**token, "Idempotency-Key": "k-123456789"}), 409),
        ]
        details = []
        for request, expected in cases:
            r = await request
            assert r.status_code == expected, r.text
            details.append(r.json()["detail"])
        assert "unknown product" in details[2]
        assert "not available" in details[3]
        assert "only 3" in details[4]
        assert "unknown coupon code NOPE" in details[5]
        assert "expired" in details[6]
        assert "postal code" in details[7]
        assert "unknown shipping method 'teleport'" in details[8]
        assert "begin checkout" in details[9]

        after = await client.get(f"/v1/carts/{cart_id}", headers=token)
        assert after.json() == before

        # Concurrent changes to one cart: each is retried from a fresh load, none is lost.
        for pid in ("c1", "c2", "c3", "c4"):
            await seed(product(pid, 100))
        busy_id, busy_token = await new_cart(client)
        answers = await asyncio.gather(
            *(
                client.post(f"/v1/carts/{busy_id}/items", json={"product_id": pid}, headers=busy_token)
                for pid in ("c1", "c2", "c3", "c4")
            )
        )
        assert [a.status_code for a in answers] == [200] * 4
        busy = (await client.get(f"/v1/carts/{busy_id}", headers=busy_token)).json()
        assert sorted(line["product_id"] for line in busy["lines"]) == ["c1", "c2", "c3", "c4"]

        # No session sent: one is minted and returned; no body is fine too.
        minted = await client.post("/v1/carts")
        assert minted.status_code == 201
        assert minted.json()["cart"]["session_id"] == minted.headers["X-Session-Id"] != ""

        empty_id, empty_token = await new_cart(client)
        r = await client.post(
            f"/v1/carts/{empty_id}/checkout",
            json={"email": "e@example.com", "shipping_address": ADDRESS, "shipping_method_id": "standard"},
            headers=empty_token,
        )
        assert r.status_code == 422 and "empty" in r.json()["detail"]


async def test_a_product_changed_event_reprices_an_open_cart_and_flags_it(
    cart_service: Any, seed: Any, topic_reader: Any, test_publisher: Any
) -> None:
    async with topic_reader(topics.CARTS) as reader, cart_service() as (app, client):
        await seed(product("p1", 1999), table=rate_table())
        cart_id, token = await new_cart(client)
        await client.post(f"/v1/carts/{cart_id}/items", json={"product_id": "p1", "quantity": 2}, headers=token)

        raised = await test_publisher.publish(product("p1", 2499, revision=2))
        await test_publisher.publish_record(raised)  # delivered twice: one repricing

        async def repriced() -> dict[str, Any] | None:
            body = (await client.get(f"/v1/carts/{cart_id}", headers=token)).json()
            return body if body["lines"][0]["unit_price"]["amount"] == 2499 else None

        body = await wait_until(repriced, message="the cart shows the new price")
        line = body["lines"][0]
        assert line["price_changed"] is True and line["previous_unit_price"]["amount"] == 1999
        assert body["totals"]["subtotal"]["amount"] == 4998

        # A late, older revision changes nothing.
        await seed(product("p1", 999, revision=3))
        await wait_until(repriced_to(client, cart_id, token, 999), message="revision 3 applied")
        consumer = app.state.runtime.consumer
        # Five records so far (p1 r1, the rate table, r2 twice, r3); the counter moves just after the write.
        await wait_until(lambda: consumer.processed >= 5, message="earlier records counted")
        before = consumer.processed
        await test_publisher.publish(product("p1", 1500, revision=2))
        await wait_until(lambda: consumer.processed > before, message="the stale revision was consumed")
        assert await repriced_to(client, cart_id, token, 999)()

        updates = await reader.wait_for_events(CartUpdated, count=3)
        assert [u.action for u in updates] == [CartAction.ADDED, CartAction.PRICE_UPDATED, CartAction.PRICE_UPDATED]
        assert updates[1].line.unit_price.amount == 2499 and updates[1].subtotal.amount == 4998
        assert updates[2].line.unit_price.amount == 999


def repriced_to(client: Any, cart_id: str, token: dict[str, str], amount: int) -> Any:
    async def check() -> bool:
        body = (await client.get(f"/v1/carts/{cart_id}", headers=token)).json()
        return bool(body["lines"][0]["unit_price"]["amount"] == amount)

    return check


async def test_an_add_retried_with_its_idempotency_key_is_answered_once_and_adds_once(
    cart_service: Any, seed: Any
) -> None:
    async with cart_service() as (_, client):
        await seed(product("p1", 1999), product("p2", 2500), table=rate_table())
        cart_id, token = await new_cart(client)
        add = {"product_id": "p1", "quantity": 2}
        keyed = {**token, "Idempotency-Key": "add-p1-0001"}

        first = await client.post(f"/v1/carts/{cart_id}/items", json=add, headers=keyed)
        assert first.status_code == 200, first.text
        assert "Idempotent-Replayed" not in first.headers
        # Another change in between: the retry still gets the first answer, and adds nothing.
        await client.post(f"/v1/carts/{cart_id}/items", json={"product_id": "p2"}, headers=token)
        retry = await client.post(f"/v1/carts/{cart_id}/items", json=add, headers=keyed)
        assert retry.status_code == 200 and retry.headers["Idempotent-Replayed"] == "true"
        assert retry.json() == first.json()
        cart = (await client.get(f"/v1/carts/{cart_id}", headers=token)).json()
        assert {line["product_id"]: line["quantity"] for line in cart["lines"]} == {"p1": 2, "p2": 1}

        # The same key with another body: refused with a problem, nothing added.
        other = await client.post(f"/v1/carts/{cart_id}/items", json={"product_id": "p1", "quantity": 1}, headers=keyed)
        assert other.status_code == 422 and other.headers["content-type"].startswith("application/problem+json")
        assert "Idempotency-Key" in other.json()["detail"]
        # A new key adds again; without a key an add is applied each time, as before.
        again = await client.post(
            f"/v1/carts/{cart_id}/items", json=add, headers={**token, "Idempotency-Key": "add-p1-0002"}
        )
        assert again.status_code == 200 and "Idempotent-Replayed" not in again.headers
        await client.post(f"/v1/carts/{cart_id}/items", json={"product_id": "p1", "quantity": 1}, headers=token)
        cart = (await client.get(f"/v1/carts/{cart_id}", headers=token)).json()
        assert {line["product_id"]: line["quantity"] for line in cart["lines"]} == {"p1": 5, "p2": 1}
