"""The chaos run's Stripe stand-in keeps Stripe's idempotency promise, which stripe-mock does not."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from kasse_testkit import served
from kasse_testkit.chaos import StripeRecorder

pytestmark = pytest.mark.unit


async def test_a_create_repeated_with_its_idempotency_key_reaches_stripe_once() -> None:
    """The Stripe SDK repeats a create after a read timeout with the same key: one intent, as at Stripe."""
    created: list[str] = []
    slow, arrived = asyncio.Event(), asyncio.Event()

    async def create(request: Request) -> JSONResponse:
        created.append(request.headers.get("idempotency-key", ""))
        arrived.set()
        await slow.wait()  # the first answer is late: the repeat arrives while it is in flight
        return JSONResponse({"id": f"pi_{len(created)}", "object": "payment_intent"})

    upstream = Starlette(routes=[Route("/v1/payment_intents", create, methods=["POST"])])
    async with served(upstream, lifespan="off") as stripe:
        recorder = StripeRecorder(stripe)
        async with served(recorder.app, lifespan="off") as proxy, httpx.AsyncClient(timeout=30) as client:
            form = {"amount": "1000", "currency": "eur", "metadata[order_id]": "ord_1"}
            first = asyncio.create_task(
                client.post(proxy + "/v1/payment_intents", data=form, headers={"Idempotency-Key": "k1"})
            )
            await asyncio.wait_for(arrived.wait(), 30)
            repeat = asyncio.create_task(
                client.post(proxy + "/v1/payment_intents", data=form, headers={"Idempotency-Key": "k1"})
            )
            slow.set()
            answers = [await first, await repeat]
            other = await client.post(proxy + "/v1/payment_intents", data=form, headers={"Idempotency-Key": "k2"})
        await recorder.client.aclose()
    assert [a.json()["id"] for a in answers] == ["pi_1", "pi_1"]
    assert other.json()["id"] == "pi_2"  # another key is another create
    assert created == ["k1", "k2"]
    assert recorder.intents["ord_1"] == 2  # two keys, two intents: a real duplicate would still be counted
