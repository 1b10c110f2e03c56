"""Read and write real Kafka topics from tests, using only aiokafka and the contracts."""

from __future__ import annotations

import asyncio
import concurrent.futures
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from kasse_common.envelope import OutgoingRecord, decode, encode, headers_to_dict
from kasse_contracts.base import Event
from kasse_testkit.waiting import wait_until


@dataclass(frozen=True)
class ReadRecord:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: dict[str, str]

    @property
    def event_type(self) -> str | None:
        return self.headers.get("ce_type")

    def event(self) -> Event | None:
        return decode(self.value, self.headers).event


class TopicReader:
    """Collects every record of some topics from the beginning, in the background."""

    def __init__(self, bootstrap: str, *topics: str) -> None:
        self.bootstrap = bootstrap
        self.topics = topics
        self.records: list[ReadRecord] = []
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> TopicReader:
        self._consumer = AIOKafkaConsumer(
            *self.topics,
            bootstrap_servers=self.bootstrap,
            group_id=f"test-reader-{uuid.uuid4().hex[:8]}",
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            metadata_max_age_ms=1000,
        )
        await self._consumer.start()
        self._task = asyncio.create_task(self._collect())
        return self

    async def __aexit__(self, *exc: Any) -> None:
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        if self._consumer:
            await self._consumer.stop()

    async def _collect(self) -> None:
        assert self._consumer is not None
        async for msg in self._consumer:
            self.records.append(
                ReadRecord(msg.topic, msg.partition, msg.offset, msg.key, msg.value, headers_to_dict(msg.headers))
            )

    def events(self, event_type: type[Event] | None = None) -> list[Event]:
        out = []
        for r in self.records:
            if event_type is not None and r.event_type != event_type.event_type:
                continue
            ev = r.event()
            if ev is not None:
                out.append(ev)
        return out

    async def wait_for(
        self,
        predicate: Callable[[ReadRecord], bool] = lambda r: True,
        *,
        count: int = 1,
        timeout: float = 30.0,
    ) -> list[ReadRecord]:
        def matching() -> list[ReadRecord]:
            found = [r for r in self.records if predicate(r)]
            return found if len(found) >= count else []

        return await wait_until(
            matching,
            timeout=timeout,
            message=lambda: (
                f"{count} matching record(s) on {self.topics}; "
                f"have {len(self.records)} record(s): {[r.event_type for r in self.records][-20:]}"
            ),
        )

    async def wait_for_events(self, event_type: type[Event], *, count: int = 1, timeout: float = 30.0) -> list[Any]:
        await self.wait_for(lambda r: r.event_type == event_type.event_type, count=count, timeout=timeout)
        return self.events(event_type)


class TestPublisher:
    """Publishes contract events (or raw records) into a namespaced topic, as another service would."""

    __test__ = False  # not a pytest test class

    def __init__(self, bootstrap: str, topic_prefix: str = "", service: str = "test") -> None:
        self.bootstrap = bootstrap
        self.topic_prefix = topic_prefix
        self.service = service
        self._producer: AIOKafkaProducer | None = None

    async def __aenter__(self) -> TestPublisher:
        self._producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, enable_idempotence=True, acks="all")
        await self._producer.start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        if self._producer:
            await self._producer.stop()

    async def publish(self, event: Event, *, event_id: str | None = None) -> OutgoingRecord:
        record = encode(event, service=self.service, event_id=event_id)
        await self.publish_record(record)
        return record

    async def publish_record(self, record: OutgoingRecord) -> None:
        await self.publish_raw(self.topic_prefix + record.topic, record.value, record.key.encode(), record.headers)

    async def publish_raw(self, topic: str, value: bytes | None, key: bytes | None, headers: dict[str, str]) -> None:
        assert self._producer is not None
        await self._producer.send_and_wait(topic, value, key=key, headers=[(k, v.encode()) for k, v in headers.items()])


def delete_namespace_topics(bootstrap: str, topic_prefix: str, timeout: float = 30.0) -> list[str]:
    """Delete every topic under a test's prefix; returns their names.

    Each test's services create the contract topics (6 partitions each) under their own prefix, and a
    broker keeps files open for every partition: without this a full run reaches the process's
    open-file limit (seen: ~20,000 partitions, "Too many open files", the broker stops answering).
    Runs its own event loop in a thread, so it works from sync fixtures under a running loop too.
    """
    if not topic_prefix:
        raise ValueError("refusing to delete topics without a prefix")

    async def delete() -> list[str]:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout * 1000))
        await admin.start()
        try:
            names = [name for name in await admin.list_topics() if name.startswith(topic_prefix)]
            if names:
                await admin.delete_topics(names, timeout_ms=int(timeout * 1000))
            return names
        finally:
            await admin.close()

    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, delete()).result(timeout=timeout + 5)
