"""HTTP clients for the services behind the shop: one pooled httpx client per service, with timeouts.

Every call carries the shopper's session (X-Session-Id) and IP (X-Forwarded-For: the storefront is a
proxy for the shopper, and services trust that header only from proxies they are configured to trust).
A service that cannot be reached, times out or fails with a 5xx raises `BackendUnavailable`; a 4xx
answer raises `BackendRefused` with the problem+json body, so pages can show why.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import httpx


@dataclass(frozen=True)
class Shopper:
    session_id: str
    client_ip: str | None = None

    def headers(self) -> dict[str, str]:
        out = {"X-Session-Id": self.session_id}
        if self.client_ip:
            out["X-Forwarded-For"] = self.client_ip
        return out


class BackendUnavailable(Exception):
    def __init__(self, service: str, detail: str) -> None:
        super().__init__(f"{service}: {detail}")
        self.service = service


@dataclass
class BackendRefused(Exception):
    service: str
    status: int
    problem: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.service} answered {self.status}: {self.detail}"

    @property
    def detail(self) -> str:
        return str(self.problem.get("detail") or self.problem.get("title") or "")

    @property
    def field_errors(self) -> dict[str, str]:
        """422 validation errors by field (the kit's problem+json: errors[].field / message)."""
        out: dict[str, str] = {}
        for err in self.problem.get("errors") or []:
            if isinstance(err, dict) and err.get("field"):
                out.setdefault(str(err["field"]), str(err.get("message", "")))
        return out


class Backend:
    """One service's pooled client."""

    def __init__(
        self,
        name: str,
        base_url: str,
        timeout_s: float,
        max_connections: int,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.name = name
        self.client = httpx.AsyncClient(
            base_url=base_url,
            transport=transport,
            timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 1.0)),
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
        )

    async def call(
        self,
        method: str,
        path: str,
        shopper: Shopper | None = None,
        *,
        params: dict[str, Any] | None = None,
        json: Any = None,
        headers: dict[str, str] | None = None,
        timeout: float | None = None,
        content: bytes | None = None,
    ) -> Any:
        all_headers = {**(shopper.headers() if shopper else {}), **(headers or {})}
        clean = {k: v for k, v in (params or {}).items() if v is not None and v != ""}
        try:
            response = await self.client.request(
                method,
                path,
                params=clean,
                json=json,
                content=content,
                headers=all_headers,
                timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT,
            )
        except httpx.HTTPError as exc:
            raise BackendUnavailable(self.name, f"{type(exc).__name__} on {method} {path}") from exc
        if response.status_code >= 500:
            raise BackendUnavailable(self.name, f"{response.status_code} on {method} {path}")
        if response.status_code >= 400:
            try:
                problem = response.json()
            except ValueError:
                problem = {"detail": response.text[:200]}
            raise BackendRefused(self.name, response.status_code, problem if isinstance(problem, dict) else {})
        if not response.content:
            return None
        return response.json()

    async def download(
        self, path: str, shopper: Shopper | None = None, *, headers: dict[str, str] | None = None
    ) -> bytes:
        """A file the service renders (an invoice PDF): its bytes, with the same errors as `call`."""
        all_headers = {**(shopper.headers() if shopper else {}), **(headers or {})}
        try:
            response = await self.client.get(path, headers=all_headers)
        except httpx.HTTPError as exc:
            raise BackendUnavailable(self.name, f"{type(exc).__name__} on GET {path}") from exc
        if response.status_code >= 500:
            raise BackendUnavailable(self.name, f"{response.status_code} on GET {path}")
        if response.status_code >= 400:
            raise BackendRefused(self.name, response.status_code, {"detail": response.text[:200]})
        return response.content

    async def close(self) -> None:
        await self.client.aclose()


class Backends:
    def __init__(
        self,
        *,
        catalog: str,
        cart: str,
        payment: str,
        shipping: str,
        timeout_s: float,
        pool: int,
        transport: httpx.AsyncBaseTransport | None = None,  # tests fake the services at the HTTP boundary
    ) -> None:
        self.catalog = Backend("catalog", catalog, timeout_s, pool, transport)
        self.cart = Backend("cart", cart, timeout_s, pool, transport)
        self.payment = Backend("payment", payment, timeout_s, pool, transport)
        self.shipping = Backend("shipping", shipping, timeout_s, pool, transport)

    async def close(self) -> None:
        for backend in (self.catalog, self.cart, self.payment, self.shipping):
            await backend.close()
