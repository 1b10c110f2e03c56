"""A handler waiting on one slow Stripe call is seen working by the consumer's watchdog (issue 12).

Before, progress came from store commands only: a Stripe call (with the SDK's retries) longer than the stall
window made the watchdog restart a consumer whose handler was merely waiting for Stripe's answer.
"""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from kasse_common.progress import handling
from kasse_payment.adapters.stripe_gateway import ProgressHTTPXClient, StripeGateway, build_client
from kasse_testkit import wait_until

pytestmark = pytest.mark.unit


async def test_a_slow_stripe_call_reports_progress_while_the_handler_waits_for_it() -> None:
    marks: dict[int, float] = {}
    reports_seen: list[float] = []

    async def slow_stripe(request: httpx.Request) -> httpx.Response:
        # Stripe answers only once the waiting handler has been seen working twice more during the call.
        started = marks.get(3, 0.0)

        def working_during_the_call() -> bool:
            if marks.get(3, 0.0) > started and (not reports_seen or marks[3] > reports_seen[-1]):
                reports_seen.append(marks[3])
            return len(reports_seen) >= 2

        await wait_until(working_during_the_call, timeout=30, interval=0.02, message="no progress during the call")
        body = {"id": "pi_1", "object": "payment_intent", "status": "requires_payment_method", "client_secret": "s"}
        return httpx.Response(200, content=json.dumps(body).encode(), headers={"Request-Id": "req_1"})

    http_client = ProgressHTTPXClient(timeout_s=10)
    http_client._client_async = httpx.AsyncClient(transport=httpx.MockTransport(slow_stripe))
    client = build_client(
        "sk_test_x", "http://stripe.test", timeout_s=10, max_network_retries=0, http_client=http_client
    )
    gateway = StripeGateway(client)

    with handling(marks, 3):  # as the consumer runs a record's handler
        state = await asyncio.wait_for(
            gateway.create_intent(
                order_id="ord_1",
                amount=1999,
                currency="EUR",
                email="a@example.com",
                idempotency_key="k1",
                server_confirmation=False,
            ),
            60,
        )
    assert state.intent_id == "pi_1" and len(reports_seen) >= 2
