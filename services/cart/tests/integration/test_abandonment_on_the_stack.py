"""Abandonment on the real stack: exactly one CartAbandoned per idle cart, even with two replicas."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import pytest

from kasse_cart.adapters.mongo import MongoCartRepository
from kasse_cart.application.abandonment import AbandonmentJob
from kasse_common.envelope import encode
from kasse_common.persistence import DocumentStore
from kasse_contracts import topics
from kasse_contracts.events import CartAbandoned
from kasse_testkit import wait_until

from .conftest import new_cart, product

pytestmark = pytest.mark.integration


async def test_an_idle_cart_is_reported_abandoned_exactly_once_across_two_replicas(
    cart_service: Any, seed: Any, topic_reader: Any, cart_db: Any
) -> None:
    idle = 1.0
    async with (
        topic_reader(topics.CARTS) as reader,
        cart_service(abandonment_idle_s=idle, abandonment_check_interval_s=0.1) as (app, client),
    ):
        await seed(product("p1", 1999))
        idle_cart, token = await new_cart(client)
        await client.post(f"/v1/carts/{idle_cart}/items", json={"product_id": "p1"}, headers=token)
        empty_cart, _ = await new_cart(client)

        # A second replica's job: its own repository on the same collection, racing the app's job.
        replica = AbandonmentJob(
            carts=MongoCartRepository(DocumentStore(cart_db["carts"])),
            encode=partial(encode, service="cart"),
            clock=lambda: datetime.now(UTC),
            idle=timedelta(seconds=idle),
        )
        claims: list[int] = []

        async def race() -> None:
            while True:
                claims.append(await replica.run_once())
                await asyncio.sleep(0.05)  # the replica's tick, not a wait for a result

        racing = asyncio.create_task(race())
        try:
            (abandoned,) = await reader.wait_for_events(CartAbandoned, timeout=20)
            jobs = (app.state.abandonment, replica)
            seen = [job.rounds for job in jobs]
            # Both replicas keep looking for a while after the report; nobody reports it again.
            await wait_until(lambda: all(job.rounds >= n + 5 for job, n in zip(jobs, seen, strict=True)))
        finally:
            racing.cancel()
            await asyncio.gather(racing, return_exceptions=True)

        assert abandoned.cart_id == idle_cart
        assert abandoned.item_count == 1 and abandoned.subtotal.amount == 1999
        assert abandoned.session_id == "sess-1"
        await wait_until(lambda: _drained(cart_db), message="outbox published")
        assert [e.cart_id for e in reader.events(CartAbandoned)] == [idle_cart]
        doc = await cart_db["carts"].find_one({"_id": empty_cart})
        assert doc["abandoned_at"] is None
        # The cart itself is still usable.
        assert (await client.get(f"/v1/carts/{idle_cart}", headers=token)).status_code == 200


async def _drained(db: Any) -> bool:
    return await db["carts"].count_documents({"_outbox_pending": True}) == 0
