"""The metrics consumer: one aiokafka consumer on every contract topic, offsets kept in Mongo.

The kit's EventConsumer commits offsets to Kafka after each handler; the metrics service needs the
offsets to move together with what it stored (see application.ingest), so it runs its own loop:
poll a batch → decode and fold it into the projection (visible at once) → a checkpoint task stores
what is pending every `checkpoint_interval_s` or `checkpoint_max_records` (one segment document per
partition, then the offsets). On partition assignment it seeks every partition to the offset stored
in Mongo (from the beginning when none is stored), so a new owner continues exactly where the
previous one checkpointed; on revocation it checkpoints first.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from opentelemetry import propagate, trace

from kasse_common.envelope import headers_to_dict
from kasse_common.messaging import aiokafka_security
from kasse_metrics.application.ingest import CheckpointStore, Ingest, RawRecord
from kasse_metrics.entrypoints.partition_loop import PartitionLoop
from kasse_metrics.settings import MetricsSettings

log = logging.getLogger(__name__)


def trace_consumed(tracer: trace.Tracer, group: str, traced: Iterable[tuple[str, int, int, str]]) -> None:
    """A consumer span per traced event, in the producer's trace: the metrics hop of an order's trace.
    `traced`: (topic, partition, offset, traceparent) of each record that carries a trace context."""
    for topic, partition, offset, traceparent in traced:
        parent = propagate.extract({"traceparent": traceparent})
        tracer.start_span(
            f"{topic} process",
            context=parent,
            kind=trace.SpanKind.CONSUMER,
            attributes={
                "messaging.system": "kafka",
                "messaging.operation": "process",
                "messaging.destination.name": topic,
                "messaging.kafka.destination.partition": partition,
                "messaging.kafka.message.offset": offset,
                "messaging.consumer.group.name": group,
            },
        ).end()


class _SeekToStoredOffsets(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, owner: IngestConsumer) -> None:
        self.owner = owner

    async def on_partitions_revoked(self, revoked: Any) -> None:
        # Checkpoint what was consumed, so the next owner continues from there.
        t0 = time.monotonic()
        async with self.owner.batch_lock:
            t_lock = time.monotonic()
            tps = [(tp.topic, tp.partition) for tp in revoked]
            try:
                await self.owner.ingest.checkpoint()
            except Exception:
                # The next owner reads those records again from the stored offset: nothing is lost,
                # and this projection, which holds them already, skips their event ids.
                log.exception("checkpoint on revocation failed")
                self.owner.ingest.checkpoints.drop(tps)
            for tp in tps:
                self.owner.next_offsets.pop(tp, None)
            t_cp = time.monotonic()
            if self.owner.on_revoked is not None:
                await self.owner.on_revoked(tps)
        # The whole group waits for this (up to the rebalance timeout): how long each step took.
        log.info(
            "partitions revoked",
            extra={
                "count": len(tps),
                "lock_wait_s": round(t_lock - t0, 3),
                "checkpoint_s": round(t_cp - t_lock, 3),
                "release_s": round(time.monotonic() - t_cp, 3),
            },
        )

    async def on_partitions_assigned(self, assigned: Any) -> None:
        t0 = time.monotonic()
        # Not ready while the state is built: the seek sets the positions first, and when everything was
        # checkpointed they equal the partitions' ends, which read as "caught up" (a restart said ready
        # with three of six partitions still loading).
        self.owner.assigning += 1
        try:
            async with self.owner.batch_lock:
                t_lock = time.monotonic()
                await self._seek(assigned)
                t_seek = time.monotonic()
                if self.owner.on_assigned is not None:
                    # The partitions' state (snapshot + segments, read after the seek: records between the
                    # sought offset and what the state holds are read again and skipped by event id).
                    await self.owner.on_assigned([(tp.topic, tp.partition) for tp in assigned])
        finally:
            self.owner.assigning -= 1
        log.info(
            "partitions' state loaded",
            extra={
                "count": len(assigned),
                "lock_wait_s": round(t_lock - t0, 3),
                "seek_s": round(t_seek - t_lock, 3),
                "load_s": round(time.monotonic() - t_seek, 3),
            },
        )

    async def _seek(self, assigned: Any) -> None:
        stored = await self.owner.store.committed_offsets()
        consumer = self.owner.consumer
        assert consumer is not None
        for tp in assigned:
            offset = stored.get((tp.topic, tp.partition))
            if offset is None:
                await consumer.seek_to_beginning(tp)
            else:
                consumer.seek(tp, offset)
            self.owner.next_offsets[(tp.topic, tp.partition)] = offset or 0
        ends = await consumer.end_offsets(list(assigned)) if assigned else {}
        for tp, end in ends.items():
            self.owner.ends_at_assignment[(tp.topic, tp.partition)] = end
        log.info("partitions assigned", extra={"partitions": sorted(f"{t.topic}:{t.partition}" for t in assigned)})


class IngestConsumer(PartitionLoop):
    def __init__(
        self,
        settings: MetricsSettings,
        store: CheckpointStore,
        ingest: Ingest,
        tracer: trace.Tracer | None = None,
        may_apply: asyncio.Event | None = None,
        on_assigned: Callable[[list[tuple[str, int]]], Awaitable[None]] | None = None,
        on_revoked: Callable[[list[tuple[str, int]]], Awaitable[None]] | None = None,
    ) -> None:
        super().__init__()
        self.settings = settings
        self.on_assigned = on_assigned
        self.on_revoked = on_revoked
        # Polling starts once this is set (the projection's snapshot loaded); the group is joined before.
        self.may_apply = may_apply
        self.tracer = tracer or trace.get_tracer("kasse.metrics")
        self.store = store
        self.ingest = ingest
        # The state stage reads the router's internal topic (see application.routing).
        self.topics = [settings.internal_topic]
        self.duplicates_total = 0
        self.batch_lock = asyncio.Lock()
        self._checkpoint_due = asyncio.Event()
        self.assigning = 0  # rebalance listeners building the assigned partitions' state

    def caught_up(self) -> str:
        """As `PartitionLoop.caught_up`, and never before the assigned partitions' state is built."""
        if not self._caught_up and self.assigning:
            return "catching up: loading the assigned partitions' state"
        return super().caught_up()

    async def _consume(self) -> None:
        s = self.settings
        # A restarted loop reads again from the stored offsets: what was pending is read again too.
        self.ingest.checkpoints.pending.clear()
        self.consumer = AIOKafkaConsumer(
            **aiokafka_security(s),
            bootstrap_servers=s.kafka_bootstrap,
            group_id=s.state_consumer_group,
            group_instance_id=s.group_instance_id,
            session_timeout_ms=s.session_timeout_ms,
            heartbeat_interval_ms=s.session_timeout_ms // 3,
            client_id=f"kasse-{s.service_name}-state",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            metadata_max_age_ms=5000,
            # Packed records: 5000 of them were millions of facts folded without yielding (seconds to
            # minutes of a blocked loop at 5M events: missed heartbeats, expired sessions, stale reads).
            max_poll_records=s.state_max_records,
            fetch_max_wait_ms=s.ingest_poll_timeout_ms,
        )
        await self.consumer.start()
        self.consumer.subscribe(self.topics, listener=_SeekToStoredOffsets(self))
        checkpointer = asyncio.create_task(self._checkpoint_loop())
        try:
            if self.may_apply is not None:
                # aiokafka joins the group and the listener seeks in the background meanwhile.
                await self.may_apply.wait()
            while True:
                await self._wait_while_paused()
                batch = await self.consumer.getmany(
                    timeout_ms=s.ingest_poll_timeout_ms, max_records=s.state_max_records
                )
                if batch:
                    async with self.batch_lock:
                        await self._ingest(batch)
                    await self._bound_pending()
        finally:
            checkpointer.cancel()
            try:
                await asyncio.wait_for(self.ingest.checkpoint(), 10)
            except BaseException:
                log.warning("final checkpoint failed; the next owner reads those records again", exc_info=True)
            await self.consumer.stop()

    async def _bound_pending(self) -> None:
        s = self.settings
        checkpoints = self.ingest.checkpoints
        pending = checkpoints.pending_records
        if pending >= s.checkpoint_max_records:
            self._checkpoint_due.set()
        if pending >= s.checkpoint_max_pending_records or checkpoints.pending_facts >= s.checkpoint_max_pending_facts:
            # The store is slower than Kafka: wait for it rather than hold ever more facts in memory (counted in
            # facts too: one internal record packs up to a thousand, and the record bound alone never bit).
            await self.ingest.checkpoint()

    async def _checkpoint_loop(self) -> None:
        """Checkpoint every `checkpoint_interval_s`, sooner when `checkpoint_max_records` are pending."""
        while True:
            try:
                await asyncio.wait_for(self._checkpoint_due.wait(), self.settings.checkpoint_interval_s)
            except TimeoutError:
                pass
            self._checkpoint_due.clear()
            try:
                if await self.ingest.checkpoint() and self.settings.gc_freeze:
                    # The projection only grows: move it out of the cyclic GC's reach, so a full
                    # collection never stalls the loop for a scan of every fact held (~1 s at 300k).
                    gc.freeze()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("checkpoint failed; retrying (the records stay pending)")
                await asyncio.sleep(1.0)

    async def _ingest(self, batch: dict[TopicPartition, list[Any]]) -> None:
        # Records below the offset a partition was sought to are already stored (in a segment or the
        # snapshot): aiokafka may hand out records fetched from the reset position (the beginning)
        # while the assignment listener was still reading the stored offsets. Counting them again would
        # be harmless (dedupe), but moving `next_offsets` back would leave /readyz "behind" forever.
        kept: dict[TopicPartition, list[Any]] = {}
        for tp, msgs in batch.items():
            floor = self.next_offsets.get((tp.topic, tp.partition), 0)
            fresh = [m for m in msgs if m.offset >= floor]
            if fresh:
                kept[tp] = fresh
        records = [
            RawRecord(m.topic, m.partition, m.offset, m.key, m.value, headers_to_dict(m.headers or ()))
            for msgs in kept.values()
            for m in msgs
        ]
        if not records:
            return
        result = await self.ingest(records)
        for tp, msgs in kept.items():
            self.next_offsets[(tp.topic, tp.partition)] = msgs[-1].offset + 1
        self.records_total += result.records
        self.facts_total += result.new_facts
        self.duplicates_total += result.duplicates
        self._count(result.records)
