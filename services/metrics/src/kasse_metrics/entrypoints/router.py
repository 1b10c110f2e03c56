"""The router's consumer: the contract topics (group `kasse-metrics`) → the internal facts topic.

Offsets are committed to Kafka after each batch's records were acknowledged by the broker (see
`application.routing`): a crash re-reads at most the batches not committed, whose facts the state
stage skips by event id. No state lives here, so nothing has to be checkpointed on a rebalance.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
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


class RouterConsumer:
    def __init__(
        self,
        settings: MetricsSettings,
        router: Router,
        sender: KafkaRoutedFacts,
        topics: list[str],
        tracer: trace.Tracer | None = None,
    ) -> None:
        self.settings = settings
        self.router = router
        self.sender = sender
        self.topics = topics
        self.tracer = tracer or trace.get_tracer("kasse.metrics")
        self.consumer: AIOKafkaConsumer | None = None
        self.next_offsets: dict[tuple[str, int], int] = {}
        self.ends_at_assignment: dict[tuple[str, int], int] = {}
        self.records_total = 0
        self.facts_total = 0
        self.routed_records_total = 0
        self._recent: deque[tuple[float, int]] = deque()
        self._unpaused = asyncio.Event()
        self._unpaused.set()
        self._parked = asyncio.Event()
        self._caught_up = False

    async def pause(self) -> None:
        """The operator's paused-consumer switch: stop reading the contract topics (lag builds up).
        Returns once the batch in hand is routed: nothing published after the switch is counted."""
        self._unpaused.clear()
        if self.consumer is not None:
            await asyncio.wait_for(self._parked.wait(), 30)

    async def resume(self) -> None:
        self._unpaused.set()

    def events_per_second(self, horizon_s: float = 10.0) -> float:
        now = time.monotonic()
        while self._recent and self._recent[0][0] < now - horizon_s:
            self._recent.popleft()
        return sum(n for _, n in self._recent) / horizon_s

    def caught_up(self) -> str:
        """ "ok" once every assigned source partition was routed up to its end as of assignment; sticky."""
        if self._caught_up:
            return "ok"
        if self.consumer is None or not self.next_offsets:
            return "router: no partitions assigned yet"
        behind = 0
        for tp, position in self.next_offsets.items():
            end = self.ends_at_assignment.get(tp)
            if end is None:
                return "router: partition ends not known yet"
            behind += max(0, end - position)
        if behind:
            return f"router catching up: {behind} records behind"
        self._caught_up = True
        log.info("router caught up with its partitions")
        return "ok"

    def lag(self) -> dict[tuple[str, int], int]:
        if self.consumer is None:
            return {}
        out = {}
        for (topic, partition), position in self.next_offsets.items():
            high = self.consumer.highwater(TopicPartition(topic, partition))
            if high is not None:
                out[(topic, partition)] = max(0, high - position)
        return out

    async def run(self) -> None:
        """Route until cancelled; a broken connection restarts the consumer after a pause."""
        while True:
            try:
                await self._consume()
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("metrics router failed; restarting it")
                await asyncio.sleep(2.0)

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
                if not self._unpaused.is_set():
                    self._parked.set()
                    await self._unpaused.wait()
                    self._parked.clear()
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
        self._recent.append((time.monotonic(), result.records))
