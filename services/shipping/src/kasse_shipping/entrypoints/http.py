"""HTTP API: quotes and methods, tracking, the return policy, return requests and the warehouse's
admin call. Routes translate to and from the use cases and nothing else."""

from __future__ import annotations

import uuid
from datetime import date, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Response
from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, SecretStr, field_validator

from kasse_common.http import JSON_INTEGER, bearer_guard, problem_responses
from kasse_contracts.base import CountryCode, Money, closed_enum, known_value
from kasse_contracts.events import ItemCondition, ReturnReason
from kasse_contracts.events.shipping import MethodKind, ShippingMethod
from kasse_shipping.adapters.carrier import SimulatedCarrier
from kasse_shipping.application.fulfilment import FulfilmentService
from kasse_shipping.application.rates import RateTableService
from kasse_shipping.domain.fulfilment import Fulfilment, RequestedLine, ReturnCase, TimelineEntry
from kasse_shipping.domain.rates import Basket


def _problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return problem_responses(
        *statuses, descriptions={422: "Invalid request or refused by the rules (the detail says why)"}
    )


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- quotes -------------------------------------------------------------------------------------
class BasketIn(_In):
    subtotal: Money = Field(description="Value of the goods, in minor units")
    weight_grams: Annotated[int, Field(ge=0, le=1_000_000), JSON_INTEGER]
    item_count: Annotated[int, Field(ge=1, le=10_000), JSON_INTEGER]  # an empty basket has no quote


class QuoteRequest(_In):
    country: CountryCode = Field(description="Destination, ISO 3166-1 alpha-2", examples=["DE"])
    postal_code: Annotated[str, Field(min_length=1, max_length=20)] | None = None
    basket: BasketIn
    ordered_at: AwareDatetime | None = Field(None, description="What-if order time (default: now)")
    method_id: Annotated[str, Field(min_length=1, max_length=100)] | None = Field(
        None, description="Quote only this method"
    )

    @field_validator("country", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.strip().upper() if isinstance(value, str) else value


class MethodQuoteOut(BaseModel):
    method_id: str
    name: str
    kind: MethodKind
    carrier: str
    zone: str
    price: Money
    free_shipping: bool = Field(description="True when the basket reached the free-shipping threshold")
    free_shipping_threshold: Money | None
    dispatch_date: date = Field(description="The business day the parcel leaves the warehouse")
    delivery_from: date
    delivery_to: date
    min_business_days: int
    max_business_days: int


class QuoteOut(BaseModel):
    country: str
    ordered_at: datetime
    rate_table_revision: int
    methods: list[MethodQuoteOut] = Field(description="Cheapest first")


class RateTableOut(BaseModel):
    rate_table_id: str
    revision: int
    origin_country: str
    origin_timezone: str
    cutoff_local_time: str
    holidays: list[date]
    methods: list[ShippingMethod]


# -- tracking and returns ------------------------------------------------------------------------
class ReturnLineOut(BaseModel):
    product_id: str
    sku: str
    quantity: int
    refund_amount: Money
    condition: ItemCondition | None = Field(None, description="As the warehouse found it (once received)")


# We publish only values of this release (readers keep unknown ones); the OpenAPI lists them.
KnownCondition = Annotated[ItemCondition, AfterValidator(known_value), closed_enum(ItemCondition)]
KnownReason = Annotated[ReturnReason, AfterValidator(known_value), closed_enum(ReturnReason)]


class ReturnArrival(_In):
    conditions: dict[
        Annotated[str, Field(min_length=1, max_length=200)],
        KnownCondition,
    ] = Field(
        default_factory=dict,
        description="Per product id: resellable (back to stock) or damaged; a product not listed is resellable",
    )


class ReturnOut(BaseModel):
    return_id: str
    order_id: str
    status: str
    reason: ReturnReason
    comment: str
    label_reference: str = Field(description="Print it and stick it on the parcel")
    lines: list[ReturnLineOut]
    refund_amount: Money = Field(description="What was paid for these units (discount share) plus shipping_refund")
    shipping_refund: Money | None = Field(None, description="Shipping paid back: the return that completes the order")
    requested_at: datetime
    received_at: datetime | None


class PublicTrackingOut(BaseModel):
    """What anyone holding a tracking number sees (it is printed on the parcel): the parcel's progress,
    never the order id, the shipment id, returns or anything about the buyer."""

    status: str
    carrier: str
    method_id: str
    tracking_number: str
    tracking_url: str | None
    promised_delivery_date: date
    created_at: datetime
    dispatched_at: datetime | None
    delivered_at: datetime | None
    cancelled: bool
    timeline: list[TimelineEntry]


class TrackingOut(BaseModel):
    order_id: str
    shipment_id: str
    status: str
    carrier: str
    method_id: str
    tracking_number: str
    tracking_url: str | None
    promised_delivery_date: date
    created_at: datetime
    dispatched_at: datetime | None
    delivered_at: datetime | None
    cancelled: bool
    timeline: list[TimelineEntry]
    returns: list[ReturnOut]
    return_deadline: datetime | None = Field(description="Returns are accepted until then (once delivered)")


class ReturnLineIn(_In):
    product_id: Annotated[str, Field(min_length=1, max_length=200)]
    quantity: Annotated[int, Field(ge=1, le=10_000), JSON_INTEGER]


class ReturnRequestIn(_In):
    email: Annotated[str, Field(min_length=3, max_length=254, description="The order's email: proves it is yours")]
    lines: Annotated[list[ReturnLineIn], Field(min_length=1, max_length=100)]
    reason: Annotated[
        ReturnReason, AfterValidator(known_value), closed_enum(ReturnReason)
    ]  # we publish only values of this release
    comment: Annotated[str, Field(max_length=2000)] = ""


class ReturnPolicyOut(BaseModel):
    window_days: int = Field(description="Days after delivery during which a return can be requested")
    conditions: list[str]
    refund_shipping: str = Field(
        description="when_all_returned: the return that brings the last unit back refunds the shipping; never"
    )


def _return_out(order_id: str, case: ReturnCase) -> ReturnOut:
    return ReturnOut(
        return_id=case.return_id,
        order_id=order_id,
        status=case.status.value,
        reason=case.reason,
        comment=case.comment,
        label_reference=case.label_reference,
        lines=[ReturnLineOut(**line.model_dump()) for line in case.lines],
        refund_amount=case.refund_amount,
        shipping_refund=case.shipping_refund,
        requested_at=case.requested_at,
        received_at=case.received_at,
    )


def _tracking_out(f: Fulfilment, service: FulfilmentService) -> TrackingOut:
    s = f.shipment
    assert s is not None
    return TrackingOut(
        order_id=f.order_id,
        shipment_id=s.shipment_id,
        status=s.status.value,
        carrier=s.carrier,
        method_id=s.method_id,
        tracking_number=s.tracking_number,
        tracking_url=s.tracking_url,
        promised_delivery_date=s.promised_delivery_date,
        created_at=s.created_at,
        dispatched_at=s.dispatched_at,
        delivered_at=s.delivered_at,
        cancelled=f.cancelled,
        timeline=s.timeline,
        returns=[_return_out(f.order_id, r) for r in f.returns],
        return_deadline=service.policy.deadline(s.delivered_at) if s.delivered_at else None,
    )


# Module level: FastAPI resolves the (postponed) annotations of routes in this module's globals.
OrderId = Annotated[str, Field(min_length=1, max_length=200)]
IdempotencyHeader = Annotated[
    str | None,
    Header(alias="Idempotency-Key", min_length=1, max_length=200, description="Retry safely: same key, same return"),
]
SessionHeader = Annotated[str | None, Header(alias="X-Session-Id", min_length=1, max_length=200)]


def build_router(
    rates: RateTableService,
    fulfilment: FulfilmentService,
    admin_token: SecretStr | None,
    carrier: SimulatedCarrier | None = None,
) -> APIRouter:
    router = APIRouter(prefix="/v1")

    require_admin = bearer_guard(admin_token, setting="KASSE_SHIPPING_ADMIN_TOKEN")

    @router.get(
        "/shipping/methods",
        tags=["rates"],
        summary="The current methods, rates and delivery rules (what ShippingMethodsPublished carries)",
        response_model=RateTableOut,
    )
    async def methods() -> RateTableOut:
        t = rates.table
        return RateTableOut(revision=rates.revision or 0, **t.model_dump())

    @router.post(
        "/shipping/quotes",
        tags=["rates"],
        summary="Price and delivery dates of every method for a destination and a basket",
        response_model=QuoteOut,
        responses=_problems(422),
    )
    async def quote(body: QuoteRequest) -> QuoteOut:
        basket = Basket(
            subtotal=body.basket.subtotal, weight_grams=body.basket.weight_grams, item_count=body.basket.item_count
        )
        result = rates.quote(
            country=body.country,
            postal_code=body.postal_code,
            basket=basket,
            ordered_at=body.ordered_at,
            method_id=body.method_id,
        )
        return QuoteOut(
            country=body.country,
            ordered_at=result.ordered_at,
            rate_table_revision=result.revision,
            methods=[
                MethodQuoteOut(
                    method_id=q.method.method_id,
                    name=q.method.name,
                    kind=q.method.kind,
                    carrier=q.method.carrier,
                    zone=q.rate.zone,
                    price=q.price,
                    free_shipping=q.free_shipping,
                    free_shipping_threshold=(
                        Money(amount=q.rate.free_shipping_threshold, currency=q.rate.currency)
                        if q.rate.free_shipping_threshold is not None
                        else None
                    ),
                    dispatch_date=q.dispatch_date,
                    delivery_from=q.delivery_from,
                    delivery_to=q.delivery_to,
                    min_business_days=q.rate.min_business_days,
                    max_business_days=q.rate.max_business_days,
                )
                for q in result.methods
            ],
        )

    @router.get(
        "/orders/{order_id}/shipment",
        tags=["tracking"],
        summary="Track an order's shipment: status, promised date and the event timeline",
        response_model=TrackingOut,
        responses=_problems(404),
    )
    async def track_order(order_id: OrderId) -> TrackingOut:
        return _tracking_out(await fulfilment.tracking_by_order(order_id), fulfilment)

    @router.get(
        "/tracking/{tracking_number}",
        tags=["tracking"],
        summary="Track a parcel by its tracking number (public: no order id, no returns)",
        response_model=PublicTrackingOut,
        responses=_problems(404),
    )
    async def track_number(
        tracking_number: Annotated[str, Field(min_length=1, max_length=100)],
    ) -> PublicTrackingOut:
        full = _tracking_out(await fulfilment.tracking_by_number(tracking_number), fulfilment)
        return PublicTrackingOut.model_validate(full.model_dump(include=set(PublicTrackingOut.model_fields)))

    @router.get(
        "/returns/policy",
        tags=["returns"],
        summary="The return policy: window in days and conditions",
        response_model=ReturnPolicyOut,
    )
    async def return_policy() -> ReturnPolicyOut:
        return ReturnPolicyOut(
            window_days=fulfilment.policy.window_days,
            conditions=fulfilment.policy.conditions,
            refund_shipping=fulfilment.policy.refund_shipping.value,
        )

    @router.post(
        "/orders/{order_id}/returns",
        tags=["returns"],
        status_code=201,
        summary="Request a return of delivered items; answers with the return label reference",
        description="Refused with 422 (and a `reason`: not_delivered, window_closed, quantity_exceeds_delivered) "
        "for items not delivered, outside the return window or beyond the delivered quantity.",
        response_model=ReturnOut,
        responses=_problems(404, 422),
    )
    async def request_return(
        order_id: OrderId,
        body: ReturnRequestIn,
        response: Response,
        x_session_id: SessionHeader = None,
        idempotency_key: IdempotencyHeader = None,
    ) -> ReturnOut:
        session_id = x_session_id or uuid.uuid4().hex
        response.headers["X-Session-Id"] = session_id
        case = await fulfilment.request_return(
            order_id,
            email=body.email,
            lines=[RequestedLine(product_id=line.product_id, quantity=line.quantity) for line in body.lines],
            reason=body.reason,
            comment=body.comment,
            session_id=session_id,
            idempotency_key=idempotency_key,
        )
        return _return_out(order_id, case)

    @router.post(
        "/admin/returns/{return_id}/received",
        tags=["admin"],
        summary="The warehouse received a return: publishes ReturnReceived (payment refunds on it)",
        description="Idempotent: recording the same arrival again changes nothing and returns the return.",
        response_model=ReturnOut,
        responses=_problems(401, 403, 404),
        dependencies=[Depends(require_admin)],
    )
    async def return_received(
        return_id: Annotated[str, Field(min_length=1, max_length=100)], arrival: ReturnArrival | None = None
    ) -> ReturnOut:
        order_id, case = await fulfilment.receive_return(return_id, arrival.conditions if arrival else None)
        return _return_out(order_id, case)

    if carrier is not None:

        @router.get(
            "/admin/carrier",
            tags=["admin"],
            summary="The simulated carrier's current timings",
            response_model=CarrierTimings,
            responses=_problems(401, 403),
            dependencies=[Depends(require_admin)],
        )
        async def carrier_timings() -> CarrierTimings:
            dispatch, deliver = carrier.timings
            return CarrierTimings(dispatch_after_s=dispatch.total_seconds(), deliver_after_s=deliver.total_seconds())

        @router.put(
            "/admin/carrier",
            tags=["admin"],
            summary="Change the simulated carrier's timings (an operator's 'slow carrier' switch)",
            description="Applies to the scans scheduled from now on; this instance only. Not persisted.",
            response_model=CarrierTimings,
            responses=_problems(401, 403, 422),
            dependencies=[Depends(require_admin)],
        )
        async def set_carrier_timings(body: CarrierTimings) -> CarrierTimings:
            carrier.set_timings(
                dispatch_after=timedelta(seconds=body.dispatch_after_s),
                deliver_after=timedelta(seconds=body.deliver_after_s),
            )
            return body

    return router


class CarrierTimings(_In):
    # Strict: `false` or "5" is not a number of seconds (lax pydantic would take them).
    dispatch_after_s: Annotated[
        float, Field(ge=0, le=30 * 24 * 3600, strict=True, description="Booking to pick-up scan")
    ]
    deliver_after_s: Annotated[
        float, Field(ge=0, le=30 * 24 * 3600, strict=True, description="Pick-up to delivery scan")
    ]
