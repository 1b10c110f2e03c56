"""The one retry policy of every Kasse service: which errors are transient, and backoff with jitter.

Built on tenacity: maintained, asyncio-native, and its stop/wait/retry parts compose, which we need
twice over — for calls retried in place (`retry_on_conflict`, `retry_transient`) and for the bare
delay of a retry that is scheduled elsewhere (a paused Kafka partition, payment's `retry_at` kept in
the store), where `backoff_delay` reuses tenacity's jittered exponential wait. (stamina is tenacity
with fixed opinions; it has no public way to get the delay alone.)

- `is_transient(exc)`: the store or the broker is unavailable, or another writer won a race
  (`ConcurrencyError`): trying again later can succeed. Everything else is not transient.
- `retry_on_conflict(attempt, what)`: optimistic concurrency — run load-decide-save again when
  another writer won; short jittered pauses so competing writers spread out.
- `retry_transient(call, within_s=…)`: a call that may fail while a dependency is briefly away.
- `backoff_delay(n, initial_s=…, max_s=…)`: the n-th delay (exponential, full jitter).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from aiokafka.errors import KafkaConnectionError, KafkaError, KafkaTimeoutError
from pymongo.errors import ConnectionFailure, PyMongoError
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    stop_any,
    stop_never,
    wait_random_exponential,
)
from tenacity.stop import stop_base

from kasse_common.errors import ConcurrencyError

log = logging.getLogger(__name__)

T = TypeVar("T")

# Attempts a use case makes at one load-decide-save before its caller sees the ConcurrencyError
# (a consumer then retries the whole event with backoff; HTTP answers 503 with Retry-After).
CONFLICT_ATTEMPTS = 50


def _transient_alone(exc: BaseException) -> bool:
    if isinstance(exc, ConcurrencyError | ConnectionFailure | KafkaConnectionError | KafkaTimeoutError):
        return True  # pymongo's AutoReconnect, NetworkTimeout, ServerSelectionTimeoutError are ConnectionFailures
    if isinstance(exc, PyMongoError) and exc.has_error_label("RetryableWriteError"):
        return True
    if isinstance(exc, KafkaError) and exc.retriable:
        return True  # not leader, request timed out, coordinator moving, …
    # The OS's refusals and asyncio's timeouts around a call to either.
    return isinstance(exc, TimeoutError | ConnectionError)


def is_transient(exc: BaseException) -> bool:
    """True when trying again later can succeed: a dependency is unavailable, or a race was lost.

    Follows `raise … from exc` chains, so an adapter's own error wrapping a pymongo one counts too.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if _transient_alone(current):
            return True
        seen.add(id(current))
        current = current.__cause__
    return False


def backoff_delay(attempt: int, *, initial_s: float, max_s: float) -> float:
    """The delay before retry number `attempt` (1-based): random in [0, min(max, initial·2^(n-1))]."""
    state = RetryCallState(retry_object=None, fn=None, args=(), kwargs={})  # type: ignore[arg-type]
    state.attempt_number = max(1, attempt)
    return float(wait_random_exponential(multiplier=initial_s, max=max_s)(state))


def _log_retry(what: str) -> Callable[[RetryCallState], None]:
    def before_sleep(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome is not None else None
        log.warning(
            "transient failure, retrying",
            extra={
                "what": what,
                "attempt": state.attempt_number,
                "delay_s": round(state.upcoming_sleep, 3),
                "error": repr(error)[:300],
            },
        )

    return before_sleep


async def retry_transient(
    call: Callable[[], Awaitable[T]],
    *,
    what: str,
    attempts: int | None = None,
    within_s: float | None = None,
    initial_s: float = 0.1,
    max_s: float = 5.0,
    retry_on: Callable[[BaseException], bool] = is_transient,
) -> T:
    """Await `call()`, again after a jittered exponential pause while it fails with a retryable error.

    Stops after `attempts` calls or `within_s` seconds (whichever first; neither = forever, which only
    a loop that is cancelled at shutdown may use) and re-raises the last error. Other errors at once.
    """
    stops: list[stop_base] = []

    def retryable(exc: BaseException) -> bool:
        # tenacity catches BaseException: without this, a handler's custom predicate ("retry anything
        # not transient") retried a CancelledError, so a consumer the watchdog cancelled went on handling
        # its record beside the restarted one (make chaos, catalog: an OrderPlaced raced itself).
        return isinstance(exc, Exception) and retry_on(exc)

    if attempts is not None:
        stops.append(stop_after_attempt(attempts))
    if within_s is not None:
        stops.append(stop_after_delay(within_s))
    retrying = AsyncRetrying(
        stop=stop_any(*stops) if stops else stop_never,
        wait=wait_random_exponential(multiplier=initial_s, max=max_s),
        retry=retry_if_exception(retryable),
        before_sleep=_log_retry(what),
        reraise=True,
    )
    return await retrying(call)


async def retry_on_conflict(attempt: Callable[[], Awaitable[T]], what: str, *, attempts: int = CONFLICT_ATTEMPTS) -> T:
    """Optimistic concurrency: run `attempt` (load, decide, save) again when another writer won.

    After `attempts` lost races the ConcurrencyError propagates: a consumer retries the event later,
    an HTTP request answers 503 with Retry-After.
    """
    retrying = AsyncRetrying(
        stop=stop_after_attempt(attempts),
        # Jittered and growing, capped low: competing writers spread out instead of colliding again.
        wait=wait_random_exponential(multiplier=0.002, max=0.05),
        retry=retry_if_exception(lambda exc: isinstance(exc, ConcurrencyError)),
        reraise=True,
    )
    try:
        return await retrying(attempt)
    except ConcurrencyError as exc:
        raise ConcurrencyError(f"{what}: still contended after {attempts} attempts; try again") from exc
