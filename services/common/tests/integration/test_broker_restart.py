"""The broker is killed -9 under a consuming service and started again: the service consumes again by itself.

The Kafka here is a stack instance of this test's own (deploy/local/stack.py with its own KASSE_HOME and free
ports), never the shared one; the store is the shared one (this test's own database). What the issue saw
after a broker restart: a consumer that never consumed again while /readyz said 200, and a service that did
not stop within 8 s of SIGTERM. Here: every event published before, during and after the outage is applied
exactly once, the watchdog does not mistake the outage for a stall (its window runs only while the broker
answers), liveness stays alive, and the service stops within its grace period afterwards.
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
from aiokafka import AIOKafkaProducer
from pydantic_settings import SettingsConfigDict

from kasse_common.envelope import encode
from kasse_common.messaging import EventContext
from kasse_common.runtime import ServiceRuntime
from kasse_common.settings import ServiceSettings
from kasse_contracts.events import OrderPlaced
from kasse_testkit import free_port, wait_until
from kasse_testkit.chaos import load_stack, seed_home
from kasse_testkit.samples import order_placed

pytestmark = [pytest.mark.integration, pytest.mark.timeout(420)]

REPO_HOME = Path(__file__).resolve().parents[4] / ".kasse"


class ProbeSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="KASSE_BROKER_RESTART_TEST_", extra="ignore", frozen=True)
    service_name: ClassVar[str] = "probe"


class OwnKafka:
    def __init__(self) -> None:
        self.stack = load_stack()
        self.home = Path(tempfile.mkdtemp(prefix="kasse-broker-restart-"))
        seed_home(self.home, Path(os.environ.get("KASSE_REPO_HOME") or REPO_HOME))
        self.config = self.stack.Config(
            home=self.home,
            kafka_port=free_port(),
            kafka_controller_port=free_port(),
            ferretdb_port=free_port(),
            stripe_port=free_port(),
            stripe_https_port=free_port(),
            kafka_heap="512m",
            start_timeout=300.0,  # a loaded machine took 111 s to start a broker
        )
        self.bootstrap = f"127.0.0.1:{self.config.kafka_port}"

    def start(self) -> None:
        self.stack.start(["kafka"], quiet=True, config=self.config)

    def kill(self) -> None:
        pid = int((self.config.run_dir / "kafka.pid").read_text().strip())
        os.kill(pid, signal.SIGKILL)

    def stop(self) -> None:
        self.stack.stop(None, purge=True, quiet=True, config=self.config)


@pytest.fixture
def own_kafka() -> Iterator[OwnKafka]:
    kafka = OwnKafka()
    try:
        kafka.start()
        yield kafka
    finally:
        kafka.stop()


async def publish_all(bootstrap: str, settings: ServiceSettings, events: list[OrderPlaced], sent: list[str]) -> None:
    """Publish like a producer that retries until the broker takes each record (also while it is away)."""
    while True:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, request_timeout_ms=5000, enable_idempotence=True)
        try:
            await producer.start()
            break
        except Exception:
            await producer.stop()
            await asyncio.sleep(0.5)
    try:
        for event in events:
            record = encode(event, service="cart")
            headers = [(k, v.encode()) for k, v in record.headers.items()]
            while True:
                try:
                    await producer.send_and_wait(
                        settings.topic(record.topic), record.value, key=record.key.encode(), headers=headers
                    )
                    break
                except Exception:
                    await asyncio.sleep(0.5)
            sent.append(event.order_id)
    finally:
        await producer.stop()


async def test_a_consumer_consumes_again_after_the_broker_is_killed_and_restarted(
    own_kafka: OwnKafka, settings_for: Any
) -> None:
    settings = settings_for(
        ProbeSettings,
        kafka_bootstrap=own_kafka.bootstrap,
        consumer_watchdog_interval_s=1.0,
        consumer_stall_s=20.0,
    )
    runtime = ServiceRuntime(settings, configure_logs=False)
    store = runtime.document_store("orders")
    applied: Counter[str] = Counter()

    async def on_placed(event: OrderPlaced, ctx: EventContext) -> None:
        # A store write per event, as every service's handler does; a redelivery is recognised.
        outcome = await store.commit(
            event.order_id, expected_version=None, state={"seen": True}, consumed_event_id=ctx.event_id
        )
        if outcome.name == "APPLIED":
            applied[event.order_id] += 1

    runtime.consumer.on(OrderPlaced, on_placed)
    await runtime.start()
    stopped = False
    try:
        before, during, after = ([order_placed() for _ in range(n)] for n in (5, 5, 5))
        sent: list[str] = []
        await publish_all(own_kafka.bootstrap, settings, before, sent)
        await wait_until(lambda: all(applied[e.order_id] for e in before), timeout=120)

        own_kafka.kill()

        async def broker_away() -> bool:
            return (await runtime.readiness())["kafka"] != "ok"

        await wait_until(broker_away, timeout=60)
        # Records published while the broker is away wait in the producer and go out once it is back.
        publishing = asyncio.create_task(publish_all(own_kafka.bootstrap, settings, during, sent))
        killed_at = time.monotonic()
        await asyncio.to_thread(own_kafka.start)
        back_after = time.monotonic() - killed_at
        await asyncio.wait_for(publishing, 120)
        await publish_all(own_kafka.bootstrap, settings, after, sent)
        await wait_until(lambda: all(applied[e.order_id] for e in (*during, *after)), timeout=180)

        assert sorted(applied) == sorted(sent) and set(applied.values()) == {1}, applied
        assert runtime.liveness() == {"status": "alive"}
        assert runtime.stopped_consumers() == [] and runtime.stalled_beyond_restarts() == []
        print(f"broker back {back_after:.1f} s after the kill; watchdog restarts {runtime.consumer_restarts}")
        stopping = time.monotonic()
        await asyncio.wait_for(runtime.stop(), 30)
        stopped = True
        assert time.monotonic() - stopping < 15  # SIGTERM's grace period is 45 s in the chart
    finally:
        if not stopped:
            await asyncio.wait_for(runtime.stop(), 30)
