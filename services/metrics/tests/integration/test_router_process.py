"""The router in a process of its own (entrypoints.router_process), on the real broker and store.

The service starts it, replaces it when it dies (what it routed but had not committed is routed again
and skipped by event id, so every event is counted once), and it never outlives the service: not when
the service stops, not when the service is killed.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from kasse_contracts.base import Channel, Money
from kasse_contracts.events import ProductViewed
from kasse_metrics.entrypoints.router_process import RouterProcess
from kasse_metrics.main import create_app
from kasse_metrics.settings import MetricsSettings
from kasse_testkit import Namespace, TestPublisher, running_app, wait_until

pytestmark = pytest.mark.integration


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


async def _publish_views(publisher: TestPublisher, token: str, first: int, count: int) -> None:
    at = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1)
    for i in range(first, first + count):
        await publisher.publish(
            ProductViewed(
                occurred_at=at,
                session_id=f"{token}-s{i}",
                product_id="prod_a",
                sku="A",
                category="kitchen",
                price=Money(amount=100, currency="EUR"),
                channel=Channel.SEARCH,
            )
        )


async def _views(client: httpx.AsyncClient) -> int:
    r = await client.get("/v1/kpis/events")
    return int(r.json().get("by_type", {}).get("ProductViewed", 0)) if r.status_code == 200 else 0


async def test_a_router_process_that_dies_is_replaced_and_every_event_is_counted_once(
    settings_for: Any, namespace: Namespace, test_publisher: TestPublisher
) -> None:
    app = create_app(settings_for(MetricsSettings))
    router = app.state.router_consumer
    assert isinstance(router, RouterProcess)
    async with running_app(app) as client:
        await wait_until(lambda: router.caught_up() == "ok", timeout=60, message="router caught up")
        first = router.pid
        assert first is not None and first != os.getpid() and _alive(first)
        await _publish_views(test_publisher, namespace.token, 0, 40)
        await wait_until(lambda: _views(client), timeout=30, message="first views counted")

        os.kill(first, signal.SIGKILL)
        # Published while no router runs: the next one routes them.
        await _publish_views(test_publisher, namespace.token, 40, 40)
        await wait_until(lambda: router.starts == 2 and router.pid != first, timeout=30, message="router replaced")

        async def all_counted() -> bool:
            return await _views(client) == 80

        await wait_until(all_counted, timeout=60, message="every view counted")
        second = router.pid
        assert second is not None and _alive(second)
        assert not _alive(first)
        assert "kasse_metrics_router_process_restarts_total 1.0" in (await client.get("/metrics")).text
    # The service stopped: so did its router.
    await wait_until(lambda: not _alive(second), timeout=15, message="router process ended with the service")


_SERVICE = """
import asyncio, json, sys
from kasse_metrics.entrypoints.router_process import RouterProcess
from kasse_metrics.settings import MetricsSettings

async def main():
    router = RouterProcess(MetricsSettings(**json.loads(sys.stdin.readline())))
    running = asyncio.create_task(router.run())
    while router.pid is None and not running.done():
        await asyncio.sleep(0.02)
    print(router.pid, flush=True)
    await running

asyncio.run(main())
"""


async def test_a_router_process_ends_when_its_service_is_killed(settings_for: Any) -> None:
    settings = settings_for(MetricsSettings)
    service = subprocess.Popen(
        [sys.executable, "-c", _SERVICE], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert service.stdin is not None and service.stdout is not None
        service.stdin.write(json.dumps(settings.revealed()) + "\n")
        service.stdin.flush()
        line = await asyncio.wait_for(asyncio.to_thread(service.stdout.readline), 60)
        child = int(line)
        assert _alive(child)
        service.kill()  # kill -9: no shutdown code runs in the service
        service.wait(10)
        await wait_until(lambda: not _alive(child), timeout=15, message="router process ended with its service")
    finally:
        if service.poll() is None:
            service.kill()
