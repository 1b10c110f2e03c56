"""Customer tokens for tests: an identity provider's key pair and signed OIDC-style JWTs.

`provider = TestIdentityProvider()`; configure a service with `identity_public_key=provider.public_pem`
(and `identity_issuer=provider.issuer`), then send `provider.bearer("cust-7")` as headers.
For the JWKS path serve `provider.jwks()` (the public key under its `kid`, which every token names);
`provider.rotate()` makes a new signing key with a new kid.
"""

from __future__ import annotations

import json
import time
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm


class TestIdentityProvider:
    __test__ = False  # not a pytest class

    def __init__(self, issuer: str = "https://id.example", kid: str = "key-1") -> None:
        self.issuer = issuer
        self._generation = 0
        self.rotate(kid)

    def rotate(self, kid: str | None = None) -> str:
        """A new signing key (and kid) for the tokens from now on; returns the kid."""
        self._generation += 1
        self.kid = kid or f"key-{self._generation}"
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.public_pem = (
            self._key.public_key()
            .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
            .decode()
        )
        return self.kid

    def jwk(self) -> dict[str, Any]:
        """The current public key as a JWK (RFC 7517) under its kid."""
        key: dict[str, Any] = json.loads(RSAAlgorithm.to_jwk(self._key.public_key()))
        return {**key, "kid": self.kid, "use": "sig", "alg": "RS256"}

    def jwks(self, *extra: dict[str, Any]) -> dict[str, Any]:
        """A JWK Set with the current key (and any earlier `jwk()`s passed in)."""
        return {"keys": [self.jwk(), *extra]}

    def token(self, sub: str, **claims: Any) -> str:
        body = {"sub": sub, "iss": self.issuer, "exp": int(time.time()) + 300, **claims}
        return jwt.encode(body, self._key, algorithm="RS256", headers={"kid": self.kid})

    def bearer(self, sub: str, **claims: Any) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(sub, **claims)}"}
