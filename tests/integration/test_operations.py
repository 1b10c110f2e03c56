"""Operators' switches every service gets from the kit: pause and resume consumption (guarded)."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest
from pydantic import SecretStr
from pydantic_settings import SettingsConfigDict

from kasse_common.messaging import EventContext
from kasse_common.runtime import ServiceRuntime
from kasse_common.settings import ServiceSettings
from kasse_contracts import topics
from kasse_contracts.events import OrderPlaced
from kasse_testkit import TestPublisher, running_app, wait_until
from kasse_testkit.samples import order_placed

pytestmark = pytest.mark.integration


class OpsSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="KASSE_OPS_TEST_", extra="ignore", frozen=True)
    service_name: ClassVar[str] = "ops"
    admin_token: SecretStr | None = None


async def test_a_paused_consumer_leaves_records_for_later_and_resumes_from_its_offsets(
    settings_for: Any, test_publisher: TestPublisher, topic_reader: Any
) -> None:
    runtime = ServiceRuntime(settings_for(OpsSettings, admin_token=SecretStr("ops-secret")), configure_logs=False)
    handled: list[str] = []

    async def on_placed(event: OrderPlaced, ctx: EventContext) -> None:
        handled.append(event.order_id)

    runtime.consumer.on(OrderPlaced, on_placed)
    admin = {"Authorization": "Bearer ops-secret"}
    async with running_app(runtime.create_app(title="ops")) as client, topic_reader(topics.ORDERS) as reader:
        assert (await client.post("/v1/admin/consumer/pause")).status_code == 401
        assert (await client.post("/v1/admin/consumer/pause", headers={"Authorization": "Bearer x"})).status_code == 403

        first = await test_publisher.publish(order_placed())
        await wait_until(lambda: first.key in handled)
        r = await client.post("/v1/admin/consumer/pause", headers=admin)
        assert r.status_code == 200 and r.json()["paused"] is True
        assert (await client.get("/v1/admin/consumer", headers=admin)).json()["paused"] is True

        second = await test_publisher.publish(order_placed())
        await reader.wait_for(lambda rec: rec.headers.get("ce_id") == second.event_id)
        assert second.key not in handled  # on the topic, and this instance is out of the group

        r = await client.post("/v1/admin/consumer/resume", headers=admin)
        assert r.json()["paused"] is False
        await wait_until(lambda: second.key in handled, timeout=30)
    assert handled == [first.key, second.key]


async def test_metrics_own_consumer_obeys_the_pause_switch(
    settings_for: Any, test_publisher: TestPublisher, topic_reader: Any
) -> None:
    from kasse_metrics.main import create_app
    from kasse_metrics.settings import MetricsSettings

    app = create_app(settings_for(MetricsSettings, admin_token=SecretStr("m-secret")))
    admin = {"Authorization": "Bearer m-secret"}
    async with running_app(app) as client, topic_reader(topics.ORDERS) as reader:

        async def events_counted() -> int:
            r = await client.get("/v1/kpis/events")
            return int(sum(r.json().get("by_type", {}).values())) if r.status_code == 200 else 0

        await test_publisher.publish(order_placed())
        await wait_until(lambda: events_counted(), timeout=30)
        before = await events_counted()
        assert (await client.post("/v1/admin/consumer/pause", headers=admin)).json()["paused"] is True
        while_paused = await test_publisher.publish(order_placed())
        await reader.wait_for(lambda rec: rec.headers.get("ce_id") == while_paused.event_id)
        assert await events_counted() == before
        assert (await client.post("/v1/admin/consumer/resume", headers=admin)).json()["paused"] is False
        await wait_until(lambda: _more(events_counted, before), timeout=30)


async def _more(counter: Any, than: int) -> bool:
    return bool(await counter() > than)
