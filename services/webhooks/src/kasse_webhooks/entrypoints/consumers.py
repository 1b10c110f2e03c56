"""Every contract event on every contract topic becomes a CloudEvent in JSON structured mode."""

from __future__ import annotations

import json

from kasse_common.messaging import EventConsumer, EventContext
from kasse_contracts.base import Event
from kasse_contracts.envelope import CONTENT_TYPE, SPEC_VERSION
from kasse_contracts.events import EVENTS_BY_TYPE
from kasse_webhooks.application.delivery import DeliveryRecorder
from kasse_webhooks.application.ports import LoggedEvent


def structured(event: Event, ctx: EventContext) -> str:
    """The CloudEvent as one JSON document (HTTP structured content mode): the attributes, and the
    payload under `data`, exactly the JSON the Kafka record carries (same schemas)."""
    return json.dumps(
        {
            "specversion": SPEC_VERSION,
            "id": ctx.event_id,
            "source": ctx.source,
            "type": ctx.event_type,
            "subject": ctx.subject,
            "time": ctx.time.isoformat().replace("+00:00", "Z"),
            "datacontenttype": CONTENT_TYPE,
            "data": event.model_dump(mode="json"),
        },
        separators=(",", ":"),
    )


def register_consumers(consumer: EventConsumer, recorder: DeliveryRecorder, topic_prefix: str) -> None:
    async def on_event(event: Event, ctx: EventContext) -> None:
        await recorder.record(
            LoggedEvent(
                event_id=ctx.event_id,
                event_type=ctx.event_type,
                subject=ctx.subject,
                time=ctx.time,
                topic=ctx.topic.removeprefix(topic_prefix),
                partition=ctx.partition,
                offset=ctx.offset,
                body=structured(event, ctx),
            )
        )

    for model in EVENTS_BY_TYPE.values():
        consumer.on(model, on_event)
