"""Dead letters can be listed, inspected and redriven through the guarded admin API: exactly once."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest
from pydantic import SecretStr
from pydantic_settings import SettingsConfigDict
from pymongo.errors import AutoReconnect

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


async def test_a_dead_letter_of_an_outage_is_redriven_by_the_service_once_it_is_over(
    settings_for: Any, test_publisher: TestPublisher
) -> None:
    """E.g. shipping's ShipmentCancelled dead-lettered in catalog because the store was away beyond the retry
    window: the cancelled order's stock comes back once the store is, without a person. A dead letter with
    another cause (a bug, a refused event) keeps waiting for one."""
    settings = settings_for(
        RedriveSettings,
        consumer_transient_retry_s=1.0,
        consumer_transient_backoff_initial_s=0.05,
        consumer_transient_backoff_max_s=0.2,
        dead_letter_check_interval_s=0.5,
        dead_letter_auto_redrive_after_s=0.5,
    )
    runtime = ServiceRuntime(settings, configure_logs=False)
    outage = True
    applied: list[str] = []
    refused = order_placed()

    async def on_placed(event: OrderPlaced, ctx: EventContext) -> None:
        if event.order_id == refused.order_id:
            raise PermanentError("refused for good")
        if outage:
            raise AutoReconnect("store away")
        applied.append(event.order_id)

    runtime.consumer.on(OrderPlaced, on_placed)
    async with running_app(runtime.create_app(title="redrive")):
        await test_publisher.publish(refused)
        await wait_until(lambda: runtime.consumer.dead_lettered == 1, timeout=60)
        waited = order_placed()
        await test_publisher.publish(waited)
        await wait_until(lambda: runtime.consumer.dead_lettered >= 2, timeout=60)  # the retry window ran out
        outage = False  # the store is back
        await wait_until(lambda: applied == [waited.order_id], timeout=60)
        # The runtime counts a redrive once its publish returned, which can be after the handler ran: wait for it.
        await wait_until(lambda: runtime.dead_letters_auto_redriven >= 1, timeout=30)
        letters = await runtime.dead_letters.list()
        by_type = {(x["error_type"], x["redriven"]) for x in letters}
        assert ("PermanentError", False) in by_type and ("AutoReconnect", True) in by_type, letters
        assert not [x for x in letters if x["error_type"] == "AutoReconnect" and not x["redriven"]]
        await runtime.dead_letters.measure()
        assert runtime.dead_letters.waiting == 1  # only the refused one waits for a person
    assert applied == [waited.order_id]  # applied exactly once


async def test_a_record_that_keeps_failing_transiently_is_auto_redriven_a_bounded_number_of_times(
    settings_for: Any, test_publisher: TestPublisher
) -> None:
    """A write conflict that never clears looks transient: without a cap it would cycle retry window → dead
    letter → auto-redrive for ever. After `dead_letter_max_auto_redrives` the dead letter waits for a person."""
    settings = settings_for(
        RedriveSettings,
        admin_token="t0ken",
        consumer_transient_retry_s=1.0,
        consumer_transient_backoff_initial_s=0.05,
        consumer_transient_backoff_max_s=0.2,
        dead_letter_check_interval_s=0.5,
        dead_letter_auto_redrive_after_s=0.5,
        dead_letter_max_auto_redrives=2,
    )
    runtime = ServiceRuntime(settings, configure_logs=False)
    handled: list[str] = []

    async def on_placed(event: OrderPlaced, ctx: EventContext) -> None:
        handled.append(ctx.event_id)
        raise AutoReconnect("a conflict that never clears (looks like an outage)")

    runtime.consumer.on(OrderPlaced, on_placed)
    async with running_app(runtime.create_app(title="redrive")) as client:
        record = await test_publisher.publish(order_placed())

        async def letters() -> list[dict[str, Any]]:
            return await runtime.dead_letters.list()

        async def exhausted() -> list[dict[str, Any]] | None:
            found = await letters()
            # the first dead letter, then one per auto-redrive (2), each of them redriven but the last
            done = len(found) == 3 and [x["redriven"] for x in found if x["auto_redrives"] == 2] == [False]
            return found if done else None

        found = await wait_until(exhausted, timeout=120, message=lambda: "3 dead letters, the last one waiting")
        assert sorted((x["auto_redrives"], x["redriven"]) for x in found) == [(0, True), (1, True), (2, False)]
        assert {x["event_id"] for x in found} == {record.event_id}
        # Both counters move right after their publish returned: wait for them rather than assume them.
        await wait_until(lambda: runtime.dead_letters_auto_redriven >= 2 and runtime.consumer.dead_lettered >= 3)
        assert runtime.dead_letters_auto_redriven == 2
        # The loop's own call finds nothing more to redrive, however old the letter gets.
        assert await runtime.dead_letters.redrive_transient(older_than_s=0) == ()
        await runtime.dead_letters.measure()
        assert (runtime.dead_letters.waiting, runtime.dead_letters.redrives_exhausted) == (1, 1)
        metrics = (await client.get("/metrics")).text
        exhausted_line = next(x for x in metrics.splitlines() if x.startswith("kasse_dead_letters_redrives_exhausted{"))
        assert 'collection="dlq"' in exhausted_line and exhausted_line.endswith(" 1.0"), exhausted_line
        assert runtime.consumer.dead_lettered == 3 and len(set(handled)) == 1

        # A person who fixed the cause redrives it: the count starts again (and here it fails once more).
        (waiting,) = [x for x in found if not x["redriven"]]
        auth = {"Authorization": "Bearer t0ken"}
        r = await client.post(f"/v1/admin/dead-letters/{waiting['ref']}/redrive", headers=auth)
        assert r.json()["outcome"] == "redriven"

        async def dead_lettered_again() -> dict[str, Any] | None:
            return next((x for x in await letters() if x["ref"] not in {y["ref"] for y in found}), None)

        again = await wait_until(dead_lettered_again, timeout=60, message="the person's redrive dead-lettered")
        assert again["auto_redrives"] == 0
