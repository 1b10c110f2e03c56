"""The router's confluent-kafka consumer: what its rebalance callbacks saw is applied on the event loop,
in order, before the batch polled with them is routed, and the batch's offsets are committed after."""

from __future__ import annotations

from collections.abc import Awaitable
from types import SimpleNamespace
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka import TopicPartition as KafkaPartition

from kasse_metrics.application.ingest import RawRecord
from kasse_metrics.application.routing import Router
from kasse_metrics.entrypoints.router import RouterConsumer
from kasse_metrics.settings import MetricsSettings

from .fakes import ClientMessage, RecordingDeadLetters
from .test_kpis import _views

pytestmark = pytest.mark.unit
T = "kasse.storefront.v1"


class FakeClient:
    """The calls the router makes on a confluent-kafka Consumer, on one partition log per (topic, partition)."""

    def __init__(self, committed: dict[tuple[str, int], int], ends: dict[tuple[str, int], int]) -> None:
        self._committed = committed
        self.ends = ends
        self.commits: list[list[tuple[str, int, int]]] = []
        self.fail_watermarks = 0  # the next calls fail as a partition without a leader does

    def committed(self, tps: list[KafkaPartition], timeout: float = -1) -> list[KafkaPartition]:
        return [
            KafkaPartition(tp.topic, tp.partition, self._committed.get((tp.topic, tp.partition), -1001)) for tp in tps
        ]

    def get_watermark_offsets(self, tp: KafkaPartition, timeout: float = -1, cached: bool = False) -> tuple[int, int]:
        if self.fail_watermarks:
            self.fail_watermarks -= 1
            raise KafkaException(KafkaError(KafkaError.NOT_LEADER_FOR_PARTITION))
        return 0, self.ends[(tp.topic, tp.partition)]

    def commit(self, offsets: list[KafkaPartition], asynchronous: bool = True) -> None:
        self.commits.append([(tp.topic, tp.partition, tp.offset) for tp in offsets])

    def poll(self, timeout: float = -1) -> Any:
        return None  # nothing more to read

    def assignment(self) -> list[KafkaPartition]:
        return []


class Sink:
    partitions = 6

    async def send(self, partition: int, value: bytes) -> Awaitable[Any]:
        import asyncio

        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


async def _on_client(call: Any, *args: Any, **kwargs: Any) -> Any:
    return call(*args, **kwargs)


def _router_consumer(client: FakeClient) -> RouterConsumer:
    router = RouterConsumer(
        MetricsSettings(profile="development"),
        Router(RecordingDeadLetters(), Sink()),
        None,
        [T],  # type: ignore[arg-type]
    )
    router.consumer = client
    return router


async def test_rebalances_apply_in_order_and_a_new_partition_starts_at_its_committed_offset_or_beginning() -> None:
    client = FakeClient(committed={(T, 0): 4}, ends={(T, 0): 6, (T, 1): 3})
    router = _router_consumer(client)
    # One poll saw: assigned 0 and 1; revoked both; assigned 0 again (eager protocol, as the client runs it).
    router._on_assign(client, [KafkaPartition(T, 0), KafkaPartition(T, 1)])  # type: ignore[arg-type]
    router._on_revoke(client, [KafkaPartition(T, 0), KafkaPartition(T, 1)])  # type: ignore[arg-type]
    router._on_assign(client, [KafkaPartition(T, 0)])  # type: ignore[arg-type]
    client.fail_watermarks = 2  # no leader yet for a moment: retried, not a restart of the loop
    await router._apply_rebalances(_on_client)
    assert router.next_offsets == {(T, 0): 4} and router.ends_at_assignment[(T, 0)] == 6
    assert router.caught_up() != "ok"
    # The batch is routed, then its offsets committed, and readiness follows.
    views = _views(6)
    batch = [
        ClientMessage(RawRecord(T, 0, offset, b"k", v.value, v.headers))
        for offset, v in enumerate(views)
        if offset >= 4
    ]
    await router._route(batch)  # type: ignore[arg-type]
    assert router.next_offsets == {(T, 0): 6} and router.caught_up() == "ok"
    assert (router.records_total, router.facts_total) == (2, 2)
    # Its offsets (acknowledged by then) are committed with the next poll, once.
    assert client.commits == []
    assert router._take(client, 100, 0) == []  # type: ignore[arg-type]
    assert router._take(client, 100, 0) == []  # type: ignore[arg-type]
    assert client.commits == [[(T, 0, 6)]]
    # Unassigned partition 1 started from its beginning (no committed offset) when it was assigned.
    router._on_assign(client, [KafkaPartition(T, 1)])  # type: ignore[arg-type]
    await router._apply_rebalances(_on_client)
    assert router.next_offsets[(T, 1)] == 0


def test_a_refused_commit_is_logged_and_the_loop_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    client = FakeClient(committed={}, ends={(T, 0): 1})

    def refuse(offsets: list[KafkaPartition], asynchronous: bool = True) -> None:
        raise KafkaException(KafkaError(KafkaError.REBALANCE_IN_PROGRESS))

    router = _router_consumer(client)
    # Refused when asked (the client's own state) or later by the broker (the commit callback).
    router._to_commit = {(T, 0): KafkaPartition(T, 0, 1)}
    client.commit = refuse  # type: ignore[method-assign]
    router._take(client, 100, 0)  # type: ignore[arg-type]
    # (the client's TopicPartition.error is read-only: a stand-in with the same attributes)
    refused_later = SimpleNamespace(topic=T, partition=1, offset=5, error=KafkaError(KafkaError.ILLEGAL_GENERATION))
    router._on_commit(None, [KafkaPartition(T, 0, 1), refused_later])  # type: ignore[list-item]
    router._on_commit(None, [KafkaPartition(T, 0, 2)])  # accepted: nothing logged
    refusals = [r.getMessage() for r in caplog.records if "router commit refused" in r.getMessage()]
    assert len(refusals) == 2 and f"{T}:1" in refusals[1] and router._to_commit == {}


def test_commits_go_one_at_a_time_and_at_most_every_interval_the_last_one_whatever() -> None:
    """Kafka answers a connection's requests in order, the group's heartbeats among them: a commit per poll
    (hundreds a second) starved the heartbeats until the group's session expired (bench (d) at 5,000 events/s)."""
    client = FakeClient(committed={}, ends={(T, 0): 100})
    router = _router_consumer(client)
    interval = router.settings.router_commit_interval_s

    def routed(end: int) -> None:
        router._to_commit[(T, 0)] = KafkaPartition(T, 0, end)

    def take() -> None:
        assert router._take(client, 100, 0) == []  # type: ignore[arg-type]

    routed(5)
    take()
    assert client.commits == [[(T, 0, 5)]]
    routed(7)
    router._committed_at -= interval  # the interval has passed, but the commit is not answered yet
    take()
    assert client.commits == [[(T, 0, 5)]]
    router._on_commit(None, [KafkaPartition(T, 0, 5)])
    take()
    assert client.commits[-1] == [(T, 0, 7)]  # the latest offset only
    router._on_commit(None, [KafkaPartition(T, 0, 7)])
    routed(9)
    take()  # answered, but within the interval of the last one
    assert len(client.commits) == 2
    router._committed_at -= interval
    take()
    assert client.commits[-1] == [(T, 0, 9)]
    routed(11)  # the final commit (stopping) waits for nothing
    router._commit(client, asynchronous=False)  # type: ignore[arg-type]
    assert client.commits[-1] == [(T, 0, 11)] and router._to_commit == {}
    # A revoked partition's pending offset is committed at once, while it is still this member's; others wait.
    routed(13)
    router._to_commit[(T, 1)] = KafkaPartition(T, 1, 4)
    router._on_revoke(client, [KafkaPartition(T, 0)])  # type: ignore[arg-type]
    assert client.commits[-1] == [(T, 0, 13)] and list(router._to_commit) == [(T, 1)]


def test_the_clients_fatal_state_ends_the_consumer_so_the_loop_builds_a_new_one() -> None:
    """librdkafka reports its fatal state (a static member fenced by its own successor after a session timeout)
    as an error event whose `fatal()` is False: taken for a passing error, the router polled a dead client
    forever and counted nothing more."""
    client = FakeClient(committed={}, ends={(T, 0): 1})
    fenced = SimpleNamespace(error=lambda: KafkaError(KafkaError._FATAL, "fenced by another consumer"))
    client.poll = lambda timeout=-1: fenced  # type: ignore[method-assign]
    router = _router_consumer(client)
    assert not fenced.error().fatal()
    with pytest.raises(KafkaException):
        router._take(client, 1, 0)  # type: ignore[arg-type]
    transient = SimpleNamespace(error=lambda: KafkaError(KafkaError._TRANSPORT, "broker away"))
    client.poll = lambda timeout=-1: transient  # type: ignore[method-assign]
    assert router._take(client, 1, 0) == []  # type: ignore[arg-type]  # logged, the loop goes on
