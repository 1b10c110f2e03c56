"""The router's producer: packed facts to the internal topic, one explicit partition per record."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

from aiokafka import AIOKafkaProducer

from kasse_common.messaging import aiokafka_security
from kasse_common.settings import ServiceSettings


class KafkaRoutedFacts:
    def __init__(self, settings: ServiceSettings, topic: str) -> None:
        self.settings = settings
        self.topic = topic
        self.partitions = 0  # the topic's partition count, read at start (sessions spread over all)
        self._producer: AIOKafkaProducer | None = None

    async def start(self) -> None:
        s = self.settings
        self._producer = AIOKafkaProducer(
            **aiokafka_security(s),
            bootstrap_servers=s.kafka_bootstrap,
            client_id=f"kasse-{s.service_name}-router",
            acks="all",
            # Idempotent: a retried send is not written twice (duplicates would be skipped by id anyway).
            enable_idempotence=True,
            max_request_size=4 * 1024 * 1024,
            linger_ms=1,
        )
        await self._producer.start()
        partitions = await self._producer.partitions_for(self.topic)
        if not partitions:
            raise RuntimeError(f"topic {self.topic} has no partitions (not created?)")
        self.partitions = len(partitions)

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def send(self, partition: int, value: bytes) -> Awaitable[Any]:
        assert self._producer is not None, "start() first"
        return await self._producer.send(self.topic, value, partition=partition)  # type: ignore[no-any-return]
