"""An outside team's subscriber: plain aiokafka plus the published contracts, nothing else of Kasse."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer

from kasse_contracts.envelope import CloudEventAttributes
from kasse_contracts.events import EVENTS_BY_TYPE


@dataclass(frozen=True)
class Seen:
    attributes: CloudEventAttributes
    event: Any
    topic: str
    partition: int
    offset: int
    key: str
    received: float = field(default_factory=time.monotonic)  # when this subscriber got it (benches time by it)


class OrderEventsSubscriber:
    def __init__(self, bootstrap: str, topics: list[str]) -> None:
        self.consumer = AIOKafkaConsumer(
            *topics, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest", enable_auto_commit=False
        )
        self.seen: list[Seen] = []
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> OrderEventsSubscriber:
        await self.consumer.start()
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: Any) -> None:
        assert self._task is not None
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass
        await self.consumer.stop()

    async def _run(self) -> None:
        async for record in self.consumer:
            headers = {k: v.decode() for k, v in record.headers}
            attributes = CloudEventAttributes.from_headers(headers)
            model = EVENTS_BY_TYPE.get(attributes.type)
            if model is None:
                continue
            self.seen.append(
                Seen(
                    attributes,
                    model.model_validate(json.loads(record.value)),
                    record.topic,
                    record.partition,
                    record.offset,
                    (record.key or b"").decode(),
                )
            )

    def for_order(self, order_id: str) -> list[Seen]:
        """This order's events in the order they happened (CloudEvents time), duplicates removed."""
        unique = {s.attributes.id: s for s in self.seen if s.key == order_id}
        return sorted(unique.values(), key=lambda s: s.attributes.time)

    def types(self, order_id: str) -> list[str]:
        return [type(s.event).__name__ for s in self.for_order(order_id)]
