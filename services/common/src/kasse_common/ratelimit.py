"""Abuse limits: request rate limits per client IP and per key, and a cap on concurrent streams.

Uses the maintained `limits` library with in-memory moving-window storage: counts live in ONE
service instance, so with N replicas behind a load balancer a client gets up to N times the limit
(good enough against code guessing and floods; a shared storage such as Redis would make it exact).
The client is `request.client.host`, which is the socket's address unless the peer is a configured
trusted proxy (KASSE_TRUSTED_PROXIES, `kasse_common.http.trust_proxies`) - never a raw header.

A limit is a `limits` string such as "10/minute" or "100 per hour"; None switches it off.
A limited request raises `TooManyRequests` -> 429 problem+json with Retry-After (seconds).
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterable, Callable
from typing import Annotated, Any

from fastapi import Request
from fastapi.responses import StreamingResponse
from limits import RateLimitItem, parse
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter
from pydantic import AfterValidator

from kasse_common.errors import KasseError


def _valid_rate(rate: str | None) -> str | None:
    if rate:
        parse(rate)  # ValueError naming the bad string: the settings refuse to load
    return rate


# A settings field holding a rate ("10/minute", "100 per hour"), checked when the settings load; None: off.
Rate = Annotated[str | None, AfterValidator(_valid_rate)]


class TooManyRequests(KasseError):
    status = 429
    title = "Too many requests"

    def __init__(self, detail: str, retry_after_s: int) -> None:
        super().__init__(detail)
        self.retry_after_s = retry_after_s


def client_ip(request: Request) -> str:
    """The client as the kit's trusted-proxy handling decided it (socket address otherwise)."""
    return request.client.host if request.client else "unknown"


def path_param(name: str) -> Callable[[Request], str]:
    """Key function: a path parameter (e.g. the cart id)."""
    return lambda request: str(request.path_params.get(name, ""))


class RateLimiter:
    """One per service instance (app state); `limit(...)` makes the FastAPI dependencies.

    `clock` must be the clock the storage uses (time.time); tests replace both together."""

    def __init__(self, clock: Callable[[], float] = time.time, *, enabled: bool = True) -> None:
        self.enabled = enabled
        self._limiter = MovingWindowRateLimiter(MemoryStorage())
        self._clock = clock

    def hit(self, name: str, limit: RateLimitItem, key: str) -> None:
        """Count one request of `key` against `limit` (named `name`); raise TooManyRequests over it."""
        if self._limiter.hit(limit, name, key):
            return
        reset_at, _ = self._limiter.get_window_stats(limit, name, key)
        retry_after = max(1, math.ceil(reset_at - self._clock()))
        raise TooManyRequests(f"rate limit {limit} for {name} reached; try again in {retry_after} s", retry_after)

    def limit(
        self, name: str, rate: str | None, key: Callable[[Request], str] = client_ip
    ) -> Callable[[Request], None]:
        """A FastAPI dependency counting each request by `key` (default: the client IP) against `rate`.
        `rate` None: no limit. Apply several for several keys (per client and per cart, say)."""
        parsed = parse(rate) if rate and self.enabled else None

        def dependency(request: Request) -> None:
            if parsed is not None:
                self.hit(name, parsed, key(request))

        return dependency


class ConnectionCap:
    """At most `max_open` concurrent long-lived responses (SSE streams) per instance; None: no cap."""

    def __init__(self, max_open: int | None, retry_after_s: int = 5) -> None:
        self.max_open = max_open
        self.retry_after_s = retry_after_s
        self.open = 0

    def acquire(self) -> None:
        """Take a slot (call before the response starts) or raise TooManyRequests; `release` in finally."""
        if self.max_open is not None and self.open >= self.max_open:
            raise TooManyRequests(f"at most {self.max_open} concurrent streams are served", self.retry_after_s)
        self.open += 1

    def release(self) -> None:
        self.open = max(0, self.open - 1)

    def stream(self, content: AsyncIterable[bytes], **kwargs: Any) -> StreamingResponse:
        """A StreamingResponse holding a slot (or TooManyRequests): released when the response ends
        however it ends, even if the client left before the first chunk."""
        self.acquire()
        return _CappedStream(self, content, **kwargs)


class _CappedStream(StreamingResponse):
    def __init__(self, cap: ConnectionCap, content: AsyncIterable[bytes], **kwargs: Any) -> None:
        super().__init__(content, **kwargs)
        self._cap = cap

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._cap.release()
