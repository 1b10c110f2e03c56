"""Domain errors that carry their HTTP meaning, and problem+json (RFC 9457) responses."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

PROBLEM_JSON = "application/problem+json"


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


def problem(status: int, title: str, detail: str, instance: str | None = None, **extra: Any) -> JSONResponse:
    body: dict[str, Any] = {"type": "about:blank", "title": title, "status": status, "detail": detail}
    if instance:
        body["instance"] = instance
    body.update(extra)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def install_problem_handlers(app: FastAPI) -> None:
    @app.exception_handler(KasseError)
    async def _kasse_error(request: Request, exc: KasseError) -> JSONResponse:
        return problem(exc.status, exc.title, exc.detail, request.url.path, **exc.extra)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {
                "field": ".".join(str(p) for p in err.get("loc", ()) if p not in ("body",)) or "body",
                "message": err.get("msg", "invalid"),
                "type": err.get("type", "value_error"),
            }
            for err in exc.errors()
        ]
        detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
        return problem(422, "Invalid request", detail, request.url.path, errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        title = {404: "Not found", 405: "Method not allowed", 413: "Request too large"}.get(exc.status_code, "Error")
        return problem(exc.status_code, title, str(exc.detail), request.url.path)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Logged with its trace id; the client learns nothing internal.
        import logging

        logging.getLogger("kasse.http").exception("unhandled error", extra={"path": request.url.path})
        return problem(500, "Internal error", "The server failed; the error was logged.", request.url.path)
