"""Events of an order's life, owned by the cart service."""

from __future__ import annotations

from datetime import date
from typing import Annotated, ClassVar

from pydantic import Field

from kasse_contracts import topics
from kasse_contracts.base import Channel, ContractModel, CountryCode, FunnelEvent, Identifier, Money, OpenEnum
from kasse_contracts.events.common import Address, DiscountLine, LineItem, VatBreakdown


class ShippingSelection(ContractModel):
    method_id: Identifier
    name: str
    carrier: str
    price: Money
    promised_from: date
    promised_to: date


class OrderPlaced(FunnelEvent):
    """An order was placed (GA4 `purchase`, which GA4 fires on order confirmation)."""

    event_type: ClassVar[str] = "io.kasse.cart.OrderPlaced.v1"
    topic: ClassVar[str] = topics.ORDERS
    key_field: ClassVar[str] = "order_id"
    ga4_event: ClassVar[str | None] = "purchase"

    order_id: Identifier
    cart_id: Identifier
    email: Annotated[str, Field(pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$", max_length=254)]
    lines: Annotated[list[LineItem], Field(min_length=1)]
    discounts: list[DiscountLine] = Field(default_factory=list)
    coupon_codes: list[str] = Field(default_factory=list)
    shipping: ShippingSelection
    shipping_address: Address
    billing_country: CountryCode | None = Field(None, description="ISO 3166-1 alpha-2, when the shopper gave one")
    subtotal: Money
    discount_total: Money
    shipping_total: Money
    total: Money
    vat: VatBreakdown | None = Field(None, description="The VAT in `total` per rate (prices are gross)")
    channel: Channel | None = None
    client_ip: str | None = Field(None, description="For fraud screening; absent when not collected")
    order_token_sha256: str | None = Field(
        None,
        pattern=r"^[0-9a-f]{64}$",
        description=(
            "SHA-256 (hex) of the order token the shopper was given: lets a service check a token it is shown "
            "(a verified-purchase review) without calling cart or ever holding the token; the token itself is "
            "256 random-looking bits, so its hash gives nothing away"
        ),
    )


class CancellationReason(OpenEnum):
    STOCK_REJECTED = "stock_rejected"
    PAYMENT_FAILED = "payment_failed"
    FRAUD_SUSPECTED = "fraud_suspected"
    CUSTOMER_REQUEST = "customer_request"
    PAYMENT_TIMEOUT = "payment_timeout"  # not paid within the shop's payment deadline


class OrderCancelled(FunnelEvent):
    """The order was cancelled; `was_paid` tells payment whether a refund is due."""

    event_type: ClassVar[str] = "io.kasse.cart.OrderCancelled.v1"
    topic: ClassVar[str] = topics.ORDERS
    key_field: ClassVar[str] = "order_id"

    order_id: Identifier
    reason: CancellationReason
    detail: str = ""
    was_paid: bool = False
    total: Money
