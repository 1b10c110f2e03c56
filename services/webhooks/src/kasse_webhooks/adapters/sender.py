"""Outbound HTTP with the safety rules: resolved addresses checked at every attempt (SSRF), the
connection pinned to the address that was checked, no redirects, capped response bodies, timeouts."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from datetime import UTC, datetime
from urllib.parse import urlsplit, urlunsplit

import httpx

from kasse_common.errors import Unprocessable
from kasse_webhooks.domain.deliveries import AttemptResult, parse_retry_after
from kasse_webhooks.domain.endpoints import Network, address_allowed


class RefusedTarget(Exception):
    """The URL resolves to an address endpoints may not reach."""


async def resolve_allowed(host: str, port: int, allowed: list[Network]) -> list[str]:
    """The host's addresses, all of which must be allowed (one bad answer refuses the whole host:
    a resolver that mixes a public and a private address must not be a way in)."""
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise RefusedTarget(f"cannot resolve {host}: {exc.strerror}") from exc
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    refused = [a for a in addresses if not address_allowed(a, allowed)]
    if refused or not addresses:
        raise RefusedTarget(
            f"{host} resolves to {', '.join(refused) or 'nothing'}: private, loopback, link-local and other "
            "non-public addresses are refused unless allow-listed (KASSE_WEBHOOKS_ALLOWED_NETWORKS)"
        )
    return addresses


def _target(url: str) -> tuple[str, int, str]:
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return host, port, parts.scheme


class HttpSender:
    def __init__(
        self,
        allowed: list[Network],
        *,
        connect_timeout: float,
        request_timeout: float,
        excerpt_bytes: int,
        max_connections: int = 200,
    ) -> None:
        self.allowed = allowed
        self.request_timeout = request_timeout
        self.excerpt_bytes = excerpt_bytes
        self.client = httpx.AsyncClient(
            follow_redirects=False,  # a 3xx is a failed attempt: a redirect could point anywhere
            timeout=httpx.Timeout(request_timeout, connect=connect_timeout),
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
            trust_env=False,  # no proxy from the environment: the address we checked is the one we reach
        )

    async def check(self, url: str) -> None:
        """At registration: refuse a URL that points where endpoints may not go."""
        host, port, _ = _target(url)
        try:
            await resolve_allowed(host, port, self.allowed)
        except RefusedTarget as exc:
            raise Unprocessable(str(exc), field="url") from exc

    async def send(self, url: str, headers: dict[str, str], body: bytes) -> AttemptResult:
        started_at = datetime.now(UTC)
        t0 = time.perf_counter()

        def result(**kwargs: object) -> AttemptResult:
            return AttemptResult(started_at=started_at, latency_ms=(time.perf_counter() - t0) * 1000, **kwargs)  # type: ignore[arg-type]

        host, port, scheme = _target(url)
        try:
            addresses = await resolve_allowed(host, port, self.allowed)
        except RefusedTarget as exc:
            return result(error=f"refused: {exc}")
        # Connect to the address just checked (DNS could answer differently a moment later), while
        # the Host header and TLS (SNI and certificate check) still use the name.
        ip = ipaddress.ip_address(addresses[0].split("%", 1)[0])
        netloc = f"[{ip}]:{port}" if ip.version == 6 else f"{ip}:{port}"
        parts = urlsplit(url)
        pinned = urlunsplit((scheme, netloc, parts.path or "/", parts.query, ""))
        request_headers = {**headers, "host": parts.netloc.rsplit("@", 1)[-1]}
        extensions = {"sni_hostname": host} if scheme == "https" else {}
        try:
            async with asyncio.timeout(self.request_timeout):  # the whole attempt, a slow body included
                request = self.client.build_request(
                    "POST", pinned, content=body, headers=request_headers, extensions=extensions
                )
                response = await self.client.send(request, stream=True)
                try:
                    excerpt = bytearray()
                    async for chunk in response.aiter_raw():
                        excerpt.extend(chunk[: self.excerpt_bytes - len(excerpt)])
                        if len(excerpt) >= self.excerpt_bytes:
                            break  # read no more than we keep
                finally:
                    await response.aclose()
        except TimeoutError:
            return result(error=f"timeout after {self.request_timeout:g} s")
        except httpx.TimeoutException as exc:
            return result(error=f"timeout: {type(exc).__name__}")
        except httpx.HTTPError as exc:
            return result(error=f"{type(exc).__name__}: {exc}"[:500])
        return result(
            status_code=response.status_code,
            response_excerpt=excerpt.decode("utf-8", errors="replace"),
            retry_after=parse_retry_after(response.headers.get("retry-after"), datetime.now(UTC)),
        )

    async def aclose(self) -> None:
        await self.client.aclose()
