"""Short-lived, bounded caches of answers the same for every shopper (catalog reads, shipping quotes,
recommendations, reviews): a page that shows them need not ask the services on every request.

`cachetools.TTLCache` bounds the size and the age; `ReadThrough` adds what it lacks for asyncio:
concurrent misses of one key share a single call to the service (no stampede when a popular entry
expires under load), and failures are never kept (the next request asks again, so a degraded block
recovers as soon as its service does).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

from cachetools import TTLCache

T = TypeVar("T")


class ReadThrough(Generic[T]):
    def __init__(self, maxsize: int, ttl_s: float) -> None:
        self.entries: TTLCache[Hashable, T] = TTLCache(maxsize=maxsize, ttl=ttl_s)
        self._loading: dict[Hashable, asyncio.Future[T]] = {}
        self.hits = 0
        self.misses = 0

    async def get(self, key: Hashable, load: Callable[[], Awaitable[T]]) -> T:
        try:
            value = self.entries[key]
        except KeyError:
            pass
        else:
            self.hits += 1
            return value
        pending = self._loading.get(key)
        if pending is not None:
            # Shielded: one waiter cancelled (its client went away) must not cancel the others' call.
            return await asyncio.shield(pending)
        self.misses += 1
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._loading[key] = future
        try:
            value = await load()
        except asyncio.CancelledError:
            future.cancel()
            raise
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" warning when nobody else waited
            raise
        else:
            self.entries[key] = value
            future.set_result(value)
            return value
        finally:
            del self._loading[key]

    def peek(self, key: Hashable) -> T | None:
        return self.entries.get(key)

    def put(self, key: Hashable, value: T) -> None:
        self.entries[key] = value

    def forget(self, key: Hashable) -> None:
        self.entries.pop(key, None)
