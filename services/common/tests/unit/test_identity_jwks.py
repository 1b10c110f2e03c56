"""Customer tokens checked against a JWKS URL: a real JWK Set served over HTTP on 127.0.0.1.

The JWKS client's clock (PyJWT reads time.monotonic for the cached set's age and the refetch
cooldown) is replaced by one the test moves, so caching and rotation are shown without waiting.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import jwt.api_jwk
import jwt.jwk_set_cache
import jwt.jwks_client
import pytest
from fastapi import Depends, FastAPI

from kasse_common.errors import Unauthorized
from kasse_common.http import install_problem_handlers
from kasse_common.identity import JWKS_LIFESPAN_S, JWKS_REFRESH_COOLDOWN_S, CustomerVerifier, proven_customer
from kasse_testkit.identity import TestIdentityProvider

pytestmark = pytest.mark.unit


class JwksServer:
    """Serves `self.document` at /jwks.json and counts the fetches."""

    def __init__(self) -> None:
        self.document: dict[str, Any] = {"keys": []}
        self.fetches = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.fetches += 1
                body = json.dumps(server.document).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}/jwks.json"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return self.now


@pytest.fixture
def jwks_server() -> Iterator[JwksServer]:
    server = JwksServer()
    yield server
    server.close()


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(jwt.jwks_client, "time", fake)
    monkeypatch.setattr(jwt.jwk_set_cache, "time", fake)
    monkeypatch.setattr(jwt.api_jwk, "time", fake)  # when a fetched set was stored
    return fake


async def test_a_token_signed_with_a_key_of_the_jwks_names_the_customer_and_the_set_is_fetched_once(
    jwks_server: JwksServer, clock: Clock
) -> None:
    provider = TestIdentityProvider()
    jwks_server.document = provider.jwks()
    verifier = CustomerVerifier(jwks_url=jwks_server.url, issuer=provider.issuer)

    assert await verifier.customer_id(provider.token("cust-1")) == "cust-1"
    assert await verifier.customer_id(provider.token("cust-2")) == "cust-2"
    assert jwks_server.fetches == 1, "the key set is cached"

    clock.now += JWKS_LIFESPAN_S + 1
    assert await verifier.customer_id(provider.token("cust-3")) == "cust-3"
    assert jwks_server.fetches == 2, "an expired set is fetched again"


async def test_a_token_from_another_key_under_a_known_kid_is_refused(jwks_server: JwksServer, clock: Clock) -> None:
    provider = TestIdentityProvider()
    jwks_server.document = provider.jwks()
    forger = TestIdentityProvider(issuer=provider.issuer, kid=provider.kid)  # same kid, its own key
    verifier = CustomerVerifier(jwks_url=jwks_server.url, issuer=provider.issuer)

    with pytest.raises(Unauthorized, match="not valid: Signature verification failed"):
        await verifier.customer_id(forger.token("cust-1"))


async def test_a_rotated_key_is_fetched_when_a_token_names_it_at_most_once_per_cooldown(
    jwks_server: JwksServer, clock: Clock
) -> None:
    provider = TestIdentityProvider()
    old_key = provider.jwk()
    jwks_server.document = provider.jwks()
    verifier = CustomerVerifier(jwks_url=jwks_server.url, issuer=provider.issuer)
    assert await verifier.customer_id(provider.token("cust-1")) == "cust-1"
    old_token = provider.token("cust-old")

    provider.rotate()  # the provider publishes the new key beside the old one
    jwks_server.document = provider.jwks(old_key)
    new_token = provider.token("cust-new")

    # Just after a fetch, an unknown kid does not make another one (no fetch storm from made-up kids).
    with pytest.raises(Unauthorized, match="signing key is unknown"):
        await verifier.customer_id(new_token)
    assert jwks_server.fetches == 1

    clock.now += JWKS_REFRESH_COOLDOWN_S + 1
    assert await verifier.customer_id(new_token) == "cust-new"
    assert jwks_server.fetches == 2, "one refetch for the new kid"
    assert await verifier.customer_id(old_token) == "cust-old", "the old key is still published"
    assert jwks_server.fetches == 2

    # A token with a kid the provider never published: refused, one refetch per cooldown at most.
    stranger = TestIdentityProvider(issuer=provider.issuer, kid="made-up")
    for _ in range(3):
        with pytest.raises(Unauthorized, match="signing key is unknown"):
            await verifier.customer_id(stranger.token("cust-x"))
    assert jwks_server.fetches == 2


async def test_a_key_the_provider_withdrew_is_refused_once_the_cached_set_expires(
    jwks_server: JwksServer, clock: Clock
) -> None:
    provider = TestIdentityProvider()
    jwks_server.document = provider.jwks()
    verifier = CustomerVerifier(jwks_url=jwks_server.url, issuer=provider.issuer)
    withdrawn_token = provider.token("cust-1")
    assert await verifier.customer_id(withdrawn_token) == "cust-1"

    provider.rotate()
    jwks_server.document = provider.jwks()  # the old key is gone (e.g. it leaked)
    clock.now += JWKS_LIFESPAN_S + 1
    with pytest.raises(Unauthorized, match="signing key is unknown"):
        await verifier.customer_id(withdrawn_token)
    assert await verifier.customer_id(provider.token("cust-2")) == "cust-2"


async def test_over_http_an_unreachable_provider_is_a_503_and_a_bad_token_a_401(jwks_server: JwksServer) -> None:
    provider = TestIdentityProvider()
    jwks_server.document = provider.jwks()
    unreachable = JwksServer()
    unreachable.close()  # its port is free now: nothing answers there

    def app_for(verifier: CustomerVerifier) -> FastAPI:
        app = FastAPI()
        install_problem_handlers(app)

        @app.get("/whoami")
        async def whoami(customer: str | None = Depends(proven_customer(verifier))) -> dict[str, str | None]:
            return {"customer": customer}

        return app

    good = app_for(CustomerVerifier(jwks_url=jwks_server.url, issuer=provider.issuer))
    down = app_for(CustomerVerifier(jwks_url=unreachable.url, issuer=provider.issuer))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=good), base_url="http://t") as client:
        assert (await client.get("/whoami", headers=provider.bearer("cust-9"))).json() == {"customer": "cust-9"}
        assert (await client.get("/whoami")).json() == {"customer": None}
        refused = await client.get("/whoami", headers={"Authorization": "Bearer not.a.jwt"})
        assert refused.status_code == 401
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=down), base_url="http://t") as client:
        away = await client.get("/whoami", headers=provider.bearer("cust-9"))
        assert away.status_code == 503, away.text
        assert away.headers["Retry-After"]
