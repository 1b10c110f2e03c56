"""The router's consumer: the contract topics (group `kasse-metrics`) → the internal facts topic.

Offsets are committed to Kafka after each batch's records were acknowledged by the broker (see
`application.routing`): a crash re-reads at most the batches not committed, whose facts the state
stage skips by event id. No state lives here, so nothing has to be checkpointed on a rebalance.

The client is confluent-kafka: librdkafka fetches, unpacks and buffers records in C (the aiokafka
router spent ~14 % of the service's CPU unpacking records, and another ~10 % on a record object and a
decoded header dict per event). What it has fetched already is taken on the event loop without waiting;
calls that wait (a poll with a timeout on an empty queue, reading offsets, closing) run on ONE thread of
their own, and the loop awaits them, so the consumer is never used from two threads at once. The
rebalance callbacks run inside `poll` and only note what changed; the loop applies it (reading the new
partitions' committed offsets and ends on the client's thread) before it routes the batch that poll
returned.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message
from confluent_kafka import TopicPartition as KafkaPartition
from opentelemetry import trace

from kasse_common.messaging import EventPublisher, confluent_security
from kasse_common.retry import retry_transient
from kasse_contracts.topics import TOPICS, dead_letter_topic
from kasse_metrics.adapters.dead_letters import KafkaDeadLetters
from kasse_metrics.adapters.routed_facts import KafkaRoutedFacts
from kasse_metrics.application.routing import Router
from kasse_metrics.entrypoints.consumer import trace_consumed
from kasse_metrics.entrypoints.partition_loop import PartitionLoop
from kasse_metrics.settings import MetricsSettings

log = logging.getLogger(__name__)

#: At most one log line per this many seconds for the client's non-fatal errors (it retries by itself).
ERROR_LOG_INTERVAL_S = 10.0
#: How often the loop refreshes the partitions' high watermarks for `lag()` (librdkafka's cached values).
HIGHWATER_REFRESH_S = 1.0
#: An asynchronous commit not answered within this long no longer holds back the next one.
COMMIT_ANSWER_TIMEOUT_S = 10.0


def _retriable(exc: BaseException) -> bool:
    """A client error that trying again can cure (no leader yet, a timeout), not a fatal one."""
    if not isinstance(exc, KafkaException) or not exc.args:
        return False
    error = exc.args[0]
    return isinstance(error, KafkaError) and not error.fatal()


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
        self.highwaters: dict[tuple[str, int], int] = {}
        self._highwaters_at = 0.0
        self._error_logged_at = 0.0
        # (assigned?, partitions) as the rebalance callbacks saw them, on the client's thread; applied on
        # the event loop after the poll that ran them (`_apply_rebalances`).
        self._rebalances: list[tuple[bool, list[tuple[str, int]]]] = []
        # The offsets of the routed (acknowledged) batches, per partition, committed with a later poll.
        self._to_commit: dict[tuple[str, int], KafkaPartition] = {}
        # One asynchronous commit at a time, at most every `router_commit_interval_s` (see `_commit`).
        self._commit_sent_at: float | None = None
        self._committed_at = 0.0

    @property
    def dead_lettered(self) -> int:
        """Malformed records this router sent to the dead-letter topic."""
        return self.router.dead_letters.count

    def _config(self) -> dict[str, Any]:
        s = self.settings
        config: dict[str, Any] = {
            **confluent_security(s),
            "bootstrap.servers": s.kafka_bootstrap,
            "group.id": s.consumer_group,
            "client.id": f"kasse-{s.service_name}-ingest",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": s.session_timeout_ms,
            "heartbeat.interval.ms": s.session_timeout_ms // 3,
            "topic.metadata.refresh.interval.ms": 5000,
            "fetch.wait.max.ms": s.ingest_poll_timeout_ms,
            # librdkafka prefetches into a local queue (default up to 64 MB: ~100 MB more RSS than aiokafka
            # in the bench); a few batches ahead (a batch is at most ~5,000 records, ~3 MB) is plenty.
            "queued.max.messages.kbytes": 8192,
            "queued.min.messages": 10000,
            # Over those bounds librdkafka postpones the partition's next fetch by this long (default 1 s):
            # draining a backlog was one fetch, then polls finding nothing for their whole timeout until the
            # next one (the router idle ~70 % of the time: 15,000 events/s in the bench instead of 34,000).
            "fetch.queue.backoff.ms": 5,
            "on_commit": self._on_commit,
        }
        if s.group_instance_id:
            config["group.instance.id"] = s.group_instance_id
        return config

    def _highwater(self, tp: tuple[str, int]) -> int | None:
        return self.highwaters.get(tp)

    # -- on the client's thread ------------------------------------------------------------------------

    def _take(self, consumer: Consumer, max_records: int, timeout_s: float) -> list[Message]:
        """Commits the last routed batch's offsets (asynchronously: the poll does not wait for the broker;
        a refusal is reported to `_on_commit`), then one batch: waits up to `timeout_s` for the first record
        (so a quiet topic adds no delay to a new event), then takes what is already fetched, up to
        `max_records`, without waiting."""
        self._commit(consumer, asynchronous=True)
        first = consumer.poll(timeout_s)
        batch = [first] if first is not None else []
        if first is not None and max_records > 1:
            batch.extend(consumer.consume(max_records - 1, 0))
        now = time.monotonic()
        if now - self._highwaters_at >= HIGHWATER_REFRESH_S:
            self._highwaters_at = now
            marks = {}
            for tp in consumer.assignment():
                _, high = consumer.get_watermark_offsets(tp, cached=True)
                if high >= 0:
                    marks[(tp.topic, tp.partition)] = high
            self.highwaters = marks
        records = []
        for m in batch:
            error = m.error()
            if error is None:
                records.append(m)
            elif error.fatal() or error.code() == KafkaError._FATAL:
                # librdkafka reports its fatal state as an error event (`_FATAL`, e.g. a static member fenced)
                # whose own flag is not set: the consumer is unusable, so `PartitionLoop.run` builds a new one.
                raise KafkaException(error)
            elif now - self._error_logged_at >= ERROR_LOG_INTERVAL_S:
                # e.g. a topic not created yet, the broker away: librdkafka keeps trying by itself.
                self._error_logged_at = now
                log.warning("router consumer: %s", error)
        return records

    def _commit(self, consumer: Consumer, asynchronous: bool) -> None:
        """Commit the routed batches' offsets. Asynchronously (with a poll): only when no commit is in flight and
        `router_commit_interval_s` has passed since the last one. Kafka answers a connection's requests one
        after another, and the group's heartbeats share the coordinator's connection with the commits: one commit
        per poll (hundreds a second at a few thousand events/s, small batches) queued the heartbeats behind
        them until the group's session expired (bench (d) at 5,000 events/s, every run, after ~20 s). A crash
        routes the uncommitted batches again; the state stage skips their facts by event id."""
        if not self._to_commit:
            return
        now = time.monotonic()
        if asynchronous:
            in_flight = self._commit_sent_at is not None and now - self._commit_sent_at < COMMIT_ANSWER_TIMEOUT_S
            if in_flight or now - self._committed_at < self.settings.router_commit_interval_s:
                return
        offsets = list(self._to_commit.values())
        self._to_commit = {}
        self._committed_at = now
        try:
            if asynchronous:
                self._commit_sent_at = now
                consumer.commit(offsets=offsets, asynchronous=True)
            else:
                consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            self._commit_sent_at = None
            if not _retriable(exc):
                raise
            self._on_commit(exc.args[0], offsets)

    def _on_commit(self, error: KafkaError | None, offsets: list[KafkaPartition]) -> None:
        self._commit_sent_at = None
        refused = [f"{tp.topic}:{tp.partition} {tp.error}" for tp in offsets if tp.error is not None]
        if error is not None:
            refused.insert(0, str(error))
        if refused:
            # Revoked meanwhile (a rebalance): the new owner routes these records again; the state
            # stage skips them by id.
            log.warning("router commit refused (%s); the next owner routes the batch again", "; ".join(refused)[:500])

    def _on_assign(self, _consumer: Consumer, assigned: list[KafkaPartition]) -> None:
        self._rebalances.append((True, [(tp.topic, tp.partition) for tp in assigned]))

    def _on_revoke(self, consumer: Consumer, revoked: list[KafkaPartition]) -> None:
        self._rebalances.append((False, [(tp.topic, tp.partition) for tp in revoked]))
        # What was routed of them and not committed yet is committed now, while they are still this
        # member's: their next owner starts where this one stopped instead of routing it again.
        handed_over = [c for tp in revoked if (c := self._to_commit.pop((tp.topic, tp.partition), None)) is not None]
        if handed_over:
            try:
                consumer.commit(offsets=handed_over, asynchronous=False)
            except KafkaException as exc:
                self._on_commit(exc.args[0] if exc.args else None, handed_over)

    def _positions(
        self, consumer: Consumer, tps: list[tuple[str, int]]
    ) -> tuple[dict[tuple[str, int], int], dict[tuple[str, int], int]]:
        """Where each partition starts (its committed offset, else its beginning) and its end now."""
        starts: dict[tuple[str, int], int] = {}
        ends: dict[tuple[str, int], int] = {}
        for tp in consumer.committed([KafkaPartition(t, p) for t, p in tps], timeout=10):
            low, high = consumer.get_watermark_offsets(tp, timeout=10)
            key = (tp.topic, tp.partition)
            # No committed offset (negative: OFFSET_INVALID): the partition is read from its beginning.
            starts[key] = tp.offset if tp.offset >= 0 else low
            ends[key] = high
        return starts, ends

    # -- on the event loop -----------------------------------------------------------------------------

    async def _apply_rebalances(self, on_client: Any) -> None:
        """What the rebalance callbacks saw, in order, before the batch polled with them is routed (so a
        partition's committed offset is read before this instance commits anything for it)."""
        while self._rebalances:
            assigned, tps = self._rebalances.pop(0)
            if not assigned:
                for tp in tps:
                    self.next_offsets.pop(tp, None)
                continue
            if not tps:
                continue

            async def positions(tps: list[tuple[str, int]] = tps) -> Any:
                return await on_client(self._positions, self.consumer, tps)

            # A partition just created may have no leader yet for a moment.
            starts, ends = await retry_transient(
                positions,
                what="router partitions' offsets",
                within_s=60,
                retry_on=_retriable,
            )
            self.next_offsets.update(starts)
            self.ends_at_assignment.update(ends)
            log.info("router partitions assigned", extra={"partitions": sorted(f"{t}:{p}" for t, p in tps)})

    async def _consume(self) -> None:
        s = self.settings
        loop = asyncio.get_running_loop()
        # A restarted loop starts afresh: the group assigns its partitions again.
        self._rebalances.clear()
        self._to_commit.clear()
        self._commit_sent_at = None
        self.next_offsets.clear()
        await self.sender.start()
        client = ThreadPoolExecutor(max_workers=1, thread_name_prefix="router-consumer")
        consumer: Consumer | None = None

        async def on_client(call: Any, *args: Any, **kwargs: Any) -> Any:
            return await loop.run_in_executor(client, functools.partial(call, *args, **kwargs))

        try:
            consumer = await on_client(Consumer, self._config())
            assert consumer is not None
            self.consumer = consumer
            await on_client(
                consumer.subscribe,
                self.topics,
                on_assign=self._on_assign,
                on_revoke=self._on_revoke,
            )
            timeout_s = s.ingest_poll_timeout_ms / 1000
            while True:
                await self._wait_while_paused()
                # What is fetched already, taken on the loop (nothing blocks with no timeout); only an empty
                # queue waits, on the client's thread. The hop to that thread and back for every batch was 7.7 ms
                # p50 / 103 ms p99 of each event's freshness in the bench (1.7 / 13 ms without it).
                batch = self._take(consumer, s.ingest_max_records, 0)
                if not batch and not self._rebalances:
                    batch = await on_client(self._take, consumer, s.ingest_max_records, timeout_s)
                if self._rebalances:
                    await self._apply_rebalances(on_client)
                if batch:
                    await self._route(batch)
        finally:
            if consumer is not None:
                try:
                    await on_client(self._commit, consumer, False)
                    # Leaves the group at once (its partitions go to the others without a session timeout).
                    await on_client(consumer.close)
                except Exception:
                    log.warning("router consumer did not close cleanly", exc_info=True)
            client.shutdown(wait=False)
            await self.sender.stop()

    async def _route(self, batch: list[Message]) -> None:
        result = await self.router(batch)
        if result.traced:
            trace_consumed(self.tracer, self.settings.consumer_group, result.traced)
        ends: dict[tuple[str, int], int] = {}
        for m in batch:
            # A partition's records come in order; a consumed record has its topic, partition and offset.
            ends[(m.topic(), m.partition())] = m.offset() + 1  # type: ignore[index,operator]
        # Every record of the batch is acknowledged: its offsets are committed with a later poll (`_commit`).
        for (topic, partition), end in ends.items():
            self._to_commit[(topic, partition)] = KafkaPartition(topic, partition, end)
        for key, end in ends.items():
            if key in self.next_offsets:
                self.next_offsets[key] = max(self.next_offsets[key], end)
        self.records_total += result.records
        self.facts_total += result.facts
        self.routed_records_total += result.routed_records
        self._count(result.records)


def build_router_consumer(settings: MetricsSettings, publisher: EventPublisher, tracer: trace.Tracer) -> RouterConsumer:
    """The router stage: every contract topic → the internal topic; malformed records to the dead-letter topic."""
    dead_letters = KafkaDeadLetters(
        publisher, settings.topic(dead_letter_topic(settings.service_name)), settings.consumer_group
    )
    sender = KafkaRoutedFacts(settings, settings.internal_topic)
    return RouterConsumer(
        settings,
        Router(dead_letters, sender, settings.router_max_facts_per_record),
        sender,
        [settings.topic(t) for t in sorted(TOPICS)],
        tracer=tracer,
    )
