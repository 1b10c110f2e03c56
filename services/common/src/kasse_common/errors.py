"""Errors a use case raises for a client mistake. Plain Python (the domain may raise them);
kasse_common.http turns them into problem+json (RFC 9457) responses with their status."""

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
