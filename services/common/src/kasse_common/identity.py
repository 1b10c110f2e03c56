"""Customer identity: a customer id is accepted only from a verified signed bearer token.

A shopper proves who they are with an OIDC token (a JWT signed by the identity provider) in
`Authorization: Bearer <jwt>`; its `sub` is the customer id. The signature is checked with PyJWT
against the provider's JWKS (`KASSE_IDENTITY_JWKS_URL`) or a configured public key
(`KASSE_IDENTITY_PUBLIC_KEY`, PEM), with `exp` required and the issuer and audience checked when they
are configured. No token: a guest (None). A token that does not verify: 401, never a guest with a
borrowed id. No header a client chooses (`X-Customer-Id`) names a customer any more.

JWKS caching and key rotation (PyJWKClient): the key set is fetched once and kept for
`JWKS_LIFESPAN_S`; a token whose `kid` is not in it makes one refetch (a key the provider just added),
at most once per `JWKS_REFRESH_COOLDOWN_S` so tokens with made-up kids cannot turn each request into a
fetch. No per-key cache: a key the provider withdrew is refused once the set is older than the lifespan.
A provider that cannot be reached answers 503 (try again), not 401: the token may well be good.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import jwt
from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from kasse_common.errors import Unauthorized
from kasse_common.http import OPTIONAL_BEARER
from kasse_common.settings import ServiceSettings

MAX_CUSTOMER_ID = 200
JWKS_LIFESPAN_S = 300
JWKS_REFRESH_COOLDOWN_S = 30


class CustomerVerifier:
    """Verifies customer tokens; `enabled` is False when no JWKS URL or key is configured."""

    def __init__(
        self,
        *,
        jwks_url: str | None = None,
        public_key: str | None = None,
        issuer: str | None = None,
        audience: str | None = None,
        algorithms: list[str] | None = None,
    ) -> None:
        self._jwks = (
            jwt.PyJWKClient(
                jwks_url,
                cache_keys=False,  # PyJWKClient's per-kid cache never expires: a withdrawn key would stay good
                lifespan=JWKS_LIFESPAN_S,
                cooldown_duration=JWKS_REFRESH_COOLDOWN_S,
                timeout=5,
            )
            if jwks_url
            else None
        )
        self._key = public_key or None
        self.issuer = issuer or None
        self.audience = audience or None
        self.algorithms = algorithms or ["RS256", "ES256", "EdDSA"]

    @classmethod
    def from_settings(cls, settings: ServiceSettings) -> CustomerVerifier:
        key = settings.identity_public_key
        return cls(
            jwks_url=settings.identity_jwks_url,
            public_key=key.get_secret_value() if key is not None else None,
            issuer=settings.identity_issuer,
            audience=settings.identity_audience,
            algorithms=[a.strip() for a in settings.identity_algorithms.split(",") if a.strip()],
        )

    @property
    def enabled(self) -> bool:
        return self._jwks is not None or self._key is not None

    async def customer_id(self, token: str) -> str:
        """The token's subject, or Unauthorized saying why the token is refused."""
        if not self.enabled:
            raise Unauthorized(
                "customer tokens are not accepted here: no identity provider is configured "
                "(KASSE_IDENTITY_JWKS_URL or KASSE_IDENTITY_PUBLIC_KEY); shop as a guest"
            )
        try:
            key: Any = self._key
            if self._jwks is not None:
                # PyJWKClient fetches (and caches) the provider's keys with blocking I/O.
                key = (await asyncio.to_thread(self._jwks.get_signing_key_from_jwt, token)).key
            claims = jwt.decode(
                token,
                key,
                algorithms=self.algorithms,
                audience=self.audience,
                issuer=self.issuer,
                options={"require": ["sub", "exp"], "verify_aud": self.audience is not None},
            )
        except jwt.PyJWKClientConnectionError as exc:
            # Transient (the kit answers 503 + Retry-After): the provider is away, the token may be good.
            raise ConnectionError("the identity provider's JWKS cannot be fetched") from exc
        except jwt.PyJWKClientError:
            raise Unauthorized("the customer token's signing key is unknown to the identity provider") from None
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"the customer token is not valid: {exc}") from None
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject or len(subject) > MAX_CUSTOMER_ID:
            raise Unauthorized("the customer token has no usable subject")
        return subject


# The storefront routes' bearer scheme (admin routes have their own, kasse_common.http.bearer_guard).
CUSTOMER_TOKEN = HTTPBearer(
    auto_error=False,
    scheme_name=OPTIONAL_BEARER,  # the kit's OpenAPI marks it optional (a guest sends none)
    description="A customer's OIDC token (JWT, signed by the identity provider); none: a guest",
)


async def customer_of(verifier: CustomerVerifier, credentials: HTTPAuthorizationCredentials | None) -> str | None:
    """The proven customer id, None for a guest (no token), Unauthorized for a token that fails."""
    if credentials is None or not credentials.credentials:
        return None
    return await verifier.customer_id(credentials.credentials)


def proven_customer(verifier: CustomerVerifier) -> Callable[..., Awaitable[str | None]]:
    """A FastAPI dependency: the proven customer id, None for a guest, 401 for a token that fails."""

    async def customer(credentials: HTTPAuthorizationCredentials | None = Depends(CUSTOMER_TOKEN)) -> str | None:  # noqa: B008
        return await customer_of(verifier, credentials)

    return customer
