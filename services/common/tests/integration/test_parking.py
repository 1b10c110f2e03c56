"""An event about an aggregate that does not exist yet is parked, then applied when it arrives:
not retried in a loop, not dead-lettered, and the consumer carries on meanwhile."""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

import pytest
from pydantic_settings import SettingsConfigDict

from kasse_common.errors import AggregateNotYetKnown
from kasse_common.messaging import EventContext
from kasse_common.runtime import ServiceRuntime
from kasse_common.settings import ServiceSettings
from kasse_contracts import topics
from kasse_contracts.events import OrderPlaced
from kasse_testkit import TestPublisher, running_app, wait_until
from kasse_testkit.samples import order_placed

pytestmark = pytest.mark.integration


class ParkingSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="KASSE_PARKING_TEST_", extra="ignore", frozen=True)
    service_name: ClassVar[str] = "parking"


async def test_an_event_before_its_aggregate_is_parked_then_applied_once_when_it_arrives(
    settings_for: Any, test_publisher: TestPublisher, topic_reader: Any
) -> None:
    runtime = ServiceRuntime(settings_for(ParkingSettings, parking_retry_interval_s=0.5), configure_logs=False)
    known: set[str] = set()  # the aggregates this service has stored
    applied: list[str] = []

    async def on_placed(event: OrderPlaced, ctx: EventContext) -> None:
        if event.order_id not in known:
            raise AggregateNotYetKnown(f"order {event.order_id} is not known")
        applied.append(event.order_id)

    runtime.consumer.on(OrderPlaced, on_placed)
    app = runtime.create_app(title="parking")
    early, other = order_placed(), order_placed()
    known.add(other.order_id)
    async with running_app(app), topic_reader(topics.dead_letter_topic("parking")) as dlq:
        await test_publisher.publish(early)
        await wait_until(lambda: runtime.consumer.parked == 1, timeout=60)
        # The consumer carries on: a later event of another, known aggregate is applied meanwhile.
        await test_publisher.publish(other)
        await wait_until(lambda: applied == [other.order_id], timeout=60)
        assert runtime.consumer.parking is not None and await runtime.consumer.parking.count() == 1
        known.add(early.order_id)  # the aggregate arrives
        await runtime.consumer.unpark(early.order_id)
        # Applied by this call, or by the periodic round if it had the record already in hand. The parked copy
        # is removed after the handler returned and `unparked` counted after that: wait for the count.
        await wait_until(lambda: runtime.consumer.unparked >= 1, timeout=30)
        assert applied == [other.order_id, early.order_id]
        assert await runtime.consumer.parking.count() == 0
        # Nothing left to apply twice, by the periodic round either.
        await wait_until(lambda: runtime.consumer.parked_waiting == 0, timeout=30)
        assert applied.count(early.order_id) == 1
        assert dlq.records == []


async def test_creating_the_aggregate_applies_its_parked_events_at_once_not_a_round_later(
    settings_for: Any, test_publisher: TestPublisher, topic_reader: Any
) -> None:
    # The periodic round is an hour away: only the creation itself can apply the parked event.
    runtime = ServiceRuntime(settings_for(ParkingSettings, parking_retry_interval_s=3600), configure_logs=False)
    orders = runtime.document_store("orders")
    applied: list[str] = []

    async def on_placed(event: OrderPlaced, ctx: EventContext) -> None:
        if await orders.load(event.order_id) is None:
            raise AggregateNotYetKnown(f"order {event.order_id} is not known")
        applied.append(event.order_id)

    runtime.consumer.on(OrderPlaced, on_placed)
    app = runtime.create_app(title="parking")
    early = order_placed()
    async with running_app(app), topic_reader(topics.dead_letter_topic("parking")) as dlq:
        await test_publisher.publish(early)
        await wait_until(lambda: runtime.consumer.parked == 1, timeout=60)
        assert applied == []
        # The service stores the aggregate the usual way (the kit's document store): nothing else to call.
        await orders.commit(early.order_id, expected_version=None, state={"status": "placed"})
        # The handler appends, then the parked copy is removed, then `unparked` counts: wait for the last.
        await wait_until(lambda: runtime.consumer.unparked >= 1, timeout=30)
        assert applied == [early.order_id] and runtime.consumer.unparked == 1
        assert runtime.consumer.parking is not None and await runtime.consumer.parking.count() == 0
        assert dlq.records == []


async def test_callers_that_unpark_at_once_apply_a_parked_event_once(
    settings_for: Any, test_publisher: TestPublisher, topic_reader: Any
) -> None:
    # The periodic round and the calls after an aggregate was stored can run together: each reads
    # the parked record, and only one may apply it (the handler here is not idempotent on purpose).
    runtime = ServiceRuntime(settings_for(ParkingSettings, parking_retry_interval_s=3600), configure_logs=False)
    known: set[str] = set()
    applied: list[str] = []

    async def on_placed(event: OrderPlaced, ctx: EventContext) -> None:
        if event.order_id not in known:
            raise AggregateNotYetKnown(f"order {event.order_id} is not known")
        await asyncio.sleep(0)  # let the other callers reach the same record
        applied.append(event.order_id)

    runtime.consumer.on(OrderPlaced, on_placed)
    app = runtime.create_app(title="parking")
    early = order_placed()
    async with running_app(app), topic_reader(topics.dead_letter_topic("parking")) as dlq:
        await test_publisher.publish(early)
        await wait_until(lambda: runtime.consumer.parked == 1, timeout=60)
        known.add(early.order_id)
        await asyncio.gather(
            runtime.consumer.unpark(early.order_id), runtime.consumer.unpark(early.order_id), runtime.consumer.unpark()
        )
        # One of them applied it (or the consumer's own look right after parking, if still running); it counts
        # `unparked` once the parked copy is removed: wait for that, then nothing is left to apply.
        await wait_until(lambda: runtime.consumer.unparked >= 1, timeout=30)
        assert await runtime.consumer.unpark() == 0
        assert applied == [early.order_id] and runtime.consumer.unparked == 1
        assert runtime.consumer.parking is not None and await runtime.consumer.parking.count() == 0
        assert dlq.records == []
