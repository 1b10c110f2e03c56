"""A consumer that stops consuming is restarted by the service, or fails liveness; SIGTERM is prompt.

The failure the issue saw after a broker restart: aiokafka's client closed itself, FastStream's consume
loop ended quietly on ConsumerStoppedError, the group went Empty and /readyz still said 200. Here the
client is closed under a running service the same way (the broker itself is killed by
services/common/bench/broker_restart.py, on a stack instance of its own).
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from pathlib import Path
from typing import Any, ClassVar

import pytest
from pydantic_settings import SettingsConfigDict

from kasse_common.messaging import EventContext
from kasse_common.runtime import ServiceRuntime
from kasse_common.settings import ServiceSettings
from kasse_contracts.events import OrderPlaced
from kasse_testkit import ServiceProcess, TestPublisher, free_port, running_app, wait_until
from kasse_testkit.infrastructure import Infrastructure
from kasse_testkit.plugin import Namespace
from kasse_testkit.samples import order_placed

pytestmark = pytest.mark.integration

SKELETON = Path(__file__).resolve().parents[4] / "tests" / "integration" / "skeleton_service.py"


class HealthSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="KASSE_HEALTH_TEST_", extra="ignore", frozen=True)
    service_name: ClassVar[str] = "health"


def service(settings: ServiceSettings) -> tuple[ServiceRuntime, Any, set[str]]:
    runtime = ServiceRuntime(settings, configure_logs=False)
    seen: set[str] = set()

    async def on_placed(event: OrderPlaced, ctx: EventContext) -> None:
        seen.add(event.order_id)

    runtime.consumer.on(OrderPlaced, on_placed)
    return runtime, runtime.create_app(title="health"), seen


async def test_a_consumer_whose_client_closed_is_restarted_and_consumes_again(
    settings_for: Any, test_publisher: TestPublisher
) -> None:
    runtime, app, seen = service(settings_for(HealthSettings, consumer_watchdog_interval_s=0.5))
    async with running_app(app) as client:
        first = order_placed()
        await test_publisher.publish(first)
        await wait_until(lambda: first.order_id in seen, timeout=60)
        (subscriber,) = runtime.broker.subscribers
        await subscriber.consumer.stop()  # as aiokafka does on a fatal error: the consume loop ends
        await wait_until(lambda: runtime.consumer_restarts >= 1, timeout=30)
        second = order_placed()
        await test_publisher.publish(second)
        await wait_until(lambda: second.order_id in seen, timeout=60)
        assert (await client.get("/healthz")).status_code == 200
        assert (await client.get("/readyz")).status_code == 200


async def test_a_consumer_that_cannot_be_restarted_fails_liveness_and_readiness(
    settings_for: Any, test_publisher: TestPublisher
) -> None:
    runtime, app, seen = service(
        settings_for(HealthSettings, consumer_watchdog_interval_s=0.3, consumer_dead_grace_s=1.0)
    )
    async with running_app(app) as client:
        first = order_placed()
        await test_publisher.publish(first)
        await wait_until(lambda: first.order_id in seen, timeout=60)
        (subscriber,) = runtime.broker.subscribers
        restart = subscriber.start

        async def broken_start() -> None:
            raise ConnectionError("broker unreachable")

        subscriber.start = broken_start  # type: ignore[method-assign]
        try:
            await subscriber.consumer.stop()

            async def dead() -> bool:
                return (await client.get("/healthz")).status_code == 503

            await wait_until(dead, timeout=30)
            ready = await client.get("/readyz")
            assert ready.status_code == 503 and ready.json()["checks"]["consumer"].startswith("stopped")
        finally:
            subscriber.start = restart  # type: ignore[method-assign]
        # Once a restart works again, the service is alive again without anyone restarting the process.
        await wait_until(lambda: runtime.stopped_consumers() == [], timeout=30)
        assert (await client.get("/healthz")).status_code == 200


async def test_a_consumer_that_lost_all_its_partitions_is_restarted_and_consumes_again(
    settings_for: Any, test_publisher: TestPublisher
) -> None:
    """Lost group membership: the client runs, holds no partition, and records wait in its topics."""
    runtime, app, seen = service(settings_for(HealthSettings, consumer_watchdog_interval_s=0.3, consumer_stall_s=2.0))
    async with running_app(app):
        first = order_placed()
        await test_publisher.publish(first)
        await wait_until(lambda: first.order_id in seen, timeout=60)
        (subscriber,) = runtime.broker.subscribers
        subscriber.consumer.unsubscribe()  # leaves the group; its consume loop goes on, fetching nothing
        assert subscriber.consumer.assignment() == set() and runtime.stopped_consumers() == []
        waiting = [order_placed() for _ in range(3)]
        for event in waiting:
            await test_publisher.publish(event)
        await wait_until(lambda: runtime.consumer_restarts >= 1, timeout=60)
        await wait_until(lambda: {e.order_id for e in waiting} <= seen, timeout=60)
        assert runtime.liveness() == {"status": "alive"}


async def test_a_slow_handler_that_keeps_working_is_not_restarted_as_a_stall(
    settings_for: Any, test_publisher: TestPublisher
) -> None:
    """A handler running longer than the stall window (a big order under load) whose store commands keep
    completing is working: the watchdog leaves it alone. (One that waits on nothing, below, is restarted.)"""
    stall_s = 5.0
    settings = settings_for(HealthSettings, consumer_watchdog_interval_s=0.3, consumer_stall_s=stall_s)
    runtime = ServiceRuntime(settings, configure_logs=False)
    started: list[str] = []
    finished: list[str] = []
    steps = runtime.db["slow_steps"]
    slow, after = order_placed(), order_placed()

    async def slow_but_working(event: OrderPlaced, ctx: EventContext) -> None:
        started.append(event.order_id)
        if event.order_id == slow.order_id:  # many small store steps, 2.5 stall windows in all
            until = time.monotonic() + 2.5 * stall_s
            while time.monotonic() < until:
                await steps.find_one({"_id": event.order_id})
                await asyncio.sleep(0.2)  # the handler's own pace between steps (not a wait of the test)
        finished.append(event.order_id)

    runtime.consumer.on(OrderPlaced, slow_but_working)
    async with running_app(runtime.create_app(title="health")) as client:
        await test_publisher.publish(slow)
        await wait_until(lambda: started == [slow.order_id], timeout=60)
        await test_publisher.publish(after)  # a record waits as well (behind it, or on another partition)
        both = sorted([slow.order_id, after.order_id])
        await wait_until(lambda: sorted(finished) == both, timeout=120, message=lambda: f"finished {finished}")
        # Not cancelled and handed over again by a restart: each record's handling started once.
        assert sorted(started) == both
        assert runtime.consumer_restarts == 0
        assert (await client.get("/healthz")).status_code == 200


async def stall_beyond_restarts(runtime: ServiceRuntime, client: Any, order_id: str, seen: set[str]) -> None:
    async def dead() -> bool:
        return (await client.get("/healthz")).status_code == 503

    await wait_until(dead, timeout=90)
    assert runtime.consumer_restarts >= 2 and order_id not in seen
    assert (await client.get("/healthz")).json()["consumer"].startswith("stalled despite restarts")
    ready = await client.get("/readyz")
    assert ready.status_code == 503 and ready.json()["checks"]["consumer"].startswith("stalled despite restarts")


async def test_a_stall_that_restarts_cannot_fix_fails_liveness_and_readiness_until_it_consumes(
    settings_for: Any, test_publisher: TestPublisher
) -> None:
    settings = settings_for(
        HealthSettings, consumer_watchdog_interval_s=0.3, consumer_stall_s=2.0, consumer_max_stall_restarts=2
    )
    runtime = ServiceRuntime(settings, configure_logs=False)
    seen: set[str] = set()
    unblocked = asyncio.Event()

    async def hangs_until_unblocked(event: OrderPlaced, ctx: EventContext) -> None:
        await unblocked.wait()  # e.g. a call that never answers; a restart delivers the record again
        seen.add(event.order_id)

    runtime.consumer.on(OrderPlaced, hangs_until_unblocked)
    async with running_app(runtime.create_app(title="health")) as client:
        stuck = order_placed()
        await test_publisher.publish(stuck)
        try:
            await stall_beyond_restarts(runtime, client, stuck.order_id, seen)
        finally:
            unblocked.set()  # the cause goes away: the watchdog's next restart consumes, and it is alive again
        await wait_until(lambda: stuck.order_id in seen, timeout=90)

        async def alive() -> bool:
            return (await client.get("/healthz")).status_code == 200

        await wait_until(alive, timeout=30)
        assert (await client.get("/readyz")).status_code == 200


async def test_sigterm_stops_a_consuming_service_well_within_its_grace_period(
    kasse_infra: Infrastructure, namespace: Namespace, tmp_path: Path, test_publisher: TestPublisher
) -> None:
    port = free_port()
    process = ServiceProcess(
        [sys.executable, str(SKELETON)],
        {
            "KASSE_SKELETON_KAFKA_BOOTSTRAP": kasse_infra.kafka_bootstrap,
            "KASSE_SKELETON_MONGO_URI": kasse_infra.mongo_uri,
            "KASSE_SKELETON_MONGO_DATABASE": namespace.database("skeleton"),
            "KASSE_SKELETON_TOPIC_PREFIX": namespace.topic_prefix,
            "KASSE_SKELETON_HTTP_PORT": str(port),
        },
        port=port,
        log_path=tmp_path / "skeleton.log",
    )
    await process.start()
    for _ in range(5):
        await test_publisher.publish(order_placed())
    assert process.process is not None
    started = time.monotonic()
    process.process.send_signal(signal.SIGTERM)
    code = await process.wait_exit(timeout=30)
    took = time.monotonic() - started
    log = (tmp_path / "skeleton.log").read_text()
    # uvicorn shuts the app down gracefully, then re-raises the signal it caught: -15 is that exit.
    assert code in (0, -signal.SIGTERM), log[-2000:]
    assert "service stopping" in log and "ignored cancellation" not in log
    assert took < 8, f"stopped after {took:.1f} s"  # the cart did not stop within 8 s
