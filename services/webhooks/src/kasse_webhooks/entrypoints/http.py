"""The admin API: endpoints, secrets, the delivery log, resend and replay (all behind the bearer guard)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, status
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from kasse_common.http import DateTimeIn, bearer_guard, problem_responses
from kasse_webhooks.application.endpoints import EndpointService
from kasse_webhooks.application.ports import Delivery
from kasse_webhooks.domain.deliveries import DeliveryStatus
from kasse_webhooks.domain.endpoints import EVENT_PATTERN, Endpoint


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EndpointIn(_In):
    url: Annotated[
        str,
        Field(
            min_length=8,
            max_length=2000,
            pattern=r"^[Hh][Tt][Tt][Pp][Ss]?://",
            description="https://… (http only in development)",
        ),
    ]
    event_types: Annotated[
        list[Annotated[str, Field(max_length=200, pattern=EVENT_PATTERN.pattern)]],
        Field(
            min_length=1,
            max_length=100,
            description="CloudEvents types, `*` as wildcard: "
            "`io.kasse.cart.OrderPlaced.v1`, `io.kasse.shipping.*`, `*`",
        ),
    ]
    description: Annotated[str, Field(max_length=500)] = ""


class RotateIn(_In):
    grace_period_s: Annotated[
        float | None, Field(ge=0, le=30 * 86400, description="How long the old secret stays valid; default: setting")
    ] = None


class OffsetIn(_In):
    topic: Annotated[str, Field(min_length=1, max_length=200, description="Contract topic, e.g. kasse.orders.v1")]
    partition: Annotated[int, Field(ge=0, le=2**31 - 1)]  # Kafka's partition and offset types
    offset: Annotated[int, Field(ge=0, le=2**63 - 1)]


class ReplayIn(_In):
    # Exactly one of the two, as the OpenAPI says (checked by the service).
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "oneOf": [
                {"required": ["since"], "properties": {"since": {"type": "string"}}},
                {"required": ["from_offsets"], "properties": {"from_offsets": {"type": "array"}}},
            ]
        },
    )

    since: DateTimeIn | None = Field(None, description="Every event whose ce time is at or after this")
    from_offsets: Annotated[list[OffsetIn], Field(min_length=1, max_length=1000)] | None = Field(
        None, description="Or: per topic partition, every event from this Kafka offset on"
    )


class SecretOut(BaseModel):
    created_at: datetime
    expires_at: datetime | None


class EndpointOut(BaseModel):
    endpoint_id: str
    url: str
    event_types: list[str]
    description: str
    status: str
    disabled_reason: str
    disabled_at: datetime | None
    created_at: datetime
    secrets: list[SecretOut] = Field(description="When each signing secret was made and when it stops being used")

    @classmethod
    def of(cls, e: Endpoint) -> EndpointOut:
        return cls(
            endpoint_id=e.endpoint_id,
            url=e.url,
            event_types=e.event_types,
            description=e.description,
            status=e.status.value,
            disabled_reason=e.disabled_reason,
            disabled_at=e.disabled_at,
            created_at=e.created_at,
            secrets=[SecretOut(created_at=s.created_at, expires_at=s.expires_at) for s in e.secrets],
        )


class EndpointWithSecretOut(EndpointOut):
    secret: str = Field(description="The new signing secret (whsec_…): shown once, keep it")


class AttemptOut(BaseModel):
    at: datetime
    status_code: int | None
    latency_ms: float
    error: str
    response: str = Field(description="The start of the response body (capped)")


class DeliveryOut(BaseModel):
    delivery_id: str
    endpoint_id: str
    event_id: str = Field(description="Also the webhook-id header: the same for every attempt, resend and replay")
    event_type: str
    key: str
    status: str
    origin: str
    attempt_count: int
    next_attempt_at: datetime | None
    delivered_at: datetime | None
    created_at: datetime
    attempts: list[AttemptOut]

    @classmethod
    def of(cls, d: Delivery) -> DeliveryOut:
        return cls(
            delivery_id=d.delivery_id,
            endpoint_id=d.endpoint_id,
            event_id=d.event_id,
            event_type=d.event_type,
            key=d.key,
            status=d.status.value,
            origin=d.origin,
            attempt_count=d.attempt_count,
            next_attempt_at=d.next_attempt_at if d.status is DeliveryStatus.PENDING else None,
            delivered_at=d.delivered_at,
            created_at=d.created_at,
            attempts=[AttemptOut(**a) for a in d.attempts],
        )


class ReplayOut(BaseModel):
    replay_id: str
    queued: int


def build_router(service: EndpointService, admin_token: SecretStr | None) -> APIRouter:
    require_admin = bearer_guard(admin_token, setting="KASSE_WEBHOOKS_ADMIN_TOKEN")
    router = APIRouter(prefix="/v1/admin", tags=["webhooks"], dependencies=[Depends(require_admin)])
    guarded = problem_responses(401, 403)

    @router.post(
        "/endpoints",
        status_code=status.HTTP_201_CREATED,
        response_model=EndpointWithSecretOut,
        summary="Register an endpoint; the answer carries its signing secret",
        responses=problem_responses(401, 403, 422),
    )
    async def register(body: EndpointIn) -> Any:
        endpoint, secret = await service.register(body.url, body.event_types, body.description)
        return EndpointWithSecretOut(**EndpointOut.of(endpoint).model_dump(), secret=secret)

    @router.get("/endpoints", response_model=list[EndpointOut], summary="Every endpoint", responses=guarded)
    async def list_endpoints() -> Any:
        return [EndpointOut.of(e) for e in await service.all()]

    @router.get(
        "/endpoints/{endpoint_id}",
        response_model=EndpointOut,
        summary="One endpoint",
        responses=problem_responses(401, 403, 404),
    )
    async def get_endpoint(endpoint_id: str) -> Any:
        return EndpointOut.of(await service.get(endpoint_id))

    @router.delete(
        "/endpoints/{endpoint_id}",
        status_code=status.HTTP_204_NO_CONTENT,
        summary="Remove an endpoint: nothing more is delivered to it",
        responses=problem_responses(401, 403, 404),
    )
    async def delete_endpoint(endpoint_id: str) -> None:
        await service.delete(endpoint_id)

    @router.post(
        "/endpoints/{endpoint_id}/rotate-secret",
        response_model=EndpointWithSecretOut,
        summary="A new signing secret; the old one keeps signing too for the grace period",
        responses=problem_responses(401, 403, 404, 409, 422),
    )
    async def rotate(endpoint_id: str, body: RotateIn | None = None) -> Any:
        grace = None if body is None or body.grace_period_s is None else timedelta(seconds=body.grace_period_s)
        endpoint, secret = await service.rotate_secret(endpoint_id, grace)
        return EndpointWithSecretOut(**EndpointOut.of(endpoint).model_dump(), secret=secret)

    @router.post(
        "/endpoints/{endpoint_id}/enable",
        response_model=EndpointOut,
        summary="Re-enable a disabled endpoint; its pending and failed deliveries start a fresh schedule",
        responses=problem_responses(401, 403, 404, 409),
    )
    async def enable(endpoint_id: str) -> Any:
        endpoint, _ = await service.enable(endpoint_id)
        return EndpointOut.of(endpoint)

    @router.get(
        "/endpoints/{endpoint_id}/deliveries",
        response_model=list[DeliveryOut],
        summary="The delivery log, newest first: attempts, status codes, latency, response excerpts",
        responses=problem_responses(401, 403, 404, 422),
    )
    async def deliveries(
        endpoint_id: str,
        status_filter: Annotated[DeliveryStatus | None, Query(alias="status")] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> Any:
        return [DeliveryOut.of(d) for d in await service.deliveries_of(endpoint_id, status_filter, limit)]

    @router.get(
        "/deliveries/{delivery_id}",
        response_model=DeliveryOut,
        summary="One delivery with its attempts",
        responses=problem_responses(401, 403, 404),
    )
    async def delivery(delivery_id: str) -> Any:
        return DeliveryOut.of(await service.delivery(delivery_id))

    @router.post(
        "/deliveries/{delivery_id}/resend",
        status_code=status.HTTP_202_ACCEPTED,
        response_model=DeliveryOut,
        summary="Send a delivered or failed message again (same webhook-id), as a new delivery",
        responses=problem_responses(401, 403, 404, 409),
    )
    async def resend(delivery_id: str) -> Any:
        return DeliveryOut.of(await service.resend(delivery_id))

    @router.post(
        "/endpoints/{endpoint_id}/replay",
        status_code=status.HTTP_202_ACCEPTED,
        response_model=ReplayOut,
        summary="Queue again every event since a time (or from Kafka offsets) that the endpoint subscribes to",
        responses=problem_responses(401, 403, 404, 422),
    )
    async def replay(endpoint_id: str, body: ReplayIn) -> Any:
        offsets = None if body.from_offsets is None else {(o.topic, o.partition): o.offset for o in body.from_offsets}
        replay_id, queued = await service.replay(endpoint_id, body.since, offsets)
        return ReplayOut(replay_id=replay_id, queued=queued)

    return router
