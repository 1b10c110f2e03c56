"""The chaos run plays Kubernetes' liveness probe: a service answering /healthz 503 three times in a row is
restarted; one answering 200, or not answering (being restarted by the faults), is left alone."""

from __future__ import annotations

import asyncio
from collections import Counter

import httpx
import pytest

from kasse_testkit import wait_until
from kasse_testkit.chaos import LIVENESS_FAILURES, Report, liveness
from kasse_testkit.e2e.shop import SERVICES

pytestmark = pytest.mark.unit


class FakeProcess:
    def __init__(self, name: str, events: list[str]) -> None:
        self.name, self.events = name, events

    def kill(self) -> None:
        self.events.append(f"kill {self.name}")

    async def start(self, timeout: float) -> None:
        self.events.append(f"start {self.name}")


class FakeShop:
    def __init__(self, events: list[str]) -> None:
        self.processes = {name: FakeProcess(name, events) for name in SERVICES}

    def url(self, name: str) -> str:
        return f"http://{name}.test"


async def test_a_service_answering_dead_three_probes_in_a_row_is_restarted_and_only_it() -> None:
    events: list[str] = []
    probes: Counter[str] = Counter()

    def answer(request: httpx.Request) -> httpx.Response:
        name = request.url.host.split(".")[0]
        probes[name] += 1
        if name == "cart":
            raise httpx.ConnectError("being restarted")  # unanswered: not counted
        if name == "payment" and not events:
            return httpx.Response(503, json={"status": "dead"})
        return httpx.Response(200, json={"status": "alive"})

    report = Report()
    busy = {name: asyncio.Lock() for name in SERVICES}
    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as client:
        task = asyncio.create_task(liveness(client, FakeShop(events), report, busy, period_s=0.01))
        try:
            await wait_until(lambda: probes["payment"] >= LIVENESS_FAILURES + 3, timeout=30)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    assert events == ["kill payment", "start payment"]  # once: it answers 200 after its restart
    assert report.liveness_restarts == Counter({"payment": 1})
    assert probes["cart"] >= LIVENESS_FAILURES


async def test_a_service_the_faults_are_restarting_is_not_probed() -> None:
    events: list[str] = []
    probes: Counter[str] = Counter()

    def answer(request: httpx.Request) -> httpx.Response:
        name = request.url.host.split(".")[0]
        probes[name] += 1
        return httpx.Response(200 if name == "metrics" else 503, json={})

    busy = {name: asyncio.Lock() for name in SERVICES}
    for name, lock in busy.items():
        if name != "metrics":
            await lock.acquire()  # the faults hold every other service
    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as client:
        task = asyncio.create_task(liveness(client, FakeShop(events), Report(), busy, period_s=0.01))
        try:
            # Rounds enough to have restarted a dead service twice over, had it been probed.
            await wait_until(lambda: probes["metrics"] >= 3 * LIVENESS_FAILURES, timeout=30)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    assert set(probes) == {"metrics"} and events == []
