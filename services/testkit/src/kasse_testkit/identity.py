"""Customer tokens for tests: an identity provider's key pair and signed OIDC-style JWTs.

`provider = TestIdentityProvider()`; configure a service with `identity_public_key=provider.public_pem`
(and `identity_issuer=provider.issuer`), then send `provider.bearer("cust-7")` as headers.
"""

from __future__ import annotations

import time
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa


class TestIdentityProvider:
    __test__ = False  # not a pytest class

    def __init__(self, issuer: str = "https://id.example") -> None:
        self.issuer = issuer
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.public_pem = (
            self._key.public_key()
            .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
            .decode()
        )

    def token(self, sub: str, **claims: Any) -> str:
        body = {"sub": sub, "iss": self.issuer, "exp": int(time.time()) + 300, **claims}
        return jwt.encode(body, self._key, algorithm="RS256")

    def bearer(self, sub: str, **claims: Any) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(sub, **claims)}"}
