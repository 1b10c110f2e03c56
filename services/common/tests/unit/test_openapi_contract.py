"""The OpenAPI document says what the kit answers, and inputs take exactly what it describes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import httpx
import pytest
from fastapi import Depends, FastAPI, Query
from pydantic import BaseModel, Field, SecretStr, ValidationError

from kasse_common.http import (
    JSON_INTEGER,
    PROBLEM_JSON,
    BodySizeLimit,
    DateTimeIn,
    bearer_guard,
    document_problems,
    install_problem_handlers,
)
from kasse_common.identity import CUSTOMER_TOKEN

pytestmark = pytest.mark.unit

ADMIN = {"Authorization": "Bearer s3cret"}


class Note(BaseModel):
    count: Annotated[int, Field(ge=0), JSON_INTEGER]
    at: DateTimeIn | None = None


def app() -> FastAPI:
    application = FastAPI()
    install_problem_handlers(application)
    document_problems(application)
    application.add_middleware(BodySizeLimit, max_bytes=2048)
    guard = bearer_guard(SecretStr("s3cret"), setting="KASSE_TEST_ADMIN_TOKEN")

    @application.get("/settings")
    async def read() -> dict[str, int]:
        return {"count": 1}

    @application.put("/settings", dependencies=[Depends(guard)])
    async def write(note: Note) -> dict[str, int]:
        return {"count": note.count}

    @application.get("/report")
    async def report(at: Annotated[DateTimeIn | None, Query()] = None) -> dict[str, str | None]:
        return {"at": at.isoformat() if at else None}

    @application.get("/shop")
    async def shop(credentials: Any = Depends(CUSTOMER_TOKEN)) -> dict[str, bool]:  # noqa: B008
        return {"guest": credentials is None}

    return application


@pytest.fixture
def client() -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app()), base_url="http://t")


async def test_a_405_names_every_method_served_on_the_path_even_by_separate_routes(client: httpx.AsyncClient) -> None:
    # Starlette answered with the first matching route's methods only: `Allow: GET` although PUT works.
    r = await client.delete("/settings")
    assert r.status_code == 405
    assert r.headers["allow"] == "GET, PUT"


async def test_a_body_that_is_not_utf8_is_a_documented_400_problem(client: httpx.AsyncClient) -> None:
    r = await client.put(
        "/settings", content=b'{"count": "\xff"}', headers={"content-type": "application/json", **ADMIN}
    )
    assert r.status_code == 400
    assert r.headers["content-type"] == PROBLEM_JSON
    assert "400" in app().openapi()["paths"]["/settings"]["put"]["responses"]


def test_every_error_response_is_documented_as_problem_json_with_what_the_kit_can_answer() -> None:
    doc = app().openapi()
    put = doc["paths"]["/settings"]["put"]["responses"]
    get = doc["paths"]["/settings"]["get"]["responses"]
    # A guarded body route: 400 (unreadable), 401/403 (the guard), 413 (size), 422 (fields), 503 (store away).
    assert {"400", "401", "403", "413", "422", "503"} <= set(put)
    assert "401" not in get and "400" not in get and "503" in get
    for responses in (put, get):
        for status, response in responses.items():
            if int(status) >= 400:
                assert response["content"] == {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}}
    assert "HTTPValidationError" not in doc["components"]["schemas"]
    assert "Problem" in doc["components"]["schemas"]


def test_a_customer_token_is_documented_as_optional_a_guest_sends_none() -> None:
    shop = app().openapi()["paths"]["/shop"]["get"]
    assert shop["security"] == [{"CustomerToken": []}, {}]
    assert "401" in shop["responses"] and "403" not in shop["responses"]


@pytest.mark.parametrize("value", ["0", "1700000000", "2026-12-24T18:00:00", "24.12.2026", "false"])
async def test_a_date_time_query_takes_only_rfc3339_with_offset(client: httpx.AsyncClient, value: str) -> None:
    # Pydantic alone reads "0" or "1700000000" as Unix seconds: a number accepted as a date-time.
    r = await client.get("/report", params={"at": value})
    assert r.status_code == 422, r.text


async def test_a_date_time_with_offset_is_taken(client: httpx.AsyncClient) -> None:
    r = await client.get("/report", params={"at": "2026-12-24T18:00:00.5+01:00"})
    assert r.status_code == 200
    assert r.json() == {"at": "2026-12-24T18:00:00.500000+01:00"}


@pytest.mark.parametrize("value", [True, "5", 1.5, 0, 1_700_000_000])
def test_a_body_date_time_is_never_a_number_or_a_bool(value: object) -> None:
    with pytest.raises(ValidationError):
        Note.model_validate({"count": 1, "at": value})


def test_a_json_integer_is_what_json_schema_calls_one() -> None:
    assert Note.model_validate({"count": 91.0}).count == 91  # 91.0 is an integer in JSON Schema
    for wrong in (True, "5", 1.5, -1):
        with pytest.raises(ValidationError):
            Note.model_validate({"count": wrong})
    assert Note.model_json_schema()["properties"]["count"] == {"minimum": 0, "title": "Count", "type": "integer"}
    assert Note.model_validate({"count": 1, "at": "2026-12-24T17:00:00Z"}).at == datetime(2026, 12, 24, 17, tzinfo=UTC)
