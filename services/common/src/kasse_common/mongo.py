"""MongoDB through PyMongo's async API. Only features FerretDB v1 has too (no transactions,
change streams, TTL indexes, $lookup/$facet).

Every client counts the commands it sends and the time the store took for them, per command,
collection and filter shape (`StoreCommands`, exported on `/metrics` as `kasse_store_commands` and
`kasse_store_command_seconds`): which of a service's queries cost the store what, e.g. a filter
FerretDB v1 cannot narrow (anything but `{_id: v}`) reading a whole collection at idle (issue 12,
`make bench-idle` prints them per window).

On Python 3.11 the client is created only after `guard_condition_waits()` (below): PyMongo's own wait on
its topology and pool conditions loses its lock when the waiting operation is cancelled at the wrong moment,
and the client then never selects a server or checks out a connection again.
"""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from pymongo import AsyncMongoClient, monitoring

from kasse_common.progress import report_progress
from kasse_common.settings import ServiceSettings

# Where each command keeps its filter (the first statement's, for writes).
_FILTER_OF: dict[str, Callable[[Mapping[str, Any]], Any]] = {
    "find": lambda c: c.get("filter"),
    "count": lambda c: c.get("query"),
    "findAndModify": lambda c: c.get("query"),
    "update": lambda c: (c.get("updates") or [{}])[0].get("q"),
    "delete": lambda c: (c.get("deletes") or [{}])[0].get("q"),
    "aggregate": lambda c: next((s["$match"] for s in c.get("pipeline") or [] if "$match" in s), None),
}


def filter_shape(filter_: Any) -> str:
    """The filter's field names, values left out: `{_id}` is a read of one document on every store.

    A path into a kit-owned map keyed by data (`_dedupe.g0.<event id>`, `_processed.<event id>`) is one
    name (`_dedupe.*`): a commit's consumed ids made a new shape per event, and after MAX_KEYS of them
    every command was counted as "other"."""
    if not isinstance(filter_, Mapping) or not filter_:
        return "{}"
    names = {f"{k.split('.', 1)[0]}.*" if k.startswith("_") and "." in k else k for k in map(str, filter_)}
    return "{" + ",".join(sorted(names)) + "}"


@dataclass
class CommandTotals:
    count: int = 0
    seconds: float = 0.0


class StoreCommands(monitoring.CommandListener):
    """Commands sent and the store's time for them, by (command, collection, filter shape)."""

    # Beyond this many distinct keys (a bug making shapes from data) new ones are counted as "other".
    MAX_KEYS = 500

    def __init__(self) -> None:
        self.totals: dict[tuple[str, str, str], CommandTotals] = {}
        self._started: dict[tuple[Any, int], tuple[str, str, str]] = {}
        self._lock = threading.Lock()

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        name = event.command_name
        command = event.command
        if name in _FILTER_OF:
            collection, shape = str(command.get(name, "")), filter_shape(_FILTER_OF[name](command))
        elif name == "insert":
            collection, shape = str(command.get(name, "")), "-"
        elif name == "getMore":  # the next batch of a cursor
            collection, shape = str(command.get("collection", "")), "cursor"
        else:
            return  # handshakes, index creation, ...
        with self._lock:
            self._started[(event.connection_id, event.request_id)] = (name, collection, shape)

    def _ended(self, event: monitoring.CommandSucceededEvent | monitoring.CommandFailedEvent) -> None:
        with self._lock:
            key = self._started.pop((event.connection_id, event.request_id), None)
            if key is None:
                return
            if key not in self.totals and len(self.totals) >= self.MAX_KEYS:
                key = (key[0], key[1], "other")
            totals = self.totals.setdefault(key, CommandTotals())
            totals.count += 1
            totals.seconds += event.duration_micros / 1e6

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        self._ended(event)
        report_progress()  # a handler whose store commands complete is working, not stuck (the watchdog)

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        self._ended(event)

    def snapshot(self) -> dict[tuple[str, str, str], CommandTotals]:
        with self._lock:
            return {k: CommandTotals(v.count, v.seconds) for k, v in self.totals.items()}


async def _cond_wait_in_this_task(condition: Any, timeout: float | None) -> bool:
    """PyMongo's `_async_cond_wait`, with the timeout run in the waiting task itself (as `asyncio.wait_for`
    does from Python 3.12 on): the condition's lock is held again whenever this returns or raises."""
    try:
        async with asyncio.timeout(timeout):
            return bool(await condition.wait())
    except TimeoutError:
        return False


def _cond_wait_users() -> list[ModuleType]:
    """PyMongo's modules that call `_async_cond_wait` by the name they imported (today server selection and
    the pool's checkout; any other a later PyMongo adds is found the same way)."""
    return [
        module
        for name, module in list(sys.modules.items())
        if (name == "pymongo" or name.startswith("pymongo.")) and hasattr(module, "_async_cond_wait")
    ]


def guard_condition_waits() -> None:
    """Make PyMongo's async condition waits keep their lock when cancelled (Python 3.11 only; idempotent).

    Why (issue 12: payment's client never reconnected after the store's kill -9; its log showed
    `RuntimeError: Lock is not acquired` from `Topology.select_servers`): PyMongo waits for a topology change
    (`select_servers`, every 0.5 s while no server answers) and for a pool slot with
    `asyncio.wait_for(condition.wait(), timeout)`. On Python 3.11 `wait_for` runs `condition.wait()` in a task
    of its own; when the timeout expires it cancels that task and waits for it to take the lock back. If the
    operation itself is cancelled during that wait (the readiness probe's 2 s bound on a ping, a handler
    cancelled by the consumer's stop), it leaves `async with lock` at once and releases a lock it does not
    hold: the release either fails or frees another task's hold, and the orphaned inner task takes the lock
    afterwards and keeps it for ever. Every later server selection (and the monitor's topology update) then
    waits on that lock for good: no connection, no store command, whatever the store does.
    """
    if sys.version_info >= (3, 12):
        return  # `asyncio.wait_for` awaits in the caller's task there: nothing to guard
    for module in _cond_wait_users():
        module._async_cond_wait = _cond_wait_in_this_task  # type: ignore[attr-defined]


def create_mongo_client(settings: ServiceSettings, commands: StoreCommands | None = None) -> AsyncMongoClient[Any]:
    guard_condition_waits()
    # No I/O here: the client connects on first use.
    return AsyncMongoClient(
        settings.mongo_uri.get_secret_value(),
        tz_aware=True,
        serverSelectionTimeoutMS=5000,
        appname=f"kasse-{settings.service_name}",
        event_listeners=[commands] if commands is not None else [],
    )
