"""Endpoints: who gets which events, signed with which secrets. Plain rules, no I/O."""

from __future__ import annotations

import base64
import fnmatch
import ipaddress
import re
import secrets
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from urllib.parse import urlsplit

from kasse_common.errors import Unprocessable

SECRET_PREFIX = "whsec_"
EVENT_PATTERN = re.compile(r"^[A-Za-z0-9_.*-]{1,200}$")


class EndpointStatus(StrEnum):
    ENABLED = "enabled"
    DISABLED = "disabled"  # failed for the whole retry schedule (or by hand); re-enable to resume


def new_secret() -> str:
    """A Standard Webhooks secret: `whsec_` + base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


@dataclass(frozen=True)
class SigningSecret:
    value: str
    created_at: datetime
    expires_at: datetime | None = None  # set when a newer secret replaced it (the grace period)

    def valid_at(self, now: datetime) -> bool:
        return self.expires_at is None or now < self.expires_at


def event_type_matches(patterns: list[str], event_type: str) -> bool:
    """`*` matches any run of characters: `io.kasse.cart.*`, `*.OrderPlaced.v1`, `*`."""
    return any(fnmatch.fnmatchcase(event_type, pattern) for pattern in patterns)


def validate_patterns(patterns: list[str]) -> list[str]:
    if not patterns:
        raise Unprocessable("event_types must name at least one event type or pattern", field="event_types")
    for pattern in patterns:
        if not EVENT_PATTERN.match(pattern):
            raise Unprocessable(
                f"{pattern!r} is not an event type pattern (letters, digits, . _ - and * only)", field="event_types"
            )
    return sorted(set(patterns))


def validate_url(url: str, *, https_required: bool) -> str:
    """The URL's form. Where it points (SSRF) is checked on the resolved addresses, here and at delivery."""
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http"):
        raise Unprocessable("url must be an http(s) URL", field="url")
    if https_required and parts.scheme != "https":
        raise Unprocessable("url must use https (plain http only in the development profile)", field="url")
    if not parts.hostname:
        raise Unprocessable("url has no host", field="url")
    if parts.username or parts.password:
        raise Unprocessable("url must not carry credentials", field="url")
    if parts.fragment:
        raise Unprocessable("url must not have a fragment", field="url")
    try:
        _ = parts.port
    except ValueError as exc:
        raise Unprocessable(f"url has a bad port: {exc}", field="url") from exc
    return url


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(cidrs: list[str]) -> list[Network]:
    return [ipaddress.ip_network(c, strict=False) for c in cidrs]


def address_allowed(address: str, allowed: list[Network]) -> bool:
    """Only public addresses, unless allow-listed: no loopback, private, link-local (cloud metadata),
    multicast, reserved or unspecified targets (SSRF)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if any(ip in network for network in allowed):
        return True
    return ip.is_global and not (ip.is_multicast or ip.is_reserved or ip.is_unspecified)


@dataclass(frozen=True)
class Endpoint:
    endpoint_id: str
    url: str
    event_types: list[str]
    description: str
    secrets: list[SigningSecret]
    status: EndpointStatus
    created_at: datetime
    disabled_reason: str = ""
    disabled_at: datetime | None = None
    version: int = 0

    def wants(self, event_type: str) -> bool:
        return self.status is EndpointStatus.ENABLED and event_type_matches(self.event_types, event_type)

    def signing_secrets(self, now: datetime) -> list[str]:
        """Newest first; an old secret is used too during its grace period, so a receiver that still
        has it verifies (Standard Webhooks: several space-separated signatures)."""
        return [s.value for s in sorted(self.secrets, key=lambda s: s.created_at, reverse=True) if s.valid_at(now)]

    def rotated(self, now: datetime, grace: timedelta) -> tuple[Endpoint, str]:
        secret = new_secret()
        kept = [
            s if s.expires_at is not None else replace(s, expires_at=now + grace)
            for s in self.secrets
            if s.valid_at(now)
        ]
        return replace(self, secrets=[*kept, SigningSecret(secret, now)]), secret

    def disabled(self, now: datetime, reason: str) -> Endpoint:
        return replace(self, status=EndpointStatus.DISABLED, disabled_reason=reason, disabled_at=now)

    def enabled(self) -> Endpoint:
        return replace(self, status=EndpointStatus.ENABLED, disabled_reason="", disabled_at=None)


def url_host(url: str) -> str:
    """The host of an endpoint URL, for events and logs: never its path, query or credentials."""
    return urlsplit(url).hostname or ""
