"""A store operation cancelled while PyMongo waits for a server leaves the client usable (issue 12).

What happened in the failed 300-order chaos run: after the store's kill -9, payment's PyMongo client never
selected a server again (no connection, no store command for 27 minutes) and its log showed `RuntimeError:
Lock is not acquired` from `Topology.select_servers`. On Python 3.11 PyMongo waits for a topology change with
`asyncio.wait_for(condition.wait(), 0.5)`, which runs the wait in a task of its own; an operation cancelled
while that task takes the lock back after its 0.5 s leaves `async with lock` without holding it, and the
orphaned task keeps the lock for ever. `kasse_common.mongo.guard_condition_waits` (applied by
`create_mongo_client`) runs the wait in the operation's own task instead.

The store here is a port nothing listens on (every server selection waits); the moment is made exact by
holding the topology's lock from the test while the operation's 0.5 s wait expires, as another operation or
the topology monitor holds it in a busy service.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from typing import Any, ClassVar

import pytest
from pydantic import SecretStr
from pydantic_settings import SettingsConfigDict

from kasse_common.mongo import create_mongo_client
from kasse_common.settings import ServiceSettings
from kasse_testkit import free_port, wait_until

pytestmark = pytest.mark.unit


class StoreSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="KASSE_COND_WAIT_TEST_", extra="ignore", frozen=True)
    service_name: ClassVar[str] = "cond-wait"


async def test_an_operation_cancelled_while_waiting_for_a_server_does_not_wedge_the_client() -> None:
    settings = StoreSettings(profile="development", mongo_uri=SecretStr(f"mongodb://127.0.0.1:{free_port()}/"))
    client = create_mongo_client(settings)
    # Every PyMongo module that waits on a condition waits through the guarded function.
    users = {name: m._async_cond_wait for name, m in list(sys.modules.items()) if hasattr(m, "_async_cond_wait")}
    assert {"pymongo.asynchronous.topology", "pymongo.asynchronous.pool"} <= set(users)
    if sys.version_info < (3, 12):
        assert {wait.__name__ for wait in users.values()} == {"_cond_wait_in_this_task"}, users
    topology: Any = client._topology
    lock, condition = topology._lock, topology._condition
    collection = client["kasse_cond_wait"]["orders"]
    operation = asyncio.create_task(collection.find_one({"_id": "ord_1"}))
    try:
        # The operation waits for a topology change (no server answers): the lock is free, it is a waiter.
        await wait_until(lambda: bool(condition._waiters), timeout=30, message="operation never waited for a server")
        await lock.acquire()  # another task holds the lock ...
        # ... while the operation's 0.5 s wait expires: it is no longer a waiter and queues to take the lock back.
        await wait_until(
            lambda: not condition._waiters and bool(lock._waiters),
            timeout=30,
            message="operation's wait never expired",
        )
        # The readiness probe's bound, or the consumer's stop, cancels the operation just as the lock is freed.
        operation.cancel()
        lock.release()
        outcome = (await asyncio.wait_for(asyncio.gather(operation, return_exceptions=True), 30))[0]
        assert isinstance(outcome, asyncio.CancelledError), f"the cancelled operation ended with {outcome!r}"

        # The client still selects servers: the lock is free again and a new operation reaches the wait.
        await asyncio.wait_for(lock.acquire(), 10)
        lock.release()
        second = asyncio.create_task(collection.find_one({"_id": "ord_2"}))
        try:
            await wait_until(lambda: bool(condition._waiters), timeout=10, message="a new operation never got the lock")
        finally:
            second.cancel()
            await asyncio.gather(second, return_exceptions=True)
    finally:
        operation.cancel()
        await asyncio.gather(operation, return_exceptions=True)
        with contextlib.suppress(Exception):  # a wedged client's close waits for the orphaned lock
            await asyncio.wait_for(client.close(), 5)
