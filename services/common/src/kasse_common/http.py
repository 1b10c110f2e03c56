"""HTTP plumbing shared by every service: problem+json errors, body size limit, readiness."""

from __future__ import annotations

import hmac
import json
import logging
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any

from aiokafka.errors import KafkaError
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import AwareDatetime, BaseModel, BeforeValidator, Field, SecretStr
from pymongo.errors import PyMongoError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from kasse_common.errors import ConcurrencyError, Forbidden, KasseError, Unauthorized
from kasse_common.retry import is_transient

PROBLEM_JSON = "application/problem+json"

# -- Input types exact to their OpenAPI description (lax pydantic accepts more than the schema says) ----
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")


def _rfc3339(value: Any) -> Any:
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str) or not _RFC3339.match(value):
        raise ValueError("expected an RFC 3339 date-time with its offset, e.g. 2026-12-24T18:00:00Z")
    return value


DateTimeIn = Annotated[AwareDatetime, BeforeValidator(_rfc3339)]
"""A date-time input (body or query) as `format: date-time` says: an RFC 3339 string with offset. Pydantic
alone reads a number (or a string of digits) as Unix seconds and 'false' as nothing at all."""


def _json_integer(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("expected an integer (a JSON number, not a string or a boolean)")
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError("expected a whole number")
        return int(value)  # JSON Schema: 91.0 is an integer
    return value


JSON_INTEGER = BeforeValidator(_json_integer)
"""Last in a JSON body integer's metadata, after its constraints (so the schema keeps minimum/maximum):
`Annotated[int, Field(ge=1), JSON_INTEGER]` takes what JSON Schema calls an integer (91 and 91.0), never
`true` or "5", which lax pydantic would turn into a number."""


class BodySizeLimit:
    """Refuses bodies larger than `max_bytes` with 413, whether or not Content-Length is sent."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(scope, send)
            return
        received = 0
        too_large = False
        started = False

        async def limited_receive() -> Message:
            nonlocal received, too_large
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    too_large = True
                    raise _TooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooLarge:
            if not started:
                await self._refuse(scope, send)

    async def _refuse(self, scope: Scope, send: Send) -> None:
        body = json.dumps(
            {
                "type": "about:blank",
                "title": "Request too large",
                "status": 413,
                "detail": f"the request body exceeds {self.max_bytes} bytes",
                "instance": scope.get("path", ""),
            }
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", PROBLEM_JSON.encode()), (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})


class _TooLarge(Exception):
    pass


def trust_proxies(app: Any, proxies: list[str]) -> None:
    """Believe X-Forwarded-For only from these peers (IPs/CIDRs; KASSE_TRUSTED_PROXIES), walked right
    to left so a client cannot prepend its own; without any, request.client is the socket's address.
    Serve with kasse_common.runtime.serve, which keeps uvicorn's own handling (trusting 127.0.0.1) off."""
    if proxies:
        app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=proxies)


def readiness_body(checks: dict[str, str]) -> dict[str, Any]:
    return {"status": "ready" if all(v == "ok" for v in checks.values()) else "not ready", "checks": checks}


# Seconds a client should wait before trying again: a lost write race clears at once, an unreachable
# store or broker takes a while (a restart is 10-30 s).
RETRY_AFTER_CONTENDED_S = 1
RETRY_AFTER_UNAVAILABLE_S = 5


def problem(
    status: int,
    title: str,
    detail: str,
    instance: str | None = None,
    *,
    retry_after_s: int | None = None,
    extra_headers: Mapping[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body: dict[str, Any] = {"type": "about:blank", "title": title, "status": status, "detail": detail}
    if instance:
        body["instance"] = instance
    body.update(extra)
    headers: dict[str, str] = dict(extra_headers or {})
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    if retry_after_s is not None:
        headers["Retry-After"] = str(retry_after_s)
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers or None)


def unavailable(exc: BaseException, instance: str | None) -> JSONResponse:
    """503 + Retry-After for an error that passes: a lost write race, the store or broker away."""
    if isinstance(exc, ConcurrencyError):
        return problem(
            503,
            "Busy",
            "Others changed the same data at the same moment; try again.",
            instance,
            retry_after_s=RETRY_AFTER_CONTENDED_S,
        )
    logging.getLogger("kasse.http").warning(
        "dependency unavailable", extra={"path": instance, "error": repr(exc)[:300]}
    )
    return problem(
        503,
        "Service unavailable",
        "A service this request needs is unavailable for a moment; try again.",
        instance,
        retry_after_s=RETRY_AFTER_UNAVAILABLE_S,
    )


def _field_name(err: dict[str, Any]) -> str:
    """`lines.0.quantity`, `header.x-session-id`; the body itself when it is not valid JSON at all."""
    if err.get("type") == "json_invalid":
        return "body"
    loc = list(err.get("loc", ()))
    if loc[:1] == ["body"]:
        loc = loc[1:]
    return ".".join(str(p) for p in loc) or "body"


def install_problem_handlers(app: FastAPI) -> None:
    @app.exception_handler(KasseError)
    async def _kasse_error(request: Request, exc: KasseError) -> JSONResponse:
        retry_after_s = getattr(exc, "retry_after_s", None)  # TooManyRequests (kasse_common.ratelimit)
        return problem(exc.status, exc.title, exc.detail, request.url.path, retry_after_s=retry_after_s, **exc.extra)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {
                "field": _field_name(err),
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
        # Keep what the exception says in headers: Allow on a 405 (RFC 9110), WWW-Authenticate, …
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = allowed_methods(request)
        return problem(exc.status_code, title, str(exc.detail), request.url.path, extra_headers=headers)

    async def _dependency_error(request: Request, exc: Exception) -> JSONResponse:
        if is_transient(exc):
            return unavailable(exc, request.url.path)
        return await _unexpected(request, exc)

    # The store or the broker away, or a write race lost for good: 503 with Retry-After, never 500.
    for transient in (ConcurrencyError, PyMongoError, KafkaError, TimeoutError, ConnectionError):
        app.add_exception_handler(transient, _dependency_error)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        if is_transient(exc):  # wrapped by an adapter (`raise … from` a pymongo error)
            return unavailable(exc, request.url.path)
        # Logged with its trace id; the client learns nothing internal.
        logging.getLogger("kasse.http").exception("unhandled error", extra={"path": request.url.path})
        return problem(500, "Internal error", "The server failed; the error was logged.", request.url.path)


def allowed_methods(request: Request) -> str:
    """Every method some route serves on this path. Starlette's 405 names only the first route whose path
    matched; two routes on one path (GET and PUT as separate handlers) must both be named (RFC 9110)."""
    methods: set[str] = set()
    for route in request.app.router.routes:
        route_methods = getattr(route, "methods", None)
        if route_methods and route.matches(request.scope)[0] is not Match.NONE:  # PARTIAL: path only
            methods |= set(route_methods)
    return ", ".join(sorted(methods))


def bearer_guard(expected: SecretStr | None, *, setting: str, purpose: str = "the admin API") -> Any:
    """A FastAPI dependency: 401 without a bearer token, 403 with a wrong one (compared in constant time).

    `expected` unset disables the guarded routes (403 saying which setting enables them): an admin API
    is never open by accident.
    """
    scheme = HTTPBearer(auto_error=False, description=setting)

    # A default rather than Annotated[...]: annotations are strings here and `scheme` is a local.
    async def require_token(credentials: HTTPAuthorizationCredentials | None = Depends(scheme)) -> None:  # noqa: B008
        if credentials is None or not credentials.credentials:
            raise Unauthorized(f"{purpose} needs 'Authorization: Bearer <token>'")
        secret = expected.get_secret_value() if expected is not None else ""
        if not secret:
            raise Forbidden(f"{purpose} is disabled: {setting} is not set")
        if not hmac.compare_digest(credentials.credentials.encode(), secret.encode()):
            raise Forbidden("the token is not valid")

    return require_token


class FieldProblem(BaseModel):
    field: str
    message: str
    type: str


class Problem(BaseModel):
    """RFC 9457 problem details, as every Kasse service answers a client mistake (OpenAPI model)."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    instance: str | None = None
    errors: list[FieldProblem] | None = Field(None, description="With 422: one entry per invalid field")


PROBLEM_DESCRIPTIONS = {
    400: "Bad request",
    401: "No bearer token",
    403: "Wrong bearer token",
    404: "Not found",
    409: "Conflicts with the current state (the detail says why)",
    413: "Body too large",
    422: "Invalid request: one entry per invalid field in `errors`",
    429: "Too many requests (an abuse limit); Retry-After says in how many seconds to try again",
    503: "A dependency is unavailable",
}


def problem_responses(*statuses: int, descriptions: dict[int, str] | None = None) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` entries for the problem+json errors a route can answer."""
    texts = {**PROBLEM_DESCRIPTIONS, **(descriptions or {})}
    return {
        status: {"model": Problem, "description": texts[status], "content": {PROBLEM_JSON: {}}} for status in statuses
    }


# What the kit itself can answer on a route, whatever the route declares (install_problem_handlers,
# BodySizeLimit, bearer_guard, the identity check): the contract has to say so.
KIT_PROBLEM_DESCRIPTIONS = {
    400: "The body cannot be read (not UTF-8, not parseable)",
    401: "No or an invalid bearer token",
    403: "The token does not grant this",
    413: "Body too large",
    422: "Invalid request: one entry per invalid field in `errors`",
    503: "A dependency is unavailable for a moment; Retry-After says when to try again",
}
OPTIONAL_BEARER = "CustomerToken"  # kasse_common.identity's scheme: a customer's token, none for a guest
OWN_ERROR_BODY = "x-kasse-own-error-body"  # on a `responses=` entry: keep its content, it is no problem+json
_METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")


def problem_contract(doc: dict[str, Any]) -> dict[str, Any]:
    """Make an OpenAPI document say what the kit answers: every error response is
    `application/problem+json` with the Problem schema (FastAPI documents `application/json` and its own
    422 model), a body-taking route can answer 400, 413 and 422, a route with parameters 422, a guarded
    route 401 (and 403 for the admin/internal bearer guard), and every route 503. Changes `doc` in place."""
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    problem_schema = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    for name, schema in problem_schema.pop("$defs", {}).items():
        schemas[name] = schema
    schemas["Problem"] = problem_schema
    problem_content = {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}}
    bearer_schemes = {
        name
        for name, scheme in doc["components"].get("securitySchemes", {}).items()
        if scheme.get("type") == "http" and scheme.get("scheme", "").lower() == "bearer" and name != OPTIONAL_BEARER
    }
    for item in doc.get("paths", {}).values():
        for method, operation in item.items():
            if method not in _METHODS:
                continue
            if any(OPTIONAL_BEARER in requirement for requirement in operation.get("security", [])):
                # No token is a guest, not a refusal: say so with the empty requirement (OpenAPI 3).
                if {} not in operation["security"]:
                    operation["security"].append({})
            responses: dict[str, Any] = operation.setdefault("responses", {})
            kit_statuses = [503]
            if "requestBody" in operation:
                kit_statuses += [400, 413, 422]
            if operation.get("parameters"):
                kit_statuses.append(422)
            schemes = {name for requirement in operation.get("security", []) for name in requirement}
            if schemes:
                kit_statuses.append(401)
            if schemes & bearer_schemes:
                kit_statuses.append(403)
            for code in kit_statuses:
                responses.setdefault(str(code), {"description": KIT_PROBLEM_DESCRIPTIONS[code]})
            for key, response in responses.items():
                if response.pop(OWN_ERROR_BODY, False):
                    continue  # e.g. /readyz: its 503 is the readiness report, not a problem
                if key == "default" or int(key) >= 400:
                    response["content"] = dict(problem_content)
                    if key == "422":
                        response["description"] = KIT_PROBLEM_DESCRIPTIONS[422]
    # FastAPI's own 422 models are replaced by Problem everywhere.
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    return doc


def document_problems(app: FastAPI) -> None:
    """Serve the app's OpenAPI document through problem_contract (computed once, like FastAPI's)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if not getattr(app.state, "problem_contract", False):
            problem_contract(generate())
            app.state.problem_contract = True
        return generate()

    app.openapi = openapi  # type: ignore[method-assign]
