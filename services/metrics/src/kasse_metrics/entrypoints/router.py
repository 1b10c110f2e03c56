"""The router's consumer: the contract topics (group `kasse-metrics`) → the internal facts topic.

Offsets are committed to Kafka after each batch's records were acknowledged by the broker (see
`application.routing`): a crash re-reads at most the batches not committed, whose facts the state
stage skips by event id. No state lives here, so nothing has to be checkpointed on a rebalance.
"""

from __future__ import annotations

import logging
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, RebalanceInProgressError
from aiokafka.structs import OffsetAndMetadata
from opentelemetry import trace

from kasse_common.envelope import headers_to_dict
from kasse_common.messaging import aiokafka_security
from kasse_metrics.adapters.routed_facts import KafkaRoutedFacts
from kasse_metrics.application.ingest import RawRecord
from kasse_metrics.application.routing import Router
from kasse_metrics.entrypoints.consumer import trace_consumed
from kasse_metrics.entrypoints.partition_loop import PartitionLoop
from kasse_metrics.settings import MetricsSettings

log = logging.getLogger(__name__)


class _TrackAssignment(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, owner: RouterConsumer) -> None:
        self.owner = owner

    async def on_partitions_revoked(self, revoked: Any) -> None:
        for tp in revoked:
            self.owner.next_offsets.pop((tp.topic, tp.partition), None)

    async def on_partitions_assigned(self, assigned: Any) -> None:
        consumer = self.owner.consumer
        assert consumer is not None
        if not assigned:
            return
        assigned = list(assigned)
        beginnings = await consumer.beginning_offsets(assigned)
        ends = await consumer.end_offsets(assigned)
        for tp in assigned:
            committed = await consumer.committed(tp)
            key = (tp.topic, tp.partition)
            self.owner.next_offsets[key] = committed if committed is not None else beginnings[tp]
            self.owner.ends_at_assignment[key] = ends[tp]
        names = sorted(f"{t.topic}:{t.partition}" for t in assigned)
        log.info("router partitions assigned", extra={"partitions": names})


class RouterConsumer(PartitionLoop):
    label = "router"

    def __init__(
        self,
        settings: MetricsSettings,
        router: Router,
        sender: KafkaRoutedFacts,
        topics: list[str],
        tracer: trace.Tracer | None = None,
    ) -> None:
        super().__init__()
        self.settings = settings
        self.router = router
        self.sender = sender
        self.topics = topics
        self.tracer = tracer or trace.get_tracer("kasse.metrics")
        self.routed_records_total = 0

    async def _consume(self) -> None:
        s = self.settings
        await self.sender.start()
        self.consumer = AIOKafkaConsumer(
            **aiokafka_security(s),
            bootstrap_servers=s.kafka_bootstrap,
            group_id=s.consumer_group,
            group_instance_id=s.group_instance_id,
            session_timeout_ms=s.session_timeout_ms,
            heartbeat_interval_ms=s.session_timeout_ms // 3,
            client_id=f"kasse-{s.service_name}-ingest",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            metadata_max_age_ms=5000,
            max_poll_records=s.ingest_max_records,
            fetch_max_wait_ms=s.ingest_poll_timeout_ms,
        )
        await self.consumer.start()
        self.consumer.subscribe(self.topics, listener=_TrackAssignment(self))
        try:
            while True:
                await self._wait_while_paused()
                batch = await self.consumer.getmany(
                    timeout_ms=s.ingest_poll_timeout_ms, max_records=s.ingest_max_records
                )
                if batch:
                    await self._route(batch)
        finally:
            await self.consumer.stop()
            await self.sender.stop()

    async def _route(self, batch: dict[TopicPartition, list[Any]]) -> None:
        assert self.consumer is not None
        records = [
            RawRecord(m.topic, m.partition, m.offset, m.key, m.value, headers_to_dict(m.headers or ()))
            for msgs in batch.values()
            for m in msgs
        ]
        result = await self.router(records)
        trace_consumed(self.tracer, self.settings.consumer_group, records)
        commit = {tp: OffsetAndMetadata(msgs[-1].offset + 1, "") for tp, msgs in batch.items() if msgs}
        try:
            await self.consumer.commit(commit)
        except (CommitFailedError, IllegalStateError, RebalanceInProgressError):
            # Revoked meanwhile: the new owner routes these records again; the state stage skips them by id.
            log.warning("router commit refused (rebalance); the next owner routes the batch again")
        for tp, msgs in batch.items():
            if msgs:
                key = (tp.topic, tp.partition)
                if key in self.next_offsets:
                    self.next_offsets[key] = max(self.next_offsets[key], msgs[-1].offset + 1)
        self.records_total += result.records
        self.facts_total += result.facts
        self.routed_records_total += result.routed_records
        self._count(result.records)
