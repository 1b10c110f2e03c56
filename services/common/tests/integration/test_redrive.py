"""Dead letters can be listed, inspected and redriven through the guarded admin API: exactly once."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest
from pydantic import SecretStr
from pydantic_settings import SettingsConfigDict

from kasse_common.messaging import EventContext, PermanentError
from kasse_common.runtime import ServiceRuntime
from kasse_common.settings import ServiceSettings
from kasse_contracts.events import OrderPlaced
from kasse_testkit import TestPublisher, running_app, wait_until
from kasse_testkit.samples import order_placed

pytestmark = pytest.mark.integration


class RedriveSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="KASSE_REDRIVE_TEST_", extra="ignore", frozen=True)
    service_name: ClassVar[str] = "redrive"
    admin_token: SecretStr | None = None


async def test_a_dead_letter_is_redriven_once_and_applied_once(
    settings_for: Any, test_publisher: TestPublisher
) -> None:
    runtime = ServiceRuntime(settings_for(RedriveSettings, admin_token="t0ken"), configure_logs=False)
    fixed = False
    applied: list[str] = []

    async def on_placed(event: OrderPlaced, ctx: EventContext) -> None:
        if not fixed:
            raise PermanentError("unknown product (until the catalogue is fixed)")
        applied.append(ctx.event_id)

    runtime.consumer.on(OrderPlaced, on_placed)
    app = runtime.create_app(title="redrive")
    auth = {"Authorization": "Bearer t0ken"}
    async with running_app(app) as client:
        event = order_placed()
        await test_publisher.publish(event)
        await wait_until(lambda: runtime.consumer.dead_lettered == 1, timeout=60)
        assert (await client.get("/v1/admin/dead-letters")).status_code == 401

        async def listed() -> list[dict[str, Any]]:
            return (await client.get("/v1/admin/dead-letters", headers=auth)).json()

        await wait_until(lambda: _one(listed), timeout=30)
        (letter,) = await listed()
        assert letter["event_type"] == OrderPlaced.event_type and letter["redriven"] is False
        assert letter["error_type"] == "PermanentError"
        shown = (await client.get(f"/v1/admin/dead-letters/{letter['ref']}", headers=auth)).json()
        assert shown["headers"]["ce_subject"] == event.order_id
        await runtime.dead_letters.measure()
        assert runtime.dead_letters.waiting == 1

        fixed = True  # the cause is fixed: redrive
        first = await client.post(f"/v1/admin/dead-letters/{letter['ref']}/redrive", headers=auth)
        again = await client.post(f"/v1/admin/dead-letters/{letter['ref']}/redrive", headers=auth)
        assert first.json()["outcome"] == "redriven" and again.json()["outcome"] == "redriven_already"
        await wait_until(lambda: len(applied) == 1, timeout=60)
        assert (await listed())[0]["redriven"] is True
        await runtime.dead_letters.measure()
        assert runtime.dead_letters.waiting == 0
        missing = await client.post("/v1/admin/dead-letters/9:999/redrive", headers=auth)
        assert missing.status_code == 404
    assert applied == [shown["event_id"]]  # re-delivered exactly once


async def _one(listed: Any) -> bool:
    return len(await listed()) == 1
