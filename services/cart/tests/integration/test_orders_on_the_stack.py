"""Checkout and the order's life on real Kafka and FerretDB, with the other services' events
published into Kafka out of order and more than once."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime
from typing import Any

import pytest
from fastapi import FastAPI, Header
from fastapi.responses import JSONResponse

from kasse_cart.domain.order import OrderStatus
from kasse_contracts import topics
from kasse_contracts.base import Money
from kasse_contracts.events import (
    CancellationReason,
    OrderCancelled,
    OrderPlaced,
    PaymentCaptured,
    PaymentFailed,
    PaymentRefunded,
    RejectedLine,
    ShipmentCreated,
    ShipmentDelivered,
    ShipmentDispatched,
    StockLine,
    StockRejected,
    StockReserved,
)
from kasse_testkit import served, wait_until

from .conftest import ADDRESS, ADMIN, checked_out_order, new_cart, product, rate_table

pytestmark = pytest.mark.integration


async def test_a_checkout_retried_with_the_same_key_creates_one_order(
    cart_service: Any, seed: Any, topic_reader: Any, cart_db: Any
) -> None:
    async with topic_reader(topics.ORDERS) as reader, cart_service() as (_, client):
        await seed(product("p1", 1999), table=rate_table())
        coupon = {"code": "ONCE", "kind": "fixed", "value": 500, "usage_limit": 1, "per_customer_limit": 1}
        assert (await client.post("/v1/admin/coupons", json=coupon, headers=ADMIN)).status_code == 201
        cart_id, token = await new_cart(client)
        await client.post(f"/v1/carts/{cart_id}/items", json={"product_id": "p1", "quantity": 2}, headers=token)
        assert (
            await client.put(f"/v1/carts/{cart_id}/coupon", json={"code": "ONCE"}, headers=token)
        ).status_code == 200
        r = await client.post(
            f"/v1/carts/{cart_id}/checkout",
            json={"email": "erika@example.com", "shipping_address": ADDRESS, "shipping_method_id": "express"},
            headers=token,
        )
        assert r.status_code == 200, r.text
        quoted = r.json()["totals"]["total"]["amount"]
        assert quoted == 3998 - 500 + 990

        place = {**token, "Idempotency-Key": "double-click-1"}
        first, second = await asyncio.gather(
            client.post(f"/v1/carts/{cart_id}/order", headers=place),
            client.post(f"/v1/carts/{cart_id}/order", headers=place),
        )
        retry = await client.post(f"/v1/carts/{cart_id}/order", headers=place)
        bodies = [first.json(), second.json(), retry.json()]
        assert sorted([first.status_code, second.status_code, retry.status_code]) == [200, 200, 201], bodies
        assert len({b["order_id"] for b in bodies}) == 1 and len({b["order_token"] for b in bodies}) == 1
        other_key = await client.post(f"/v1/carts/{cart_id}/order", headers={**token, "Idempotency-Key": "another-key"})
        assert other_key.status_code == 409

        (placed,) = await reader.wait_for_events(OrderPlaced)
        assert placed.order_id == bodies[0]["order_id"] and placed.cart_id == cart_id
        assert placed.total.amount == quoted and placed.subtotal.amount == 3998
        assert placed.coupon_codes == ["ONCE"] and placed.discount_total.amount == 500
        coupons = (await client.get("/v1/admin/coupons", headers=ADMIN)).json()
        assert [(c["code"], c["used"]) for c in coupons] == [("ONCE", 1)]  # three requests, one redemption
        other_cart, other_token = await new_cart(client, session="sess-2")
        await client.post(f"/v1/carts/{other_cart}/items", json={"product_id": "p1"}, headers=other_token)
        used_up = await client.put(f"/v1/carts/{other_cart}/coupon", json={"code": "ONCE"}, headers=other_token)
        assert used_up.status_code == 422 and "used up" in used_up.json()["detail"]
        assert placed.shipping.method_id == "express" and placed.shipping_total.amount == 990
        assert placed.lines[0].unit_price.amount == 1999 and placed.session_id == "sess-1"
        assert placed.email == "erika@example.com" and placed.shipping_address.postal_code == "10115"
        assert await cart_db["orders"].count_documents({}) == 1
        await wait_until(lambda: _drained(cart_db), message="outbox published")
        assert len(reader.events(OrderPlaced)) == 1

        view = await client.get(f"/v1/orders/{placed.order_id}", headers={"X-Order-Token": bodies[0]["order_token"]})
        assert view.status_code == 200 and view.json()["status"] == "placed"
        assert view.json()["client_secret"] is None  # payment unreachable/unconfigured: null, not an error
        wrong = await client.get(f"/v1/orders/{placed.order_id}", headers={"X-Order-Token": "guess"})
        assert wrong.status_code == 404
        # The cart is closed once ordered.
        r = await client.post(f"/v1/carts/{cart_id}/items", json={"product_id": "p1"}, headers=token)
        assert r.status_code == 409


async def _drained(db: Any) -> bool:
    return await db["orders"].count_documents({"_outbox_pending": True}) == 0


def _now() -> datetime:
    return datetime.now(UTC)


async def test_every_branch_of_the_order_life_ends_in_the_right_state_out_of_order_and_with_duplicates(
    cart_service: Any, seed: Any, topic_reader: Any, test_publisher: Any, cart_db: Any
) -> None:
    async with topic_reader(topics.ORDERS) as reader, cart_service() as (app, client):
        await seed(product("p1", 1999), table=rate_table())
        rejected = await checked_out_order(client, {"p1": 1}, key="key-rejected")
        failed = await checked_out_order(client, {"p1": 2}, key="key-failed")
        shipped = await checked_out_order(client, {"p1": 3}, key="key-shipped")
        cancelled = await checked_out_order(client, {"p1": 4}, key="key-cancelled")
        await reader.wait_for_events(OrderPlaced, count=4)

        def ids(o: dict[str, Any]) -> dict[str, Any]:
            return {"occurred_at": _now(), "session_id": "sess-1", "order_id": o["order_id"]}

        def money(o: dict[str, Any]) -> Money:
            return Money(**o["total"])

        line = StockLine(product_id="p1", sku="SKU-p1", quantity=1)
        delivered = ShipmentDelivered(**ids(shipped), shipment_id="shp-1", delivered_at=_now())
        records = [
            # stock rejected, announced twice
            StockRejected(
                **ids(rejected), rejected_lines=[RejectedLine(product_id="p1", sku="SKU-p1", requested=1, available=0)]
            ),
            # payment failed after its reservation (they may arrive either way round), failure twice
            PaymentFailed(
                **ids(failed), reason="card_declined", message="Your card was declined.", amount=money(failed)
            ),
            StockReserved(**ids(failed), lines=[line]),
            # the happy path
            delivered,
            ShipmentDispatched(
                **ids(shipped), shipment_id="shp-1", carrier="SimPost", tracking_number="TRK1", dispatched_at=_now()
            ),
            ShipmentCreated(
                **ids(shipped),
                shipment_id="shp-1",
                method_id="standard",
                carrier="SimPost",
                tracking_number="TRK1",
                tracking_url="https://track.example/TRK1",
                promised_delivery_date=date.today(),
            ),
            PaymentCaptured(**ids(shipped), payment_intent_id="pi_1", amount=money(shipped)),
            StockReserved(**ids(shipped), lines=[line]),
            # paid, then the customer cancels before shipping (below)
            PaymentCaptured(**ids(cancelled), payment_intent_id="pi_2", amount=money(cancelled)),
            StockReserved(**ids(cancelled), lines=[line]),
        ]
        consumer = app.state.runtime.consumer
        # The seed's two records are counted just after their writes: let the counter settle first.
        await wait_until(lambda: consumer.processed >= 2, message="seed records counted")
        base = consumer.processed
        # Any arrival order (seeded, printed on failure), three of the records delivered twice.
        sequence = [*records, records[0], records[1], delivered]
        seed = random.randrange(2**32)
        print(f"arrival order seed: {seed}")
        random.Random(seed).shuffle(sequence)
        sent: dict[int, Any] = {}
        for event in sequence:
            if id(event) in sent:
                await test_publisher.publish_record(sent[id(event)])  # the same record (same event id) again
            else:
                sent[id(event)] = await test_publisher.publish(event)
        await wait_until(lambda: consumer.processed >= base + len(sequence), message="all records consumed")

        async def status(o: dict[str, Any]) -> dict[str, Any]:
            r = await client.get(f"/v1/orders/{o['order_id']}", headers={"X-Order-Token": o["order_token"]})
            assert r.status_code == 200, r.text
            return r.json()

        assert (await status(rejected))["status"] == "cancelled"
        assert (await status(failed))["status"] == "cancelled"
        happy = await status(shipped)
        assert happy["status"] == "delivered"
        assert happy["tracking"]["tracking_number"] == "TRK1"
        assert happy["timeline"][0]["status"] == "placed"
        ranks = [list(OrderStatus).index(OrderStatus(t["status"])) for t in happy["timeline"]]
        assert ranks == sorted(ranks)  # it never moved backwards on the way
        assert len(happy["timeline"]) == 6  # placed + five facts; the duplicate added nothing
        assert (await status(cancelled))["status"] == "paid"

        r = await client.post(
            f"/v1/orders/{cancelled['order_id']}/cancel", headers={"X-Order-Token": cancelled["order_token"]}
        )
        assert r.status_code == 200 and r.json()["status"] == "cancelled", r.text
        again = await client.post(
            f"/v1/orders/{cancelled['order_id']}/cancel", headers={"X-Order-Token": cancelled["order_token"]}
        )
        assert again.status_code == 409
        too_late = await client.post(
            f"/v1/orders/{shipped['order_id']}/cancel", headers={"X-Order-Token": shipped["order_token"]}
        )
        assert too_late.status_code == 409 and "shipped" in too_late.json()["detail"]

        # A dispatch that arrives after the cancel cannot revive the order.
        before = consumer.processed
        await test_publisher.publish(
            ShipmentDispatched(
                **ids(cancelled), shipment_id="shp-2", carrier="SimPost", tracking_number="TRK2", dispatched_at=_now()
            )
        )
        await wait_until(lambda: consumer.processed > before)
        assert (await status(cancelled))["status"] == "cancelled"

        await reader.wait_for_events(OrderCancelled, count=3)
        await wait_until(lambda: _drained(cart_db), message="outbox published")
        cancels = reader.events(OrderCancelled)
        by_order = {c.order_id: c for c in cancels}
        assert len(cancels) == 3 and len(by_order) == 3, cancels
        assert by_order[rejected["order_id"]].reason is CancellationReason.STOCK_REJECTED
        assert by_order[rejected["order_id"]].was_paid is False
        assert by_order[failed["order_id"]].reason is CancellationReason.PAYMENT_FAILED
        assert by_order[cancelled["order_id"]].reason is CancellationReason.CUSTOMER_REQUEST
        assert by_order[cancelled["order_id"]].was_paid is True
        assert by_order[cancelled["order_id"]].total == money(cancelled)

        listed = await client.get("/v1/admin/orders", params={"status": "cancelled"}, headers=ADMIN)
        assert listed.status_code == 200
        assert {o["order_id"] for o in listed.json()} == set(by_order)
        everything = await client.get("/v1/admin/orders", params={"email": "ERIKA@example.com"}, headers=ADMIN)
        assert len(everything.json()) == 4
        part = shipped["order_id"][4:16]
        found = await client.get("/v1/admin/orders", params={"q": part}, headers=ADMIN)
        assert [o["order_id"] for o in found.json()] == [shipped["order_id"]]
        one = await client.get(f"/v1/admin/orders/{shipped['order_id']}", headers=ADMIN)
        assert one.json()["status"] == "delivered" and one.json()["cart_id"] == shipped["cart_id"]
        assert (await client.get("/v1/admin/orders", headers={"Authorization": "Bearer wrong"})).status_code == 403
        assert (await client.get("/v1/admin/orders")).status_code == 401

        # Returns: refunds move a delivered order on, partially and then fully.
        before = consumer.processed
        await test_publisher.publish(
            PaymentRefunded(
                **ids(shipped), refund_id="re_1", payment_intent_id="pi_1", amount=Money(amount=1000, currency="EUR"),
                total_refunded=Money(amount=1000, currency="EUR"), full=False,
            )
        )  # fmt: skip
        await wait_until(lambda: consumer.processed > before)
        partly = await status(shipped)
        assert partly["status"] == "partially_refunded" and partly["refunded"]["amount"] == 1000

        # Payment captured just as the customer cancelled: the cancel is announced again, as paid, once.
        late = await checked_out_order(client, {"p1": 1}, key="key-late")
        r = await client.post(f"/v1/orders/{late['order_id']}/cancel", headers={"X-Order-Token": late["order_token"]})
        assert r.status_code == 200, r.text
        before = consumer.processed
        captured = await test_publisher.publish(
            PaymentCaptured(**ids(late), payment_intent_id="pi_3", amount=money(late))
        )
        await test_publisher.publish_record(captured)
        await wait_until(lambda: consumer.processed >= before + 2)
        assert (await status(late))["status"] == "cancelled"
        await reader.wait_for(
            lambda rec: rec.key == late["order_id"].encode() and rec.event_type == OrderCancelled.event_type, count=2
        )
        await wait_until(lambda: _drained(cart_db), message="outbox published")
        announced = [c for c in reader.events(OrderCancelled) if c.order_id == late["order_id"]]
        assert [(c.reason, c.was_paid) for c in announced] == [
            (CancellationReason.CUSTOMER_REQUEST, False),
            (CancellationReason.CUSTOMER_REQUEST, True),
        ]


@asynccontextmanager
async def payment_stand_in(secret: str, token: str) -> AsyncIterator[str]:
    """The payment service's internal lookup (GET /v1/payments/{order_id}) on a real port."""
    stand_in = FastAPI()

    @stand_in.get("/v1/payments/{order_id}")
    async def lookup(order_id: str, authorization: str = Header("")) -> JSONResponse:
        if authorization != f"Bearer {token}":
            return JSONResponse({"detail": "forbidden"}, status_code=403)
        body = {"order_id": order_id, "status": "requires_action", "payment_intent_id": "pi_9", "client_secret": secret}
        return JSONResponse(body)

    async with served(stand_in, lifespan="off") as url:
        yield url


async def test_the_order_view_shows_the_client_secret_only_while_payment_needs_the_customer(
    cart_service: Any, seed: Any, test_publisher: Any
) -> None:
    async with payment_stand_in("pi_9_secret_abc", "internal-token") as payment_url:
        settings = {"payment_base_url": payment_url, "payment_internal_token": "internal-token"}
        async with cart_service(**settings) as (_, client):
            await seed(product("p1", 1999), table=rate_table())
            paying = await checked_out_order(client, {"p1": 1}, key="key-paying")
            waiting = await checked_out_order(client, {"p1": 1}, key="key-waiting")
            token = {"X-Order-Token": paying["order_token"]}
            view = (await client.get(f"/v1/orders/{paying['order_id']}", headers=token)).json()
            assert view["client_secret"] == "pi_9_secret_abc"

            ids = {"occurred_at": _now(), "session_id": "sess-1", "order_id": paying["order_id"]}
            line = StockLine(product_id="p1", sku="SKU-p1", quantity=1)
            await test_publisher.publish(StockReserved(**ids, lines=[line]))
            await test_publisher.publish(
                PaymentCaptured(**ids, payment_intent_id="pi_9", amount=Money(**paying["total"]))
            )

            async def paid() -> dict[str, Any] | None:
                body = (await client.get(f"/v1/orders/{paying['order_id']}", headers=token)).json()
                return body if body["status"] == "paid" else None

            view = await wait_until(paid, message="order paid")
            assert view["client_secret"] is None  # paid: nothing for the customer to do
    # The stand-in is gone: payment is unreachable. The view still answers at once, without a secret.
    async with cart_service(payment_base_url=payment_url, payment_timeout_s=0.5) as (_, client):
        started = asyncio.get_running_loop().time()
        r = await client.get(f"/v1/orders/{waiting['order_id']}", headers={"X-Order-Token": waiting["order_token"]})
        assert r.status_code == 200 and r.json()["status"] == "placed"
        assert r.json()["client_secret"] is None
        assert asyncio.get_running_loop().time() - started < 5
