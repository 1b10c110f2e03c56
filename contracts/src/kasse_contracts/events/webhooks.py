"""Events of the webhooks service about its subscribers' endpoints (not about orders).

An endpoint whose delivery failed on every attempt of the retry schedule is disabled, and the
webhooks service publishes `WebhookEndpointDisabled` in the same write that disables it (its event id
derived from the endpoint and the endpoint version it disabled, so a redelivery collapses into one).
An operator's tooling (ticketing, a chat bot, the subscriber's account manager) reads it; re-enabling
through the admin API publishes `WebhookEndpointEnabled`. Neither carries the URL's path, query or
credentials, nor any signing secret: only the host.
"""

from __future__ import annotations

from typing import Annotated, ClassVar

from pydantic import AwareDatetime, Field

from kasse_contracts import topics
from kasse_contracts.base import Event, Identifier


class WebhookEndpointDisabled(Event):
    """A webhook endpoint was disabled because one delivery failed for the whole retry schedule.

    Its messages are kept; nothing is delivered to it until it is re-enabled."""

    event_type: ClassVar[str] = "io.kasse.webhooks.WebhookEndpointDisabled.v1"
    topic: ClassVar[str] = topics.WEBHOOKS
    key_field: ClassVar[str] = "endpoint_id"

    endpoint_id: Identifier
    url_host: str = Field(max_length=255, description="The endpoint URL's host (no path, query or credentials)")
    reason: str = Field(max_length=1000, description="Why, for a human: the delivery, its attempts and the last error")
    delivery_id: str = Field(description="The delivery that failed on every attempt")
    failed_event_type: str = Field(description="The CloudEvents type of the message that could not be delivered")
    attempts: Annotated[int, Field(ge=1, description="Attempts made for that delivery")]
    last_status_code: int | None = Field(
        None, description="HTTP status of the last attempt; null when it got no answer (see last_error)"
    )
    last_error: str = Field("", max_length=500, description="Network error or timeout of the last attempt, if any")
    failing_since: AwareDatetime = Field(
        description="When that delivery was recorded: the endpoint has failed it since"
    )


class WebhookEndpointEnabled(Event):
    """A disabled webhook endpoint was re-enabled (admin API); its kept messages start a fresh schedule."""

    event_type: ClassVar[str] = "io.kasse.webhooks.WebhookEndpointEnabled.v1"
    topic: ClassVar[str] = topics.WEBHOOKS
    key_field: ClassVar[str] = "endpoint_id"

    endpoint_id: Identifier
    url_host: str = Field(max_length=255, description="The endpoint URL's host (no path, query or credentials)")
    disabled_at: AwareDatetime | None = Field(None, description="When it had been disabled")
