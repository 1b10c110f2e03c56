"""The consumer's contract, on FastStream's in-memory broker: dispatch by type, retries, dead letters."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest
from faststream.kafka import TestKafkaBroker
from faststream.kafka.annotations import KafkaMessage
from pydantic_settings import SettingsConfigDict

from kasse_common.envelope import encode
from kasse_common.messaging import EventConsumer, EventContext, EventPublisher, PermanentError, create_broker
from kasse_common.settings import ServiceSettings
from kasse_contracts.events import OrderCancelled, OrderPlaced
from kasse_contracts.topics import ORDERS
from kasse_testkit.samples import eur, order_placed

pytestmark = pytest.mark.unit


class UnitSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="KASSE_UNIT_", extra="ignore", frozen=True)
    service_name: ClassVar[str] = "unit"


def build(max_attempts: int = 3) -> tuple[Any, EventConsumer, list[Any]]:
    settings = UnitSettings(
        profile="development", consumer_max_attempts=max_attempts, consumer_backoff_initial_s=0, topic_prefix="u."
    )
    broker = create_broker(settings)
    consumer = EventConsumer(broker, settings, EventPublisher(broker, settings))
    dead: list[Any] = []

    async def raw(message: Any) -> Any:
        return message.body

    @broker.subscriber(consumer.dead_letter_topic, group_id="dlq-watch", decoder=raw)
    async def capture(message: KafkaMessage) -> None:
        dead.append(message.raw_message)

    return broker, consumer, dead


async def test_dispatches_by_cloudevents_type_with_the_context() -> None:
    broker, consumer, dead = build()
    seen: list[tuple[OrderPlaced, EventContext]] = []

    async def on_placed(event: OrderPlaced, ctx: EventContext) -> None:
        seen.append((event, ctx))

    consumer.on(OrderPlaced, on_placed)
    event = order_placed()
    record = encode(event, service="cart", event_id="e-1")
    consumer.attach()
    async with TestKafkaBroker(broker) as br:
        await br.publish(record.value, topic="u." + ORDERS, key=record.key.encode(), headers=record.headers)
        # An event type this consumer has no handler for on the same topic is skipped, not dead-lettered.
        cancelled = OrderCancelled(
            occurred_at=event.occurred_at,
            session_id="s",
            order_id=event.order_id,
            reason="customer_request",
            total=eur(100),
        )
        other = encode(cancelled, service="cart")
        await br.publish(other.value, topic="u." + ORDERS, key=other.key.encode(), headers=other.headers)
    assert [(e, c.event_id, c.source, c.subject) for e, c in seen] == [
        (event, "e-1", "urn:kasse:service:cart", event.order_id)
    ]
    assert dead == []
    assert consumer.processed == 1


async def test_a_failing_handler_is_retried_then_dead_lettered_with_the_original_record() -> None:
    broker, consumer, dead = build(max_attempts=3)
    attempts = 0

    async def always_fails(event: OrderPlaced, ctx: EventContext) -> None:
        nonlocal attempts
        attempts += 1
        raise RuntimeError("database down")

    consumer.on(OrderPlaced, always_fails)
    record = encode(order_placed(), service="cart", event_id="e-2")
    consumer.attach()
    async with TestKafkaBroker(broker) as br:
        await br.publish(record.value, topic="u." + ORDERS, key=record.key.encode(), headers=record.headers)
    assert attempts == 3
    (raw,) = dead
    headers = {k: v.decode() for k, v in raw.headers}
    assert raw.value == record.value
    assert headers["ce_id"] == "e-2"
    assert headers["kasse_dlq_error_type"] == "RuntimeError"
    assert headers["kasse_dlq_error"] == "database down"
    assert headers["kasse_dlq_attempts"] == "3"
    assert headers["kasse_dlq_consumer_group"] == "u.kasse-unit"


async def test_a_handler_that_recovers_is_not_dead_lettered() -> None:
    broker, consumer, dead = build(max_attempts=3)
    calls = 0

    async def flaky(event: OrderPlaced, ctx: EventContext) -> None:
        nonlocal calls
        calls += 1
        if calls < 2:
            raise ConnectionError("blip")

    consumer.on(OrderPlaced, flaky)
    record = encode(order_placed(), service="cart")
    consumer.attach()
    async with TestKafkaBroker(broker) as br:
        await br.publish(record.value, topic="u." + ORDERS, key=record.key.encode(), headers=record.headers)
    assert calls == 2 and dead == [] and consumer.processed == 1


@pytest.mark.parametrize(
    ("value", "drop_header", "reason"),
    [
        (b"{not json", None, "invalid payload"),
        (b'{"order_id": "x"}', None, "invalid payload"),
        (None, "ce_id", "missing CloudEvents header(s): ce_id"),
    ],
)
async def test_malformed_records_go_straight_to_the_dead_letter_topic(
    value: bytes | None, drop_header: str | None, reason: str
) -> None:
    broker, consumer, dead = build(max_attempts=5)
    handled: list[Any] = []

    async def handler(event: OrderPlaced, ctx: EventContext) -> None:
        handled.append(event)

    consumer.on(OrderPlaced, handler)
    record = encode(order_placed(), service="cart")
    headers = {k: v for k, v in record.headers.items() if k != drop_header}
    consumer.attach()
    async with TestKafkaBroker(broker) as br:
        await br.publish(value if value is not None else record.value, topic="u." + ORDERS, headers=headers)
    assert handled == []
    (raw,) = dead
    dlq = {k: v.decode() for k, v in raw.headers}
    assert dlq["kasse_dlq_error_type"] == "MalformedEvent"
    assert reason in dlq["kasse_dlq_error"]
    assert dlq["kasse_dlq_attempts"] == "0"


async def test_permanent_errors_skip_the_retries() -> None:
    broker, consumer, dead = build(max_attempts=5)
    calls = 0

    async def refuses(event: OrderPlaced, ctx: EventContext) -> None:
        nonlocal calls
        calls += 1
        raise PermanentError("order references an unknown product")

    consumer.on(OrderPlaced, refuses)
    record = encode(order_placed(), service="cart")
    consumer.attach()
    async with TestKafkaBroker(broker) as br:
        await br.publish(record.value, topic="u." + ORDERS, headers=record.headers)
    assert calls == 1
    assert len(dead) == 1


async def test_a_lane_gets_its_own_subscriber_and_both_lanes_dispatch() -> None:
    from kasse_contracts.events import ProductViewed

    broker, consumer, dead = build()
    seen: list[str] = []

    async def on_placed(event: OrderPlaced, ctx: EventContext) -> None:
        seen.append("placed")

    async def on_viewed(event: ProductViewed, ctx: EventContext) -> None:
        seen.append("viewed")

    consumer.on(OrderPlaced, on_placed)
    consumer.on(ProductViewed, on_viewed, lane="storefront")
    with pytest.raises(ValueError, match="lane"):
        consumer.on(OrderCancelled, on_placed, lane="other")  # same topic as OrderPlaced, another lane
    consumer.attach()
    assert len(broker.subscribers) == 3  # two lanes + the test's dead-letter watcher
    viewed = ProductViewed(
        occurred_at=order_placed().occurred_at,
        session_id="s",
        product_id="p",
        sku="P",
        category="c",
        price=eur(100),
        channel="search",
    )
    async with TestKafkaBroker(broker) as br:
        for record in (encode(order_placed(), service="cart"), encode(viewed, service="catalog")):
            await br.publish(record.value, topic="u." + record.topic, headers=record.headers)
    assert sorted(seen) == ["placed", "viewed"] and dead == []


async def test_an_unknown_enum_value_is_consumed_not_dead_lettered() -> None:
    """Rolling deploy: a newer producer sends a reason this reader's contracts do not know yet.
    The open enum keeps the value; the handler runs and sees it; nothing goes to the dead letters."""
    broker, consumer, dead = build()
    seen: list[OrderCancelled] = []

    async def on_cancelled(event: OrderCancelled, ctx: EventContext) -> None:
        seen.append(event)

    consumer.on(OrderCancelled, on_cancelled)
    cancelled = OrderCancelled(
        occurred_at=order_placed().occurred_at,
        session_id="s",
        order_id="ord-1",
        reason="customer_request",
        total=eur(1),
    )
    record = encode(cancelled, service="cart")
    newer_value = record.value.replace(b'"customer_request"', b'"gift_card_expired"')
    assert newer_value != record.value
    consumer.attach()
    async with TestKafkaBroker(broker) as br:
        await br.publish(newer_value, topic="u." + ORDERS, key=record.key.encode(), headers=record.headers)
    assert dead == []
    assert [(e.reason, e.reason.is_known) for e in seen] == [("gift_card_expired", False)]
    assert seen[0].model_dump(mode="json")["reason"] == "gift_card_expired"  # kept, passed on unchanged
