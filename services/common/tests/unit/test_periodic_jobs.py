"""A periodic job outlives a round that hangs, and a background loop that ends fails liveness."""

from __future__ import annotations

import asyncio
from typing import ClassVar

import pytest
from pydantic_settings import SettingsConfigDict

from kasse_common.runtime import ServiceRuntime, run_every
from kasse_common.settings import ServiceSettings
from kasse_testkit import wait_until

pytestmark = pytest.mark.unit


async def test_a_round_that_never_returns_is_cancelled_and_the_next_round_runs() -> None:
    rounds: list[str] = []
    second_round = asyncio.Event()

    async def job() -> None:
        rounds.append("started")
        if len(rounds) == 1:
            await asyncio.Event().wait()  # a store call that never answers
        second_round.set()

    loop = asyncio.create_task(run_every(0.01, job, name="carrier-scans", round_timeout_s=0.05))
    try:
        await asyncio.wait_for(second_round.wait(), 5)
    finally:
        loop.cancel()
    assert len(rounds) >= 2


class PeriodicSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="KASSE_PERIODIC_TEST_", extra="ignore", frozen=True)
    service_name: ClassVar[str] = "periodic"


async def test_a_background_loop_that_ended_fails_liveness() -> None:
    runtime = ServiceRuntime(PeriodicSettings(profile="development"))

    async def loop() -> None:
        await asyncio.Event().wait()

    async def ends() -> None:
        raise RuntimeError("a bug outside any round")

    alive = asyncio.create_task(loop(), name="carrier-scans")
    runtime._tasks.append(alive)
    assert runtime.liveness() == {"status": "alive"}
    dead = asyncio.create_task(ends(), name="unpaid-orders")
    runtime._tasks.append(dead)
    with pytest.raises(RuntimeError):
        await dead
    assert runtime.liveness() == {"status": "dead", "background": "ended: unpaid-orders"}
    await runtime.stop()
    assert runtime.liveness() == {"status": "alive"}  # stopped on purpose


async def test_a_cancellation_a_client_library_leaks_does_not_end_the_dead_letter_loop() -> None:
    """aiokafka's consumer.stop() can re-raise the cancellation of a task of its own: the dead-letter loop
    ended on it once after a broker restart (test_broker_restart: liveness 'ended: dead-letter-metrics')."""
    runtime = ServiceRuntime(PeriodicSettings(profile="development", dead_letter_check_interval_s=0.01))
    measured = 0

    class LeakingDeadLetters:
        async def measure(self) -> None:
            nonlocal measured
            measured += 1
            if measured == 1:
                raise asyncio.CancelledError  # not ours: nobody cancelled the loop

    async def ready() -> dict[str, str]:
        return {"mongo": "unreachable", "kafka": "unreachable"}

    runtime.dead_letters = LeakingDeadLetters()  # type: ignore[assignment]
    runtime.readiness = ready  # type: ignore[method-assign]
    loop = asyncio.create_task(runtime._measure_dead_letters(), name="dead-letter-metrics")
    try:
        await wait_until(lambda: measured >= 3 or loop.done(), timeout=30)
        assert not loop.done() and measured >= 3
    finally:
        loop.cancel()
    with pytest.raises(asyncio.CancelledError):
        await loop  # a real cancellation (stop) still ends it
