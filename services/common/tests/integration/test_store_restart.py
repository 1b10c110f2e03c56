"""The store is killed -9 under a consuming, serving service with a full lane of handlers and started again.

The store here is a FerretDB of this test's own (deploy/local/stack.py with its own KASSE_HOME and free
ports), never the shared one; Kafka is the shared one (this test's own topics). What the issue saw: after
the store's kill -9 in a 300-order chaos run, payment's client never reached the store again (no command
for 27 minutes while a fresh client reached it at once), with more handlers in flight than before (16 per
lane). Here: 16 handlers are between a store read and their write when the store dies and write into the
outage; more records arrive during it while `/readyz` is polled (its 2 s bound cancels a ping that waits
for a server) and an HTTP read is asked for. Then: HTTP answered 503 with Retry-After, never 500; the
runtime's own client issues store commands again; every record is applied exactly once in the store;
nothing is dead-lettered; the service is alive and its consumer was never restarted as stalled.
"""

from __future__ import annotations

import asyncio
import os
import signal
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
from fastapi import APIRouter
from pydantic_settings import SettingsConfigDict

from kasse_common.errors import NotFound
from kasse_common.messaging import EventContext
from kasse_common.runtime import ServiceRuntime
from kasse_common.settings import ServiceSettings
from kasse_contracts.events import OrderPlaced
from kasse_testkit import TestPublisher, free_port, running_app, wait_until
from kasse_testkit.chaos import load_stack, seed_home
from kasse_testkit.samples import order_placed

pytestmark = [pytest.mark.integration, pytest.mark.timeout(420)]

REPO_HOME = Path(__file__).resolve().parents[4] / ".kasse"
LANE = 16  # the kit's default consumer concurrency: a full lane in flight when the store dies


class StoreRestartSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="KASSE_STORE_RESTART_TEST_", extra="ignore", frozen=True)
    service_name: ClassVar[str] = "storerestart"


class OwnStore:
    def __init__(self) -> None:
        self.stack = load_stack()
        self.home = Path(tempfile.mkdtemp(prefix="kasse-store-restart-"))
        seed_home(self.home, Path(os.environ.get("KASSE_REPO_HOME") or REPO_HOME))
        self.config = self.stack.Config(
            home=self.home,
            kafka_port=free_port(),
            kafka_controller_port=free_port(),
            ferretdb_port=free_port(),
            stripe_port=free_port(),
            stripe_https_port=free_port(),
            start_timeout=300.0,
        )
        self.uri = f"mongodb://127.0.0.1:{self.config.ferretdb_port}/"

    def start(self) -> None:
        self.stack.start(["ferretdb"], quiet=True, config=self.config)

    def kill(self) -> None:
        pid = int((self.config.run_dir / "ferretdb.pid").read_text().strip())
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)
        raise AssertionError("the killed store process did not go away")

    def stop(self) -> None:
        self.stack.stop(None, purge=True, quiet=True, config=self.config)


@pytest.fixture
def own_store() -> Iterator[OwnStore]:
    store = OwnStore()
    try:
        store.start()
        yield store
    finally:
        store.stop()


async def test_store_commands_resume_after_the_store_is_killed_under_a_full_lane(
    own_store: OwnStore, settings_for: Any, test_publisher: TestPublisher
) -> None:
    settings = settings_for(
        StoreRestartSettings,
        mongo_uri=own_store.uri,
        consumer_concurrency=LANE,
        consumer_watchdog_interval_s=1.0,
        consumer_stall_s=30.0,
    )
    runtime = ServiceRuntime(settings, configure_logs=False)
    orders = runtime.document_store("orders")
    outcomes: Counter[str] = Counter()
    held: set[str] = set()  # the records whose handlers wait at the gate (between their read and write)
    entered_held: set[str] = set()
    gate = asyncio.Event()
    gate.set()

    async def on_placed(event: OrderPlaced, ctx: EventContext) -> None:
        doc = await orders.load(event.order_id)
        if event.order_id in held:
            entered_held.add(event.order_id)
            await gate.wait()
        outcome = await orders.commit(
            event.order_id,
            expected_version=None if doc is None else doc["_version"],
            state={"customer_id": event.customer_id},
            inc={"handled": 1},  # the effect, counted by the store itself
            consumed_event_id=ctx.event_id,
        )
        outcomes[outcome.name] += 1

    runtime.consumer.on(OrderPlaced, on_placed)
    router = APIRouter()

    @router.get("/v1/probe-orders/{order_id}")
    async def get_order(order_id: str) -> dict[str, Any]:
        doc = await orders.load(order_id)
        if doc is None:
            raise NotFound(f"order {order_id} not found")
        return {"order_id": order_id, "handled": doc.get("handled", 0)}

    app = runtime.create_app(title="store restart", routers=[router])

    async def in_store(order_ids: list[str]) -> bool:
        docs = [await orders.load(order_id) for order_id in order_ids]  # the runtime's own client
        return all(doc is not None for doc in docs)

    async with running_app(app) as client:
        before = [order_placed() for _ in range(10)]
        for event in before:
            await test_publisher.publish(event)
        await wait_until(lambda: in_store([e.order_id for e in before]), timeout=120)

        # A full lane of handlers waits between its read and its write; more records of the batch wait behind.
        waiting = [order_placed() for _ in range(LANE + 8)]
        held.update(e.order_id for e in waiting)
        gate.clear()
        for event in waiting:
            await test_publisher.publish(event)
        await wait_until(lambda: len(entered_held) >= LANE, timeout=120, message=lambda: f"{len(entered_held)} in")

        await asyncio.to_thread(own_store.kill)
        killed_at = time.monotonic()
        gate.set()  # they write into the outage
        during = [order_placed() for _ in range(10)]
        for event in during:
            await test_publisher.publish(event)

        answers: list[tuple[str, int, str | None]] = []

        async def ask(path: str) -> None:
            response = await client.get(path)
            answers.append((path, response.status_code, response.headers.get("Retry-After")))

        # Readiness polled as Kubernetes does (each poll's ping is cancelled after 2 s while no server
        # answers) and a read asked for, for a while: the outage lasts at least ~8 s.
        read_path = f"/v1/probe-orders/{before[0].order_id}"
        while time.monotonic() - killed_at < 8 or not any(path == read_path for path, _, _ in answers):
            await asyncio.gather(ask("/readyz"), ask("/readyz"), ask(read_path))
        assert runtime.consumer.dead_lettered == 0

        await asyncio.to_thread(own_store.start)
        back_after = time.monotonic() - killed_at
        after = [order_placed() for _ in range(10)]
        for event in after:
            await test_publisher.publish(event)

        everything = [e.order_id for e in (*before, *waiting, *during, *after)]
        await wait_until(lambda: in_store(everything), timeout=180, message="store commands did not resume")
        read_again = await client.get(read_path)
        ready_again = await wait_until(lambda: _ready(client), timeout=60)
        # Exactly once in effect: every order written once, whatever was redelivered or retried.
        docs = [await orders.load(order_id) for order_id in everything]
        dead_lettered = runtime.consumer.dead_lettered

    assert read_again.status_code == 200 and read_again.json()["handled"] == 1
    assert ready_again
    statuses = Counter(status for _, status, _ in answers)
    assert set(statuses) == {503}, answers  # never 500 (nor a hang) while the store is away
    assert all(retry_after for path, _, retry_after in answers if path == read_path), answers  # the API's answers
    assert all(doc is not None and doc["handled"] == 1 and doc["_version"] == 1 for doc in docs), docs
    assert dead_lettered == 0
    assert runtime.stalled_beyond_restarts() == [] and runtime.stopped_consumers() == []
    print(
        f"store back {back_after:.1f} s after the kill; answers during the outage {dict(statuses)}; "
        f"commit outcomes {dict(outcomes)}; watchdog restarts {runtime.consumer_restarts}"
    )


async def _ready(client: Any) -> bool:
    response = await client.get("/readyz")
    return bool(response.status_code == 200)
