"""The small chaos run inside make test: orders through the HTTP APIs while each service is killed -9.

`make chaos` runs the big one on its own stack and also kills Kafka and the store; this one uses the
shared stack (its own topics and databases, its own service processes) and kills only the services it
started. Every order must end terminal, nothing lost or duplicated, stock conserved, no dead letters.
"""

from __future__ import annotations

import pytest

from kasse_testkit.chaos import Config, run
from kasse_testkit.infrastructure import Infrastructure

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]


async def test_a_dozen_orders_all_finish_while_every_service_is_killed_in_turn(kasse_infra: Infrastructure) -> None:
    cfg = Config(
        orders=12,
        concurrency=6,
        products=2,
        stock_per_product=100,
        unpaid_timeout_s=30,
        infra_kills=False,
        terminal_timeout_s=240,
        fault_pause_s=3,
    )
    report = await run(cfg, kasse_infra)
    print(report.text())
    assert report.accepted == cfg.orders and report.refused == 0
    assert report.lost == [] and report.stuck == {}
    assert {k: v for k, v in report.duplicated.items() if v} == {}
    assert report.stock_mismatches == {}
    assert sum(report.dead_letters.values()) == 0, report.dead_letters
    assert set(report.back_to_ready_s) == {"payment", "shipping", "cart", "catalog", "metrics"}
    assert report.ok
