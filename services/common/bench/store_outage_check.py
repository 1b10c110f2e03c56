"""A store outage longer than a minute loses and dead-letters nothing (issue 12), on the real stack.

Its OWN FerretDB (deploy/local/stack.py, another KASSE_HOME and port 37712), killed -9 for 65 s and
started again on the same data; Kafka is the shared broker (this test kills nothing of it). A
skeleton service on the kit takes orders over HTTP (state + OrderPlaced in one write, the outbox) and
consumes OrderPlaced into a store of its own. Shown:
- during the outage the HTTP API answers 503 with Retry-After (never 500);
- events consumed during the outage are retried with their partition paused, not dead-lettered;
- after the store is back every event is applied exactly once and everything accepted before the
  outage is published exactly once; the dead-letter topic stays empty.

Takes about two minutes (the outage alone is 65 s), so it is not in `make test`:

    make bench-outage        # or: uv run pytest services/common/bench/store_outage_check.py -q
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any, ClassVar

import pytest
from fastapi import APIRouter
from pydantic_settings import SettingsConfigDict

from kasse_common.messaging import EventContext
from kasse_common.persistence import CommitOutcome
from kasse_common.runtime import ServiceRuntime
from kasse_common.settings import ServiceSettings
from kasse_contracts import topics
from kasse_contracts.events import OrderPlaced
from kasse_testkit import TestPublisher, running_app, wait_until
from kasse_testkit.chaos import Config, OwnStack
from kasse_testkit.samples import order_placed

pytestmark = pytest.mark.integration

OUTAGE_S = 65.0
PORT_BASE = int(os.environ.get("KASSE_OUTAGE_PORT_BASE", "37710"))
FERRETDB_PORT = PORT_BASE + 2


class OutageSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="KASSE_OUTAGE_TEST_", extra="ignore", frozen=True)
    service_name: ClassVar[str] = "outage"


@pytest.fixture
def own_store() -> Any:
    """A FerretDB of this test's own (the chaos driver's OwnStack: ferretdb on port base + 2),
    stopped and purged at the end."""
    stack = OwnStack(Config(own_stack=True, port_base=PORT_BASE))
    stack.start(["ferretdb"])
    try:
        yield stack
    finally:
        stack.stop()


async def test_a_store_outage_longer_than_a_minute_loses_and_dead_letters_nothing(
    own_store: Any, settings_for: Any, test_publisher: TestPublisher, topic_reader: Any
) -> None:
    stack = own_store
    settings = settings_for(
        OutageSettings,
        mongo_uri=f"mongodb://127.0.0.1:{FERRETDB_PORT}/",
        consumer_transient_backoff_initial_s=1.0,
        consumer_transient_backoff_max_s=10.0,
        consumer_transient_retry_s=900.0,
    )
    runtime = ServiceRuntime(settings, configure_logs=False)
    runtime.produces(OrderPlaced)
    orders = runtime.document_store("orders")
    seen = runtime.document_store("seen")
    applied: list[str] = []

    async def on_placed(event: OrderPlaced, ctx: EventContext) -> None:
        outcome = await seen.commit(
            event.order_id, expected_version=None, state={"total": 1}, consumed_event_id=ctx.event_id
        )
        if outcome is CommitOutcome.APPLIED:
            applied.append(event.order_id)

    runtime.consumer.on(OrderPlaced, on_placed)
    router = APIRouter()

    @router.post("/orders", status_code=201)
    async def place() -> dict[str, str]:
        event = order_placed()
        await orders.commit(
            event.order_id, expected_version=None, state={"status": "placed"}, events=[runtime.encode(event)]
        )
        return {"order_id": event.order_id}

    app = runtime.create_app(title="outage", routers=[router])
    async with (
        running_app(app) as client,
        topic_reader(topics.ORDERS) as placed_topic,
        topic_reader(topics.dead_letter_topic("outage")) as dlq,
    ):
        # Before: an order over HTTP and one event from elsewhere, both applied.
        before_http = (await client.post("/orders")).json()["order_id"]
        before_event = order_placed()
        await test_publisher.publish(before_event)
        await wait_until(lambda: {before_http, before_event.order_id} <= set(applied), timeout=120)

        await asyncio.to_thread(stack.kill, "ferretdb")
        outage_started = time.monotonic()
        during = [order_placed() for _ in range(3)]
        for event in during:
            await test_publisher.publish(event)
        answer = await client.post("/orders")
        assert answer.status_code == 503, answer.text
        assert answer.headers.get("Retry-After"), answer.headers
        assert answer.headers["content-type"].startswith("application/problem+json")
        await wait_until(lambda: runtime.consumer.transient_failures >= 2, timeout=60)
        await asyncio.sleep(max(0.0, OUTAGE_S - (time.monotonic() - outage_started)))  # the outage lasts
        assert not {e.order_id for e in during} & set(applied)
        assert runtime.consumer.dead_lettered == 0
        assert (await client.post("/orders")).status_code == 503

        await asyncio.to_thread(stack.start, ["ferretdb"])  # the same data, back
        outage_s = time.monotonic() - outage_started
        expected = {before_http, before_event.order_id, *(e.order_id for e in during)}
        await wait_until(lambda: expected <= set(applied), timeout=180)
        after_http = (await client.post("/orders")).json()["order_id"]
        await wait_until(lambda: after_http in applied, timeout=60)

        assert outage_s > 60
        assert sorted(applied) == sorted({*expected, after_http}), "each event applied exactly once"
        http_orders = [r.key.decode() for r in placed_topic.records if r.key]
        assert http_orders.count(before_http) == 1 and http_orders.count(after_http) == 1
        assert runtime.consumer.dead_lettered == 0
        assert dlq.records == []
        assert runtime.consumer.transient_failures >= 2
