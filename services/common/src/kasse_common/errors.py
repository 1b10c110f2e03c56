"""Errors a use case raises for a client mistake, and the one concurrency error. Plain Python (the
domain may raise them); kasse_common.http turns them into problem+json (RFC 9457) responses."""

from __future__ import annotations

from typing import Any


class KasseError(Exception):
    """Base of the errors a use case raises for a client mistake. Subclass with a status and a title."""

    status = 400
    title = "Bad request"

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra


class NotFound(KasseError):
    status = 404
    title = "Not found"


class Conflict(KasseError):
    status = 409
    title = "Conflict"


class Unprocessable(KasseError):
    status = 422
    title = "Unprocessable request"


class Unauthorized(KasseError):
    status = 401
    title = "Unauthorized"


class Forbidden(KasseError):
    status = 403
    title = "Forbidden"


class ConcurrencyError(Exception):
    """Someone else changed the document since it was read, or its guard failed: load again and retry.

    The one name for a lost optimistic-concurrency race in every service (the store raises it, use
    cases retry it with `kasse_common.retry.retry_on_conflict`). It is transient: a consumer retries
    it with backoff instead of dead-lettering, and an HTTP request that still loses answers 503
    with Retry-After.
    """


class AggregateNotYetKnown(Exception):
    """An event about an aggregate this service has not stored yet (it will arrive): park the event.

    A consumer parks the record instead of retrying or dead-lettering it, tries it again every
    `parking_retry_interval_s` (and at once when the service calls `consumer.unpark(aggregate_id)`),
    and dead-letters it only when the aggregate never arrived within `parking_max_age_s`.
    """
