"""The plain rules: schedule, Retry-After, patterns, URL and address policy, secret rotation."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest
from standardwebhooks import Webhook

from kasse_common.errors import Unprocessable
from kasse_webhooks.adapters.sender import HttpSender
from kasse_webhooks.application.delivery import Signer
from kasse_webhooks.domain.deliveries import RetrySchedule, parse_retry_after
from kasse_webhooks.domain.endpoints import (
    Endpoint,
    EndpointStatus,
    SigningSecret,
    address_allowed,
    event_type_matches,
    new_secret,
    parse_networks,
    validate_patterns,
    validate_url,
)
from kasse_webhooks.settings import WebhooksSettings

pytestmark = pytest.mark.unit
T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def default_schedule() -> RetrySchedule:
    s = WebhooksSettings(profile="development")
    return RetrySchedule(
        s.retry_max_attempts, timedelta(seconds=s.retry_initial_s), s.retry_base, timedelta(seconds=s.retry_max_s)
    )


def test_the_default_schedule_is_exponential_and_spans_about_a_day() -> None:
    schedule = default_schedule()
    waits = [schedule.delay_after(n).total_seconds() for n in range(1, schedule.max_attempts)]
    assert waits[:4] == [15, 45, 135, 405]
    assert all(b >= a for a, b in itertools.pairwise(waits)) and max(waits) == 6 * 3600
    assert timedelta(hours=20) <= schedule.total() <= timedelta(hours=26)
    assert schedule.next_attempt_at(schedule.max_attempts, T0) is None  # used up


def test_retry_after_is_honoured_but_never_beyond_the_longest_wait() -> None:
    schedule = RetrySchedule(4, timedelta(seconds=60), 2, timedelta(hours=1))
    assert schedule.next_attempt_at(1, T0) == T0 + timedelta(seconds=60)
    assert schedule.next_attempt_at(1, T0, timedelta(seconds=600)) == T0 + timedelta(seconds=600)
    assert schedule.next_attempt_at(1, T0, timedelta(seconds=5)) == T0 + timedelta(seconds=60)  # never sooner
    assert schedule.next_attempt_at(1, T0, timedelta(days=3)) == T0 + timedelta(hours=1)
    assert parse_retry_after("120", T0) == timedelta(seconds=120)
    assert parse_retry_after("Tue, 01 Dec 2026 12:05:00 GMT", T0) == timedelta(minutes=5)
    assert parse_retry_after("soon", T0) is None and parse_retry_after(None, T0) is None


def test_event_type_patterns() -> None:
    assert event_type_matches(["io.kasse.cart.*"], "io.kasse.cart.OrderPlaced.v1")
    assert event_type_matches(["*.OrderPlaced.v1"], "io.kasse.cart.OrderPlaced.v1")
    assert not event_type_matches(["io.kasse.shipping.*"], "io.kasse.cart.OrderPlaced.v1")
    assert validate_patterns(["*", "*"]) == ["*"]
    with pytest.raises(Unprocessable):
        validate_patterns([])
    with pytest.raises(Unprocessable):
        validate_patterns(["io.kasse.cart.[abc]"])


def test_https_is_required_outside_development_and_urls_are_plain() -> None:
    assert validate_url("https://erp.example.com/hooks", https_required=True)
    with pytest.raises(Unprocessable, match="https"):
        validate_url("http://erp.example.com/hooks", https_required=True)
    assert validate_url("http://127.0.0.1:9000/hooks", https_required=False)
    for bad in ("ftp://x.example/", "https://user:pw@x.example/", "https:///nohost", "https://x.example/#frag"):
        with pytest.raises(Unprocessable):
            validate_url(bad, https_required=False)


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "192.168.0.10",
        "172.16.5.4",
        "169.254.169.254",
        "::1",
        "fe80::1",
        "0.0.0.0",
        "::ffff:127.0.0.1",
        "100.64.0.1",
    ],
)
def test_non_public_addresses_are_refused_unless_allow_listed(address: str) -> None:
    assert not address_allowed(address, [])
    assert address_allowed(address, parse_networks(["0.0.0.0/0", "::/0"]))


def test_public_addresses_pass() -> None:
    assert address_allowed("93.184.216.34", []) and address_allowed("2606:2800:220:1::1", [])


async def test_the_sender_refuses_a_private_target_at_delivery_time() -> None:
    sender = HttpSender([], connect_timeout=1, request_timeout=1, excerpt_bytes=100)
    try:
        result = await sender.send("http://127.0.0.1:9/hooks", {}, b"{}")
        assert result.status_code is None and result.error.startswith("refused: 127.0.0.1 resolves to 127.0.0.1")
        with pytest.raises(Unprocessable, match="allow-listed"):
            await sender.check("http://localhost:9/hooks")
    finally:
        await sender.aclose()


def test_rotation_keeps_the_old_secret_signing_for_the_grace_period() -> None:
    first = new_secret()
    assert first.startswith("whsec_")
    endpoint = Endpoint("ep_1", "https://x.example/", ["*"], "", [SigningSecret(first, T0)], EndpointStatus.ENABLED, T0)
    rotated, second = endpoint.rotated(T0 + timedelta(hours=1), timedelta(hours=24))
    during = T0 + timedelta(hours=2)
    assert rotated.signing_secrets(during) == [second, first]
    headers = Signer().headers("msg_1", rotated.signing_secrets(during), b'{"a":1}')
    assert len(headers["webhook-signature"].split(" ")) == 2
    for secret in (first, second):  # a receiver with either secret verifies, with the library only
        assert Webhook(secret).verify(b'{"a":1}', headers) == {"a": 1}
    after = T0 + timedelta(hours=26)
    assert rotated.signing_secrets(after) == [second]
