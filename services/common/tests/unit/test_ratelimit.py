"""Rate limits: the limit reached answers 429 + Retry-After; clients and keys count apart; the window
passes on a controlled clock (no sleeping)."""

from __future__ import annotations

from typing import Any

import httpx
import limits.storage.memory
import pytest
from fastapi import Depends, FastAPI
from starlette.requests import ClientDisconnect

from kasse_common.http import install_problem_handlers
from kasse_common.ratelimit import ConnectionCap, RateLimiter, path_param

pytestmark = pytest.mark.unit


class Clock:
    """Stands in for the `time` module the limits memory storage reads."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def time(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(limits.storage.memory, "time", fake)
    return fake


def app(limiter: RateLimiter) -> FastAPI:
    application = FastAPI()
    install_problem_handlers(application)

    @application.put(
        "/carts/{cart_id}/coupon",
        dependencies=[
            Depends(limiter.limit("coupon-client", "3/minute")),
            Depends(limiter.limit("coupon-cart", "5/minute", key=path_param("cart_id"))),
        ],
    )
    async def coupon(cart_id: str) -> dict[str, str]:
        return {"cart": cart_id}

    @application.post("/open", dependencies=[Depends(limiter.limit("open", None))])
    async def unlimited() -> dict[str, str]:
        return {}

    return application


def client(application: FastAPI, ip: str) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=application, client=(ip, 5000))
    return httpx.AsyncClient(transport=transport, base_url="http://t")


async def test_the_limit_reached_answers_429_with_retry_after_and_the_window_passes(clock: Clock) -> None:
    application = app(RateLimiter(clock.time))
    async with client(application, "10.0.0.1") as c:
        for _ in range(3):
            assert (await c.put("/carts/a/coupon")).status_code == 200
        clock.now += 20
        refused = await c.put("/carts/a/coupon")
        assert refused.status_code == 429
        assert refused.headers["content-type"] == "application/problem+json"
        assert refused.headers["Retry-After"] == "40"  # the first hit leaves the 60 s window in 40 s
        assert refused.json()["status"] == 429
        clock.now += 39
        assert (await c.put("/carts/a/coupon")).status_code == 429
        clock.now += 1.5
        assert (await c.put("/carts/a/coupon")).status_code == 200


async def test_clients_count_apart_and_a_key_counts_across_clients(clock: Clock) -> None:
    application = app(RateLimiter(clock.time))
    one, two, three = (client(application, f"10.0.0.{n}") for n in (1, 2, 3))
    async with one, two, three:
        for _ in range(3):
            assert (await one.put("/carts/a/coupon")).status_code == 200
        assert (await one.put("/carts/b/coupon")).status_code == 429  # this client is out, any cart
        assert (await two.put("/carts/b/coupon")).status_code == 200  # another client is not
        assert (await two.put("/carts/a/coupon")).status_code == 200  # cart a: 4th attempt of 5
        assert (await two.put("/carts/a/coupon")).status_code == 200  # 5th
        refused = await three.put("/carts/a/coupon")  # cart a is out, whoever tries
        assert refused.status_code == 429
        assert "coupon-cart" in refused.json()["detail"]


async def test_a_limit_set_to_none_is_off(clock: Clock) -> None:
    application = app(RateLimiter(clock.time))
    async with client(application, "10.0.0.1") as c:
        for _ in range(50):
            assert (await c.post("/open")).status_code == 200


def test_a_connection_cap_refuses_beyond_its_size_and_frees_a_slot_on_release() -> None:
    cap = ConnectionCap(2, retry_after_s=7)
    cap.acquire()
    cap.acquire()
    with pytest.raises(Exception) as refused:
        cap.acquire()
    assert getattr(refused.value, "retry_after_s", None) == 7
    cap.release()
    cap.acquire()
    assert cap.open == 2


def test_a_rate_setting_that_is_not_a_rate_refuses_to_load() -> None:
    from pydantic import BaseModel, ValidationError

    from kasse_common.ratelimit import Rate

    class Limits(BaseModel):
        rate: Rate = "10/minute"

    assert Limits(rate="5 per hour").rate == "5 per hour"
    assert Limits(rate=None).rate is None
    with pytest.raises(ValidationError):
        Limits(rate="ten a minute")


async def test_a_capped_stream_frees_its_slot_even_when_the_client_left_before_the_first_chunk() -> None:
    cap = ConnectionCap(1)

    async def never_started() -> Any:
        yield b"never sent"

    response = cap.stream(never_started(), media_type="text/event-stream")
    assert cap.open == 1

    async def receive() -> dict[str, Any]:
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        raise OSError("the client is gone")

    with pytest.raises((OSError, ClientDisconnect)):  # starlette turns the OSError into ClientDisconnect
        await response({"type": "http", "asgi": {"spec_version": "2.4"}}, receive, send)
    assert cap.open == 0
