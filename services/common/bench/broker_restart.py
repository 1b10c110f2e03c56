"""A consumer survives a kill -9 of the broker: it consumes again once the broker is back.

Runs against a stack instance of its OWN (never the shared one): set KASSE_HOME and the
KASSE_STACK_*_PORT variables to a second instance (see deploy/local/README.md). The script kills
that instance's Kafka with SIGKILL, starts it again with deploy/local/stack.py, and measures how long
until the service's consumer applies an event published after the restart; it prints the
watchdog's restarts and /healthz-equivalent liveness on the way. Bounded: gives up after 180 s.

    KASSE_HOME=/tmp/kit-stack KASSE_STACK_KAFKA_PORT=19212 … uv run python services/common/bench/broker_restart.py
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import ClassVar

from aiokafka import AIOKafkaProducer
from pydantic_settings import SettingsConfigDict

from kasse_common.envelope import encode
from kasse_common.messaging import EventContext
from kasse_common.runtime import ServiceRuntime
from kasse_common.settings import ServiceSettings
from kasse_contracts.events import OrderPlaced
from kasse_testkit.samples import order_placed

REPO = Path(__file__).resolve().parents[3]
STACK = [sys.executable, str(REPO / "deploy" / "local" / "stack.py")]


class ProbeSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="KASSE_PROBE_", extra="ignore", frozen=True)
    service_name: ClassVar[str] = "probe"


async def publish(settings: ProbeSettings, n: int) -> list[str]:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    await producer.start()
    ids = []
    try:
        for _ in range(n):
            record = encode(order_placed(), service="cart")
            headers = [(k, v.encode()) for k, v in record.headers.items()]
            await producer.send_and_wait(
                settings.topic(record.topic), record.value, key=record.key.encode(), headers=headers
            )
            ids.append(record.event_id)
    finally:
        await producer.stop()
    return ids


async def wait_for(condition, timeout: float) -> float:  # type: ignore[no-untyped-def]
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise TimeoutError
        await asyncio.sleep(0.2)
    return time.monotonic() - started


async def main(home: Path) -> None:
    run = uuid.uuid4().hex[:8]
    settings = ProbeSettings(
        topic_prefix=f"probe{run}.", mongo_database=f"kasse_probe_{run}", consumer_watchdog_interval_s=2
    )
    runtime = ServiceRuntime(settings, configure_logs=False)
    seen: set[str] = set()

    async def on_placed(event: OrderPlaced, ctx: EventContext) -> None:
        seen.add(ctx.event_id)

    runtime.consumer.on(OrderPlaced, on_placed)
    await runtime.start()
    try:
        before = await publish(settings, 3)
        print(f"consumed before the kill in {await wait_for(lambda: set(before) <= seen, 60):.1f} s")
        pid = int((home / "run" / "kafka.pid").read_text())
        os.kill(pid, signal.SIGKILL)
        killed = time.monotonic()
        print(f"kill -9 broker pid {pid}")
        await asyncio.sleep(10)  # down for a while, as a crash would be
        print(f"while down: stopped consumers={runtime.stopped_consumers()} liveness={runtime.liveness()}")
        await asyncio.to_thread(subprocess.run, [*STACK, "start", "kafka"], check=True, capture_output=True)
        print(f"broker back after {time.monotonic() - killed:.1f} s")
        after = await publish(settings, 3)
        took = await wait_for(lambda: set(after) <= seen, 180)
        print(
            f"consumed again {took:.1f} s after publishing ({time.monotonic() - killed:.1f} s after the kill); "
            f"watchdog restarts={runtime.consumer_restarts} liveness={runtime.liveness()}"
        )
    finally:
        await runtime.stop()


if __name__ == "__main__":
    own = Path(os.environ.get("KASSE_HOME", "")).resolve()
    if not os.environ.get("KASSE_HOME") or own == (REPO / ".kasse").resolve():
        raise SystemExit("set KASSE_HOME to a stack instance of your own: this kills its broker")
    asyncio.run(main(own))
