"""Client mistakes become problem+json with a status and a reason per field, never a 500."""

from __future__ import annotations

import httpx
import pytest
from aiokafka.errors import KafkaConnectionError
from fastapi import Depends, FastAPI
from pydantic import BaseModel, Field, SecretStr
from pymongo.errors import AutoReconnect, NetworkTimeout, OperationFailure, ServerSelectionTimeoutError

from kasse_common.errors import ConcurrencyError, NotFound
from kasse_common.http import BodySizeLimit, bearer_guard, install_problem_handlers

pytestmark = pytest.mark.unit


class Line(BaseModel):
    quantity: int = Field(ge=1)


class Order(BaseModel):
    lines: list[Line]


def app() -> FastAPI:
    application = FastAPI()
    install_problem_handlers(application)
    application.add_middleware(BodySizeLimit, max_bytes=2048)
    guard = bearer_guard(SecretStr("s3cret"), setting="KASSE_TEST_ADMIN_TOKEN")

    @application.post("/orders")
    async def create(order: Order) -> dict[str, int]:
        return {"lines": len(order.lines)}

    @application.get("/orders/{order_id}")
    async def get(order_id: str) -> None:
        raise NotFound(f"order {order_id} does not exist")

    @application.get("/admin", dependencies=[Depends(guard)])
    async def admin() -> dict[str, bool]:
        return {"ok": True}

    @application.get("/boom")
    async def boom() -> None:
        raise RuntimeError("secret internals")

    @application.get("/store-down")
    async def store_down() -> None:
        raise ServerSelectionTimeoutError("127.0.0.1:37017: connection refused, Timeout: 5.0s")

    @application.get("/store-dropped")
    async def store_dropped() -> None:
        raise AutoReconnect("connection closed")

    @application.get("/broker-down")
    async def broker_down() -> None:
        raise KafkaConnectionError("Unable to bootstrap from 127.0.0.1:19092")

    @application.get("/adapter-wrapped")
    async def adapter_wrapped() -> None:
        try:
            raise NetworkTimeout("timed out")
        except NetworkTimeout as exc:
            raise RuntimeError("repository failed") from exc

    @application.get("/contended")
    async def contended() -> None:
        raise ConcurrencyError("cart c1 changed since version 4")

    @application.get("/bad-query")
    async def bad_query() -> None:
        raise OperationFailure("unknown operator $foo")  # a bug, not an outage: stays 500

    return application


@pytest.fixture
def client() -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app(), raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://t")


async def test_invalid_fields_are_named(client: httpx.AsyncClient) -> None:
    r = await client.post("/orders", json={"lines": [{"quantity": 0}]})
    assert r.status_code == 422
    assert r.headers["content-type"] == "application/problem+json"
    assert [e["field"] for e in r.json()["errors"]] == ["lines.0.quantity"]


async def test_a_body_that_is_not_json_is_blamed_on_the_body(client: httpx.AsyncClient) -> None:
    r = await client.post("/orders", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422
    assert r.json()["errors"][0]["field"] == "body"


async def test_a_wrong_method_is_405_and_says_which_methods_are_allowed(client: httpx.AsyncClient) -> None:
    # RFC 9110 §15.5.6: a 405 carries Allow. The problem handler used to drop the exception's headers.
    r = await client.delete("/orders")
    assert r.status_code == 405
    assert r.headers["content-type"] == "application/problem+json"
    assert r.headers["allow"] == "POST"


async def test_domain_errors_keep_their_status_and_detail(client: httpx.AsyncClient) -> None:
    r = await client.get("/orders/o-1")
    assert (r.status_code, r.json()["detail"], r.json()["instance"]) == (404, "order o-1 does not exist", "/orders/o-1")


async def test_oversized_bodies_are_refused_with_413(client: httpx.AsyncClient) -> None:
    r = await client.post("/orders", content=b"x" * 5000, headers={"content-type": "application/json"})
    assert r.status_code == 413 and "exceeds 2048 bytes" in r.json()["detail"]


async def test_the_bearer_guard_says_401_without_and_403_with_a_wrong_token(client: httpx.AsyncClient) -> None:
    assert (await client.get("/admin")).status_code == 401
    assert (await client.get("/admin", headers={"Authorization": "Bearer nope"})).status_code == 403
    assert (await client.get("/admin", headers={"Authorization": "Bearer s3cret"})).json() == {"ok": True}


async def test_unexpected_errors_reveal_nothing(client: httpx.AsyncClient) -> None:
    r = await client.get("/boom")
    assert r.status_code == 500 and "secret" not in r.text


@pytest.mark.parametrize("path", ["/store-down", "/store-dropped", "/broker-down", "/adapter-wrapped"])
async def test_an_unreachable_store_or_broker_is_503_with_retry_after(client: httpx.AsyncClient, path: str) -> None:
    r = await client.get(path)
    assert r.status_code == 503
    assert r.headers["content-type"] == "application/problem+json"
    assert r.headers["retry-after"] == "5"
    body = r.json()
    assert body["title"] == "Service unavailable" and body["instance"] == path
    assert "127.0.0.1" not in r.text  # nothing internal leaks


async def test_a_write_race_lost_for_good_is_503_busy_with_a_short_retry_after(client: httpx.AsyncClient) -> None:
    r = await client.get("/contended")
    assert (r.status_code, r.headers["retry-after"], r.json()["title"]) == (503, "1", "Busy")


async def test_a_store_error_that_is_not_an_outage_stays_a_500(client: httpx.AsyncClient) -> None:
    r = await client.get("/bad-query")
    assert r.status_code == 500 and "retry-after" not in r.headers
