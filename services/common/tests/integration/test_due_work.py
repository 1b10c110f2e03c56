"""A periodic job's candidates come from a small DueWork collection, not from the whole history.

On the real store: the job finds exactly the documents its filter matches; a document whose work is
done loses its marker (the index holds what is pending, not the history); one with work later stays
listed without holding up a round; a document committed without its marker (a crash between the two
writes) is found by the rebuild every start runs.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import pytest
from pydantic_settings import SettingsConfigDict
from pymongo.errors import AutoReconnect

from kasse_common.due import DueWork, rebuild_soon
from kasse_common.mongo import create_mongo_client
from kasse_common.outbox import REGISTRY, OutboxRelay
from kasse_common.persistence import CommitOutcome, DocumentStore
from kasse_common.settings import ServiceSettings
from kasse_testkit import wait_until

pytestmark = pytest.mark.integration


class DueSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="KASSE_DUE_TEST_", extra="ignore", frozen=True)
    service_name: ClassVar[str] = "due"


async def test_the_job_reads_pending_work_only_and_markers_go_when_the_work_is_done(settings_for: Any) -> None:
    settings = settings_for(DueSettings)
    mongo = create_mongo_client(settings)
    payments = mongo[settings.database_name]["payments"]
    work = DueWork(
        payments,
        "work",
        has_work={"needs_work": True},
        at_field="updated_at",
        pending=lambda s: bool(s.get("needs_work")),
    )
    now = datetime.now(UTC)
    old = now - timedelta(minutes=5)

    def job(until: datetime) -> dict[str, Any]:
        return {
            "needs_work": True,
            "updated_at": {"$lte": until},
            "$or": [{"retry_at": None}, {"retry_at": {"$lte": until}}],
        }

    try:
        # A month of finished payments: no marker, never read by the job.
        await payments.insert_many([{"_id": f"done-{i}", "needs_work": False, "updated_at": old} for i in range(200)])
        states = {
            "stuck": {"needs_work": True, "updated_at": old, "retry_at": None},
            "later": {"needs_work": True, "updated_at": old, "retry_at": now + timedelta(hours=1)},
            "finishing": {"needs_work": True, "updated_at": old, "retry_at": None},
        }
        await work.rebuild()  # the start of the process: nothing pending yet
        for doc_id, state in states.items():
            await payments.insert_one({"_id": doc_id, **state})
            await work.track(doc_id, state)
        # Committed without its marker: the process died between the two writes.
        await payments.insert_one({"_id": "crashed", "needs_work": True, "updated_at": old, "retry_at": None})
        await payments.update_one({"_id": "finishing"}, {"$set": {"needs_work": False}})

        assert sorted(await work.due(now, 50, job(now))) == ["stuck"]
        markers = {d["_id"] for d in await work.index.find({}).to_list()}
        assert markers == {"stuck", "later"}  # "finishing" is done: its marker went
        assert await work.size() == 2

        fresh = DueWork(
            payments, "work", has_work={"needs_work": True}, at_field="updated_at", pending=lambda s: True
        )  # the next start rebuilds: the crashed one is found
        assert sorted(await fresh.due(now, 50, job(now))) == ["crashed", "stuck"]
    finally:
        await payments.delete_many({})
        await work.index.delete_many({})
        await mongo.close()


async def test_on_the_store_a_marker_a_failed_write_left_out_comes_with_the_next_round(settings_for: Any) -> None:
    """Built on the DocumentStore, every commit is tracked; a marker the store's death left
    unwritten, or the marker of a commit that raised although it landed, is written by the job's
    next round — without a restart; a rebuild every `rebuild_every_s` catches what nothing saw."""
    settings = settings_for(DueSettings)
    mongo = create_mongo_client(settings)
    payments = mongo[settings.database_name]["payments"]
    store = DocumentStore(payments)
    work = DueWork(
        store,
        "work",
        has_work={"needs_work": True},
        at_field="updated_at",
        pending=lambda s: bool(s.get("needs_work")),
        rebuild_every_s=3600,
    )
    real_index = work.index
    now = datetime.now(UTC)
    old = now - timedelta(minutes=5)
    job = {"needs_work": True, "updated_at": {"$lte": now}}
    state = {"needs_work": True, "updated_at": old}

    class Dead:  # the store, killed -9: every call fails
        def __getattr__(self, name: str) -> Any:
            async def fail(*args: Any, **kwargs: Any) -> Any:
                raise AutoReconnect("connection closed")

            return fail

    try:
        assert await work.due(now, 50, job) == []  # started: markers built
        assert await store.commit("tracked", expected_version=None, state=state) is CommitOutcome.APPLIED
        # Written beside the writer's path, without a round of the job.
        await wait_until(lambda: real_index.find_one({"_id": "tracked"}), timeout=30)
        work.index = Dead()  # type: ignore[assignment]
        # Committed, then the store died before the marker: the commit stands, the marker is owed.
        assert await store.commit("owed", expected_version=None, state=state) is CommitOutcome.APPLIED
        # The store applied the write but died before answering: the writer sees the failure.
        store.collection = Dead()  # type: ignore[assignment]
        with pytest.raises(AutoReconnect):
            await store.commit("ambiguous", expected_version=None, state=state)
        await payments.insert_one({"_id": "ambiguous", **state})  # ... what the store had applied
        with pytest.raises(AutoReconnect):
            await work.due(now, 50, job)  # a round while the store is away fails, owing still
        store.collection = payments
        work.index = real_index
        assert sorted(await work.due(now, 50, job)) == ["ambiguous", "owed", "tracked"]

        await payments.insert_one({"_id": "unseen", **state})  # committed past every hook
        assert "unseen" not in await work.due(now, 50, job)
        work.rebuild_every_s = 0  # an hour has passed: the safety-net rebuild runs
        assert "unseen" in await work.due(now, 50, job)
    finally:
        await payments.delete_many({})
        await real_index.delete_many({})
        await mongo.close()


class _CountingIndex:
    """The marker collection, counting the commands a rebuild sends; `fail_after_writes` cuts it short."""

    def __init__(self, index: Any, fail_after_writes: int | None = None) -> None:
        self.index = index
        self.writes = 0
        self.single_writes = 0
        self.fail_after_writes = fail_after_writes

    def __getattr__(self, name: str) -> Any:
        return getattr(self.index, name)

    async def bulk_write(self, requests: Any, **kwargs: Any) -> Any:
        if self.fail_after_writes is not None and self.writes >= self.fail_after_writes:
            raise AutoReconnect("the store went away in the middle of the rebuild")
        self.writes += 1
        return await self.index.bulk_write(requests, **kwargs)

    async def update_one(self, *args: Any, **kwargs: Any) -> Any:
        self.single_writes += 1
        return await self.index.update_one(*args, **kwargs)


async def test_a_rebuild_writes_only_the_missing_markers_in_batches_and_keeps_what_it_wrote_when_cut_short(
    settings_for: Any,
) -> None:
    """After a restart nearly every marker is there: the rebuild writes the missing ones, a batch a
    command, not one round trip per pending document. In the 300-order chaos run a rebuild of ~260
    pending orders at ~3 s a command outlasted the job's round; cancelled, it started again from the
    first, and the jobs never ran again. A rebuild cut short keeps what it wrote."""
    settings = settings_for(DueSettings)
    mongo = create_mongo_client(settings)
    payments = mongo[settings.database_name]["payments"]
    work = DueWork(
        payments,
        "work",
        has_work={"needs_work": True},
        at_field="updated_at",
        pending=lambda s: bool(s.get("needs_work")),
    )
    real_index = work.index
    now = datetime.now(UTC).replace(microsecond=0)
    old = now - timedelta(minutes=5)
    job = {"needs_work": True, "updated_at": {"$lte": now}}
    try:
        await payments.insert_many([{"_id": f"p-{i:03}", "needs_work": True, "updated_at": old} for i in range(260)])
        await payments.insert_many([{"_id": f"done-{i}", "needs_work": False, "updated_at": old} for i in range(40)])
        # Marked before the restart: 120 of them, one with a marker later than its work.
        await real_index.insert_many([{"_id": f"p-{i:03}", "at": old, "token": "t"} for i in range(120)])
        await real_index.update_one({"_id": "p-000"}, {"$set": {"at": now + timedelta(hours=1)}})

        cut = _CountingIndex(real_index, fail_after_writes=1)
        work.index = cut  # type: ignore[assignment]
        with pytest.raises(AutoReconnect):
            await work.rebuild()  # the store goes away after the first batch
        assert cut.writes == 1 and cut.single_writes == 0
        assert await real_index.count_documents({}) == 120 + 49  # p-000 re-marked, 49 new ones kept

        counted = _CountingIndex(real_index)
        work.index = counted  # type: ignore[assignment]
        assert await work.rebuild() == 260 - 120 - 49  # only what is still missing
        assert counted.writes == 2 and counted.single_writes == 0  # 91 markers: two commands
        work.index = real_index
        assert await real_index.count_documents({}) == 260
        assert (await real_index.find_one({"_id": "p-000"}) or {}).get("at") == old
        due = await work.due(now, 500, job)
        assert sorted(due) == [f"p-{i:03}" for i in range(260)]
    finally:
        await payments.delete_many({})
        await real_index.delete_many({})
        await mongo.close()


class _Broker:
    async def publish(self, record: Any) -> None:
        pass


async def test_a_process_of_the_database_dying_makes_the_survivors_rebuild_not_an_hourly_belt(
    settings_for: Any,
) -> None:
    """A process that died between a commit and its marker and never came back: its relay stops beating,
    a survivor's relay notices and every DueWork of the database in the survivor rebuilds at its next
    round. So the periodic full rebuild can be rare (a day), and an idle shop costs the same at any size."""
    settings = settings_for(DueSettings)
    mongo = create_mongo_client(settings)
    db = mongo[settings.database_name]
    payments = db["payments"]
    work = DueWork(
        payments,
        "work",
        has_work={"needs_work": True},
        at_field="updated_at",
        pending=lambda s: bool(s.get("needs_work")),
    )
    assert work.rebuild_every_s == 86_400  # the belt is a day now
    now = datetime.now(UTC)
    job = {"needs_work": True, "updated_at": {"$lte": now}}
    relay = OutboxRelay(_Broker(), poll_interval_s=86_400, lease_s=5.0, heartbeat_s=0.3, dead_after_s=2.0)  # type: ignore[arg-type]
    relay.watch(payments)
    relay.on_relay_died = lambda: rebuild_soon(settings.database_name)
    try:
        assert await work.due(now, 50, job) == []  # started: markers built
        # The other process committed this and died before its marker (and before its next beat).
        await payments.insert_one({"_id": "left", "needs_work": True, "updated_at": now - timedelta(minutes=5)})
        await db[REGISTRY].insert_one({"_id": "died", "beat_at": time.time() - 60})
        assert await work.due(now, 50, job) == []  # nothing marked it
        relay.start()
        await wait_until(lambda: relay.relays_taken_over == 1, timeout=30)
        assert await work.due(now, 50, job) == ["left"]
    finally:
        await relay.stop(drain_timeout_s=2)
        await payments.delete_many({})
        await work.index.delete_many({})
        await mongo.close()


def test_the_runtime_wires_a_dead_relay_to_its_database_s_rebuilds(settings_for: Any) -> None:
    from kasse_common.runtime import ServiceRuntime

    runtime = ServiceRuntime(settings_for(DueSettings), configure_logs=False)
    work = DueWork(runtime.db["payments"], "work", has_work={"x": 1}, at_field="at", pending=lambda s: False)
    elsewhere = DueWork(
        runtime.mongo["another-database"]["payments"], "work", has_work={"x": 1}, at_field="at", pending=lambda s: False
    )
    work._rebuilt_at = elsewhere._rebuilt_at = time.monotonic()
    assert not work._rebuild_due() and not elsewhere._rebuild_due()
    assert runtime.relay.on_relay_died is not None
    runtime.relay.on_relay_died()
    assert work._rebuild_due() and not elsewhere._rebuild_due()
