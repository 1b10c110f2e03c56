"""Events of the shipping service: methods and rates, shipments, returns."""

from __future__ import annotations

from datetime import date
from typing import Annotated, ClassVar

from pydantic import AwareDatetime, Field

from kasse_contracts import topics
from kasse_contracts.base import (
    ContractModel,
    CountryCode,
    CurrencyCode,
    Event,
    FunnelEvent,
    Identifier,
    MinorUnits,
    Money,
    OpenEnum,
)
from kasse_contracts.events.common import StockLine


class MethodKind(OpenEnum):
    STANDARD = "standard"
    EXPRESS = "express"
    PICKUP_POINT = "pickup_point"


class PriceBand(ContractModel):
    """From this basket subtotal (inclusive) up to the next band, shipping costs `price`."""

    min_subtotal: MinorUnits
    price: MinorUnits


class ShippingRate(ContractModel):
    zone: str
    countries: list[CountryCode]
    currency: CurrencyCode
    price_bands: Annotated[list[PriceBand], Field(min_length=1)]
    per_kg: MinorUnits = 0
    free_shipping_threshold: MinorUnits | None = None
    min_business_days: Annotated[int, Field(ge=0)]
    max_business_days: Annotated[int, Field(ge=0)]


class ShippingMethod(ContractModel):
    method_id: Identifier
    name: str
    kind: MethodKind
    carrier: str
    rates: list[ShippingRate]


class ShippingMethodsPublished(Event):
    """The full current rate table: readers replace what they had with the highest `revision`."""

    event_type: ClassVar[str] = "io.kasse.shipping.ShippingMethodsPublished.v1"
    topic: ClassVar[str] = topics.SHIPPING_METHODS
    key_field: ClassVar[str] = "rate_table_id"

    rate_table_id: Identifier = "default"
    revision: Annotated[int, Field(ge=1)]
    origin_country: CountryCode
    origin_timezone: str = Field(description="IANA zone of the warehouse, e.g. Europe/Berlin")
    cutoff_local_time: str = Field(pattern=r"^\d{2}:\d{2}$", description="Orders after this ship next day")
    holidays: list[date] = Field(default_factory=list, description="Origin public holidays: no dispatch")
    methods: list[ShippingMethod]


class ShipmentCreated(FunnelEvent):
    """A shipment was booked with the carrier for the order; it carries the tracking number."""

    event_type: ClassVar[str] = "io.kasse.shipping.ShipmentCreated.v1"
    topic: ClassVar[str] = topics.SHIPPING
    key_field: ClassVar[str] = "order_id"

    order_id: Identifier
    shipment_id: Identifier
    method_id: Identifier
    carrier: str
    tracking_number: str
    tracking_url: str | None = None
    promised_delivery_date: date


class ShipmentDispatched(FunnelEvent):
    """The carrier picked the parcel up at the warehouse."""

    event_type: ClassVar[str] = "io.kasse.shipping.ShipmentDispatched.v1"
    topic: ClassVar[str] = topics.SHIPPING
    key_field: ClassVar[str] = "order_id"

    order_id: Identifier
    shipment_id: Identifier
    carrier: str
    tracking_number: str
    dispatched_at: AwareDatetime


class ShipmentDelivered(FunnelEvent):
    """The carrier delivered the parcel."""

    event_type: ClassVar[str] = "io.kasse.shipping.ShipmentDelivered.v1"
    topic: ClassVar[str] = topics.SHIPPING
    key_field: ClassVar[str] = "order_id"

    order_id: Identifier
    shipment_id: Identifier
    delivered_at: AwareDatetime


class ReturnReason(OpenEnum):
    DAMAGED = "damaged"
    WRONG_ITEM = "wrong_item"
    NOT_AS_DESCRIBED = "not_as_described"
    CHANGED_MIND = "changed_mind"
    OTHER = "other"


class ItemCondition(OpenEnum):
    RESELLABLE = "resellable"  # back to stock
    DAMAGED = "damaged"  # written off


class ReturnLine(StockLine):
    refund_amount: Money
    condition: ItemCondition | None = Field(
        None, description="On ReturnReceived: the state the warehouse found the item in; only resellable restocks"
    )


class ReturnRequested(FunnelEvent):
    """A return inside the window was accepted and a label issued."""

    event_type: ClassVar[str] = "io.kasse.shipping.ReturnRequested.v1"
    topic: ClassVar[str] = topics.SHIPPING
    key_field: ClassVar[str] = "order_id"

    order_id: Identifier
    return_id: Identifier
    lines: Annotated[list[ReturnLine], Field(min_length=1)]
    reason: ReturnReason
    comment: str = ""
    label_reference: str
    refund_amount: Money
    shipping_refund: Money | None = Field(
        None, description="The part of refund_amount that pays back shipping (policy: when everything came back)"
    )


class ReturnReceived(FunnelEvent):
    """The returned goods arrived at the warehouse: payment refunds `refund_amount`."""

    event_type: ClassVar[str] = "io.kasse.shipping.ReturnReceived.v1"
    topic: ClassVar[str] = topics.SHIPPING
    key_field: ClassVar[str] = "order_id"

    order_id: Identifier
    return_id: Identifier
    lines: list[ReturnLine]
    refund_amount: Money = Field(
        description="What the customer paid for these units (their discount share), plus any shipping_refund"
    )
    shipping_refund: Money | None = Field(
        None, description="The part of refund_amount that pays back shipping (policy: when everything came back)"
    )


class ShipmentCancelled(FunnelEvent):
    """Shipping accepted an order's cancellation: the parcel was stopped before dispatch (or none had been
    booked). Only now may a paid order be refunded."""

    event_type: ClassVar[str] = "io.kasse.shipping.ShipmentCancelled.v1"
    topic: ClassVar[str] = topics.SHIPPING
    key_field: ClassVar[str] = "order_id"

    order_id: Identifier
    shipment_id: Identifier | None = Field(None, description="The stopped shipment; absent when none was booked")
    reason: str = Field("", description="The cancellation's reason, as OrderCancelled gave it")


class CancellationRefused(FunnelEvent):
    """The parcel had already left the warehouse when the cancellation arrived: the order stands (the
    customer can return it). Nobody refunds or releases stock for this cancellation."""

    event_type: ClassVar[str] = "io.kasse.shipping.CancellationRefused.v1"
    topic: ClassVar[str] = topics.SHIPPING
    key_field: ClassVar[str] = "order_id"

    order_id: Identifier
    shipment_id: Identifier
    reason: str = Field("", description="Why the cancellation was refused, e.g. already_dispatched")
    dispatched_at: AwareDatetime
