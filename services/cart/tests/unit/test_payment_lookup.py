"""The order view's question to payment: the secret when there is one, None on any failure."""

from __future__ import annotations

import httpx
import pytest
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from kasse_cart.adapters.payment_client import HttpPaymentLookup
from kasse_testkit import served

pytestmark = pytest.mark.unit


def lookup(handler: object) -> HttpPaymentLookup:
    return HttpPaymentLookup(
        "http://payment.test/",
        SecretStr("internal-token"),
        0.5,
        transport=httpx.MockTransport(handler),  # type: ignore[arg-type]
    )


async def test_the_secret_is_returned_and_the_internal_token_sent() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        body = {"order_id": "ord_1", "status": "requires_action", "payment_intent_id": "pi_1", "client_secret": "s3"}
        return httpx.Response(200, json=body)

    assert await lookup(handler).client_secret("ord_1") == "s3"
    assert seen[0].url == "http://payment.test/v1/payments/ord_1"
    assert seen[0].headers["Authorization"] == "Bearer internal-token"


@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(404, json={"detail": "no payment yet"}),
        httpx.Response(200, json={"order_id": "ord_1", "status": "succeeded", "client_secret": None}),
        httpx.Response(500, text="boom"),
        httpx.Response(200, text="not json"),
    ],
)
async def test_no_secret_when_payment_has_none_or_answers_badly(response: httpx.Response) -> None:
    assert await lookup(lambda request: response).client_secret("ord_1") is None


async def test_an_unreachable_payment_service_gives_none() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectTimeout("timed out", request=request)

    assert await lookup(handler).client_secret("ord_1") is None
    assert await HttpPaymentLookup(None, None, 0.5).client_secret("ord_1") is None


async def test_successive_lookups_share_one_client_and_its_connection() -> None:
    """A client per lookup cost ~33 ms of CPU and a new connection each: the order view and the unpaid-orders
    job ask for every unpaid order, so under polling the cart spent its CPU on TLS contexts."""
    peers: list[tuple[str, int]] = []

    async def payment(request: Request) -> JSONResponse:
        assert request.client is not None
        peers.append((request.client.host, request.client.port))
        return JSONResponse({"order_id": "ord_1", "status": "requires_action", "client_secret": "s3"})

    app = Starlette(routes=[Route("/v1/payments/{order_id}", payment)])
    async with served(app, lifespan="off") as base:
        payments = HttpPaymentLookup(base, SecretStr("internal-token"), 5.0)
        try:
            for _ in range(3):
                assert await payments.client_secret("ord_1") == "s3"
            assert await payments.payment_status("ord_1") == "requires_action"
        finally:
            await payments.aclose()
    assert len(peers) == 4
    assert len(set(peers)) == 1  # one kept-alive connection, not one per lookup
