from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from kasse_testkit import running_app
from kasse_webhooks.main import create_app
from kasse_webhooks.settings import WebhooksSettings

ADMIN = {"Authorization": "Bearer wh-admin"}


class FakeClock:
    """Scheduling time the test moves; the service's workers are woken after every move."""

    def __init__(self) -> None:
        now = datetime.now(UTC)
        self.current = now.replace(microsecond=now.microsecond // 1000 * 1000)  # what BSON keeps
        self.on_advance: Callable[[], None] = lambda: None

    def now(self) -> datetime:
        return self.current

    def advance(self, delta: timedelta) -> None:
        self.current += delta
        self.on_advance()


@dataclass
class Webhooks:
    client: httpx.AsyncClient
    clock: FakeClock
    app: Any

    async def register(self, url: str, event_types: list[str] | None = None, **extra: Any) -> dict[str, Any]:
        response = await self.client.post(
            "/v1/admin/endpoints",
            json={"url": url, "event_types": event_types or ["*"], "description": "test receiver", **extra},
            headers=ADMIN,
        )
        assert response.status_code == 201, response.text
        return dict(response.json())

    async def deliveries(self, endpoint_id: str, **params: Any) -> list[dict[str, Any]]:
        response = await self.client.get(f"/v1/admin/endpoints/{endpoint_id}/deliveries", params=params, headers=ADMIN)
        assert response.status_code == 200, response.text
        return list(response.json())

    async def endpoint(self, endpoint_id: str) -> dict[str, Any]:
        response = await self.client.get(f"/v1/admin/endpoints/{endpoint_id}", headers=ADMIN)
        assert response.status_code == 200, response.text
        return dict(response.json())


# The schedule the tests run on: 4 attempts, waits of 60, 120 and 240 s (on the fake clock).
SCHEDULE = {"retry_max_attempts": 4, "retry_initial_s": 60.0, "retry_base": 2.0, "retry_max_s": 3600.0}


@pytest.fixture
def webhooks_settings(settings_for: Callable[..., Any]) -> Callable[..., WebhooksSettings]:
    def build(**overrides: Any) -> WebhooksSettings:
        values: dict[str, Any] = {
            "profile": "development",
            "admin_token": "wh-admin",
            "allowed_networks": ["127.0.0.1/32"],
            "dispatch_poll_interval_s": 0.05,
            "request_timeout_s": 1.0,
            "connect_timeout_s": 1.0,
            **SCHEDULE,
            **overrides,
        }
        return settings_for(WebhooksSettings, **values)  # type: ignore[no-any-return]

    return build


@pytest.fixture
async def webhooks(webhooks_settings: Callable[..., WebhooksSettings]) -> AsyncIterator[Webhooks]:
    clock = FakeClock()
    app = create_app(webhooks_settings(), clock=clock)
    clock.on_advance = app.state.dispatcher.wake_all
    async with running_app(app) as client:
        yield Webhooks(client, clock, app)
