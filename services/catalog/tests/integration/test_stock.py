"""Stock on the real stack: OrderPlaced from Kafka reserves with no oversell under concurrency, a
duplicate reserves once, cancellation and failed payment release, a malformed event is dead-lettered."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from kasse_catalog.main import create_app
from kasse_catalog.settings import CatalogSettings
from kasse_contracts import topics
from kasse_contracts.events import (
    CancellationReason,
    OrderCancelled,
    PaymentFailed,
    ProductChanged,
    ShipmentCancelled,
    StockRejected,
    StockReserved,
)
from kasse_testkit import running_app, samples, wait_until

pytestmark = pytest.mark.integration

ADMIN = {"Authorization": "Bearer integration-admin"}


def product(sku: str, stock: int) -> dict[str, Any]:
    return {
        "sku": sku,
        "name": f"Product {sku}",
        "category": "kitchen",
        "price": {"amount": 1999, "currency": "EUR"},
        "stock_on_hand": stock,
    }


async def test_fifty_concurrent_orders_for_the_last_ten_units_reserve_exactly_ten(
    settings_for: Any, test_publisher: Any, topic_reader: Any
) -> None:
    settings = settings_for(CatalogSettings, admin_token="integration-admin")
    # Two instances in one consumer group share the order partitions: the reservations really race.
    async with (
        topic_reader(topics.STOCK) as stock_topic,
        running_app(create_app(settings)) as client,
        running_app(create_app(settings)),
    ):
        created = await client.post("/v1/admin/products", json=product("LAST-TEN", 10), headers=ADMIN)
        assert created.status_code == 201, created.text
        p = created.json()
        orders = [
            samples.order_placed(lines=[samples.line_item(p["product_id"], sku=p["sku"], quantity=1)])
            for _ in range(50)
        ]
        started = time.monotonic()
        await asyncio.gather(*(test_publisher.publish(o) for o in orders))

        await stock_topic.wait_for(
            lambda r: r.event_type in (StockReserved.event_type, StockRejected.event_type), count=50, timeout=150
        )
        print(f"\n[catalog] 50 racing orders settled in {time.monotonic() - started:.2f}s")
        reserved = stock_topic.events(StockReserved)
        rejected = stock_topic.events(StockRejected)
        assert len(reserved) == 10 and len(rejected) == 40
        assert {e.order_id for e in reserved} | {e.order_id for e in rejected} == {o.order_id for o in orders}
        assert all(e.rejected_lines[0].requested == 1 for e in rejected)
        state = (await client.get(f"/v1/admin/products/{p['product_id']}", headers=ADMIN)).json()
        assert (state["stock_on_hand"], state["stock_reserved"], state["stock_available"]) == (10, 10, 0)
        assert state["in_stock"] is False


async def test_a_duplicate_order_placed_reserves_once_and_cancel_or_failed_payment_release(
    settings_for: Any, test_publisher: Any, topic_reader: Any
) -> None:
    settings = settings_for(CatalogSettings, admin_token="integration-admin")
    async with (
        topic_reader(topics.STOCK, topics.CATALOG) as reader,
        running_app(create_app(settings)) as client,
    ):
        created = (await client.post("/v1/admin/products", json=product("DUP", 5), headers=ADMIN)).json()
        pid = created["product_id"]

        async def available() -> int:
            r = await client.get(f"/v1/admin/products/{pid}", headers=ADMIN)
            return int(r.json()["stock_available"])

        line = samples.line_item(pid, sku="DUP", quantity=2)
        placed = samples.order_placed(lines=[line])
        record = await test_publisher.publish(placed)
        await test_publisher.publish_record(record)  # the same record twice (a producer retry)
        await test_publisher.publish(placed)  # the same order under a new event id
        # Another order reserves from the same product meanwhile.
        other = samples.order_placed(lines=[samples.line_item(pid, sku="DUP")])
        await test_publisher.publish(other)
        await reader.wait_for(lambda r: r.event_type == StockReserved.event_type and r.key == other.order_id.encode())
        await reader.wait_for(lambda r: r.event_type == StockReserved.event_type and r.key == placed.order_id.encode())
        assert await available() == 5 - 2 - 1

        # Cancellation releases once shipping stopped the parcel; a second one changes nothing.
        cancel = OrderCancelled(
            occurred_at=samples.now(),
            session_id=placed.session_id,
            order_id=placed.order_id,
            reason=CancellationReason.CUSTOMER_REQUEST,
            total=placed.total,
        )
        await test_publisher.publish(cancel)
        await test_publisher.publish(cancel)
        # The units wait for shipping's verdict (no oversell window if the parcel had left): it stopped it.
        stopped = ShipmentCancelled(
            occurred_at=samples.now(), session_id=placed.session_id, order_id=placed.order_id, reason="customer"
        )
        await test_publisher.publish(stopped)
        await test_publisher.publish(stopped)
        await wait_until(lambda: _equals(available, 4), timeout=20, message="stock released on cancel")
        # The cancellation has the order's key, so it came after both duplicates on the partition:
        # by now they were handled, and they reserved nothing more (4 = 5 - the other order's 1).
        outcomes = [e for e in reader.events(StockReserved) if e.order_id == placed.order_id]
        assert len(outcomes) == 1 and outcomes[0].lines[0].quantity == 2

        # A failed payment releases the other order's reservation.
        await test_publisher.publish(
            PaymentFailed(
                occurred_at=samples.now(),
                session_id=other.session_id,
                order_id=other.order_id,
                reason="card_declined",
                amount=other.total,
            )
        )
        await wait_until(lambda: _equals(available, 5), timeout=20, message="stock released on payment failure")

        # Every stock change went out as ProductChanged, in order: created, the takes, two releases. The two
        # orders' takes are one write (and one ProductChanged) when the second waited for the first: catalog
        # writes a product's waiting stock changes together (a CI run saw 4 records, another run 5).
        def changes() -> list[ProductChanged]:
            return [e for e in reader.events(ProductChanged) if isinstance(e, ProductChanged) and e.product_id == pid]

        await wait_until(
            lambda: len(changes()) >= 4 and changes()[-1].stock_available == 5,
            timeout=30,
            message=lambda: (
                f"ProductChanged until the last release: {[(c.revision, c.stock_available) for c in changes()]}"
            ),
        )
        seen = changes()
        assert [c.revision for c in seen] == list(range(1, len(seen) + 1)) and len(seen) in (4, 5)
        assert seen[0].stock_available == 5 and [c.stock_available for c in seen[-2:]] == [4, 5]
        assert [c.changes for c in seen[1:]] == [["stock"]] * (len(seen) - 1)


async def _equals(read: Any, expected: int) -> bool:
    return bool(await read() == expected)


async def test_a_malformed_order_event_is_dead_lettered_and_consumption_continues(
    settings_for: Any, test_publisher: Any, topic_reader: Any, namespace: Any
) -> None:
    settings = settings_for(CatalogSettings, admin_token="integration-admin")
    async with (
        topic_reader(topics.dead_letter_topic("catalog"), topics.STOCK) as reader,
        running_app(create_app(settings)) as client,
    ):
        pid = (await client.post("/v1/admin/products", json=product("DLQ", 3), headers=ADMIN)).json()["product_id"]
        good = samples.order_placed(lines=[samples.line_item(pid, sku="DLQ")])
        headers = {
            "ce_id": "poison-" + namespace.token,
            "ce_type": "io.kasse.cart.OrderPlaced.v1",
            "ce_source": "urn:test",
            "ce_time": "2026-01-01T00:00:00+00:00",
            "ce_specversion": "1.0",
            "ce_subject": good.order_id,
            "content-type": "application/json",
        }
        key = good.order_id.encode()  # same partition as the good order that follows
        await test_publisher.publish_raw(namespace.topic(topics.ORDERS), b'{"order_id": 42}', key, headers)
        await test_publisher.publish(good)
        (dead,) = await reader.wait_for(lambda r: r.headers.get("kasse_dlq_error_type") == "MalformedEvent")
        assert dead.headers["ce_id"] == headers["ce_id"]
        await reader.wait_for(lambda r: r.event_type == StockReserved.event_type and r.key == key)
