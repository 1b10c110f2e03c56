"""Deliveries: one event to one endpoint, its attempts, and when to try again. Plain rules."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from enum import StrEnum

from tenacity import RetryCallState, wait_exponential


class DeliveryStatus(StrEnum):
    PENDING = "pending"  # waiting for its (next) attempt, or for an earlier delivery of its key
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # failed on every attempt of the schedule: the endpoint was disabled


@dataclass(frozen=True)
class RetrySchedule:
    """Exponential: after failed attempt n, wait initial * base^(n-1), at most `max_delay`.

    The waits come from tenacity's `wait_exponential` (the same rule the kit's consumers use), so
    there is one definition of "exponential backoff" in the code base.
    """

    max_attempts: int
    initial: timedelta
    base: float
    max_delay: timedelta

    def delay_after(self, attempt: int) -> timedelta:
        """How long to wait after failed attempt `attempt` (1-based)."""
        wait = wait_exponential(
            multiplier=self.initial.total_seconds(), exp_base=self.base, max=self.max_delay.total_seconds()
        )
        state = RetryCallState(retry_object=None, fn=None, args=(), kwargs={})  # type: ignore[arg-type]
        state.attempt_number = attempt
        return timedelta(seconds=wait(state))

    def next_attempt_at(self, attempt: int, now: datetime, retry_after: timedelta | None = None) -> datetime | None:
        """When to try again after failed attempt `attempt`, or None when the schedule is used up.
        A `Retry-After` the receiver sent is honoured (never earlier than it asked), up to `max_delay`."""
        if attempt >= self.max_attempts:
            return None
        delay = self.delay_after(attempt)
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.max_delay))
        return now + delay

    def total(self) -> timedelta:
        return sum((self.delay_after(n) for n in range(1, self.max_attempts)), timedelta())


def parse_retry_after(value: str | None, now: datetime) -> timedelta | None:
    """`Retry-After: <seconds>` or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return timedelta(seconds=int(value))
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(when - now, timedelta())


@dataclass(frozen=True)
class AttemptResult:
    """What one HTTP attempt gave: a status code, or an error (network, timeout, refused target)."""

    started_at: datetime
    latency_ms: float
    status_code: int | None = None
    error: str = ""
    response_excerpt: str = ""
    retry_after: timedelta | None = None

    @property
    def succeeded(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300

    def to_document(self) -> dict[str, object]:
        return {
            "at": self.started_at,
            "status_code": self.status_code,
            "latency_ms": round(self.latency_ms, 2),
            "error": self.error,
            "response": self.response_excerpt,
        }
