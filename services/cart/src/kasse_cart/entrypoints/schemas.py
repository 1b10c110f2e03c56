"""HTTP request and response bodies (the documented API); translation from the domain's views."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from kasse_cart.application.carts import CartView, vat_breakdown
from kasse_cart.application.orders import OrderView
from kasse_cart.domain.order import Order, OrderStatus
from kasse_cart.domain.promotions import Coupon, CouponKind
from kasse_cart.domain.shipping import ShippingQuote
from kasse_common.http import JSON_INTEGER, DateTimeIn, problem_responses
from kasse_contracts.events import Address, DiscountLine, LineItem, ShippingSelection
from kasse_contracts.events.common import TaxClass, VatBreakdown

# Item prices are gross for consumers (PAngV): said next to the prices the shopper sees.
PRICE_NOTE = "inkl. MwSt., zzgl. Versand"
EXPORT_NOTE = "steuerfreie Ausfuhrlieferung, keine MwSt., zzgl. Versand"


def price_note(export: bool) -> str:
    return EXPORT_NOTE if export else PRICE_NOTE


EMAIL_PATTERN = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"
Identifier = Annotated[str, Field(min_length=1, max_length=200)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return problem_responses(
        *statuses,
        descriptions={
            401: "Missing admin token",
            403: "Wrong admin token",
            404: "Unknown id, or a token that does not match it",
        },
    )


class Money(BaseModel):
    amount: int = Field(description="Minor units (cents)")
    currency: str


# -- requests -------------------------------------------------------------------------------------
class CreateCart(Strict):
    customer_id: Identifier | None = Field(
        None, description="Optional; must equal the verified customer token's subject (it names no one by itself)"
    )
    email: Annotated[str, Field(pattern=EMAIL_PATTERN, max_length=254)] | None = None


class AddItem(Strict):
    product_id: Identifier
    quantity: Annotated[int, Field(ge=1, le=1000), JSON_INTEGER] = 1


class SetQuantity(Strict):
    quantity: Annotated[int, Field(ge=1, le=1000), JSON_INTEGER]


NOT_BLANK = r"\S"  # at least one character that is not white space


# A coupon code as the cart normalises it (domain.promotions.normalise_code), ASCII only in the API.
COUPON_CODE = r"^ *[A-Za-z0-9_-]{1,40} *$"


class ApplyCoupon(Strict):
    code: Annotated[str, Field(min_length=1, max_length=42, pattern=COUPON_CODE)]


class AddressIn(Address):
    """The contract's Address as an input: the fields that must not be blank say so in the OpenAPI."""

    name: Annotated[str, Field(min_length=1, max_length=200, pattern=NOT_BLANK)]
    line1: Annotated[str, Field(min_length=1, max_length=200, pattern=NOT_BLANK)]
    postal_code: Annotated[str, Field(min_length=1, max_length=20, pattern=NOT_BLANK)]
    city: Annotated[str, Field(min_length=1, max_length=100, pattern=NOT_BLANK)]


class BeginCheckout(Strict):
    email: Annotated[str, Field(pattern=EMAIL_PATTERN, max_length=254)]
    shipping_address: AddressIn
    shipping_method_id: Identifier
    billing_country: Annotated[str, Field(pattern=r"^[A-Z]{2}$")] | None = None


# Upper bounds a store can hold (BSON int64) and a shop can mean; larger numbers were a 500.
MAX_AMOUNT = 10**12  # minor units
MAX_COUNT = 10**9


class NewCoupon(Strict):
    code: Annotated[str, Field(min_length=1, max_length=42, pattern=COUPON_CODE)]
    kind: CouponKind
    value: Annotated[int, Field(ge=1, le=MAX_AMOUNT, description="Percent (1-100) or minor units"), JSON_INTEGER]
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$")] = "EUR"
    min_subtotal: Annotated[int, Field(ge=0, le=MAX_AMOUNT), JSON_INTEGER] = 0
    valid_from: DateTimeIn | None = None
    valid_until: DateTimeIn | None = None
    usage_limit: Annotated[int, Field(ge=1, le=MAX_COUNT), JSON_INTEGER] | None = None
    per_customer_limit: Annotated[int, Field(ge=1, le=MAX_COUNT), JSON_INTEGER] | None = None


# -- responses ------------------------------------------------------------------------------------
class CartLineOut(BaseModel):
    product_id: str
    sku: str
    name: str
    category: str
    quantity: int
    unit_price: Money
    line_total: Money
    price_changed: bool = Field(description="The price changed since the shopper added or last changed the line")
    previous_unit_price: Money | None
    available: bool = Field(description="False when the catalog no longer sells this quantity; checkout refuses")
    discount: Money = Field(description="This line's share of the item discounts")
    discounted_total: Money = Field(description="What the line costs after its share of the discounts")
    tax_class: TaxClass
    vat_rate_basis_points: int = Field(description="The VAT rate for the destination shown (1900 = 19 %)")


class DiscountOut(BaseModel):
    code: str | None = Field(description="The coupon, or null for an automatic promotion")
    description: str
    amount: Money
    applies_to: str


class ShippingOut(BaseModel):
    method_id: str
    name: str
    carrier: str
    price: Money
    promised_from: date
    promised_to: date


class TotalsOut(BaseModel):
    subtotal: Money
    discounts: list[DiscountOut]
    discount_total: Money
    shipping_total: Money | None = Field(description="Null until a shipping method is chosen at checkout")
    total: Money
    free_shipping: bool = Field(description="The basket qualifies for free shipping")
    coupon_notice: str | None = Field(description="Why the applied coupon gives no discount right now")
    vat: VatBreakdown = Field(description="The VAT in the total per rate (the shop's country until checkout)")
    price_note: str = Field(description="'inkl. MwSt., zzgl. Versand'; for an export, that no VAT is charged")


class CartOut(BaseModel):
    cart_id: str
    status: str
    session_id: str
    customer_id: str | None
    item_count: int
    lines: list[CartLineOut]
    coupon_code: str | None
    offered_coupon: str | None = Field(
        None, description="A coupon code the cart page offers this session (an experiment on cart_coupon); null: none"
    )
    totals: TotalsOut
    checkout_started: bool
    shipping: ShippingOut | None = Field(description="The chosen method, its price and delivery promise")
    order_id: str | None


class CreatedCart(BaseModel):
    cart_id: str
    cart_token: str = Field(description="Shown once: send it as X-Cart-Token on every call for this cart")
    cart: CartOut


class PlacedOrderOut(BaseModel):
    order_id: str
    order_token: str = Field(description="Send it as X-Order-Token to view or cancel the order")
    status: OrderStatus
    total: Money
    replayed: bool = Field(description="True when an earlier request with the same Idempotency-Key created it")


class TimelineOut(BaseModel):
    at: datetime
    status: OrderStatus
    note: str


class TrackingOut(BaseModel):
    carrier: str
    tracking_number: str
    tracking_url: str | None
    promised_delivery_date: date | None


class OrderOut(BaseModel):
    order_id: str
    status: OrderStatus
    placed_at: datetime
    email: str
    total: Money
    lines: list[LineItem]
    discounts: list[DiscountLine]
    shipping: ShippingSelection | None
    shipping_address: Address | None
    subtotal: Money | None
    discount_total: Money | None
    shipping_total: Money | None
    vat: VatBreakdown | None = Field(description="The VAT in the total per rate; null for orders placed before VAT")
    price_note: str
    cancellation_reason: str | None = Field(
        None, description="Why the order was cancelled (payment_timeout: not paid by payment_due_at)"
    )
    cancellation_refused: bool = Field(
        False, description="A cancellation came after dispatch: the order stands (return it instead)"
    )
    payment_due_at: datetime | None = Field(None, description="An unpaid order is cancelled at this time")
    refunded: Money
    tracking: TrackingOut | None
    timeline: list[TimelineOut]
    client_secret: str | None = Field(
        None, description="The payment's client secret while it needs the customer's action; else null"
    )


class AdminOrderOut(OrderOut):
    cart_id: str
    session_id: str
    customer_id: str | None


class ShippingOptionOut(ShippingOut):
    pass


class CouponOut(BaseModel):
    code: str
    kind: CouponKind
    value: int
    currency: str
    min_subtotal: int
    valid_from: datetime | None
    valid_until: datetime | None
    usage_limit: int | None
    per_customer_limit: int | None
    used: int


# -- translation ----------------------------------------------------------------------------------
def money(amount: int, currency: str) -> Money:
    return Money(amount=amount, currency=currency)


def shipping_out(quote: ShippingQuote) -> ShippingOut:
    return ShippingOut(
        method_id=quote.method_id,
        name=quote.name,
        carrier=quote.carrier,
        price=money(quote.price, quote.currency),
        promised_from=quote.promised_from,
        promised_to=quote.promised_to,
    )


def cart_out(view: CartView) -> CartOut:
    cart, totals, c = view.cart, view.totals, view.cart.currency
    return CartOut(
        cart_id=cart.cart_id,
        status=cart.status.value,
        session_id=cart.session_id,
        customer_id=cart.customer_id,
        item_count=cart.item_count,
        lines=[
            CartLineOut(
                discount=money(priced.discount, c),
                discounted_total=money(priced.discounted_total, c),
                tax_class=TaxClass(line.tax_class),
                vat_rate_basis_points=priced.basis_points,
                product_id=line.product_id,
                sku=line.sku,
                name=line.name,
                category=line.category,
                quantity=line.quantity,
                unit_price=money(line.unit_price, c),
                line_total=money(line.line_total, c),
                price_changed=line.price_changed,
                available=line.available,
                previous_unit_price=(
                    money(line.previous_unit_price, c)
                    if line.price_changed and line.previous_unit_price is not None
                    else None
                ),
            )
            for line, priced in zip(cart.lines, view.basket.lines, strict=True)
        ],
        coupon_code=cart.coupon_code,
        offered_coupon=view.offered_coupon,
        totals=TotalsOut(
            subtotal=money(totals.subtotal, c),
            discounts=[
                DiscountOut(code=d.code, description=d.description, amount=money(d.amount, c), applies_to=d.applies_to)
                for d in totals.discounts
            ],
            discount_total=money(totals.discount_total, c),
            shipping_total=money(totals.shipping_total, c) if totals.shipping_total is not None else None,
            total=money(totals.total, c),
            free_shipping=totals.free_shipping,
            coupon_notice=totals.coupon_notice,
            vat=vat_breakdown(view.vat, c),
            price_note=price_note(view.vat.export),
        ),
        checkout_started=cart.checkout is not None,
        shipping=shipping_out(view.shipping) if view.shipping else None,
        order_id=cart.order_id,
    )


def _order_fields(order: Order) -> dict[str, Any]:
    d, c = order.details, order.currency

    def m(key: str) -> Money | None:
        value = d.get(key)
        return Money(**value) if value else None

    shipment = order.shipment
    return {
        "order_id": order.order_id,
        "status": order.status,
        "placed_at": order.placed_at,
        "email": order.email,
        "total": money(order.total, c),
        "lines": d.get("lines", []),
        "discounts": d.get("discounts", []),
        "shipping": d.get("shipping"),
        "shipping_address": d.get("shipping_address"),
        "subtotal": m("subtotal"),
        "discount_total": m("discount_total"),
        "shipping_total": m("shipping_total"),
        "vat": d.get("vat"),
        "price_note": price_note(bool((d.get("vat") or {}).get("export"))),
        "cancellation_reason": order.cancel_reason.value if order.cancel_reason and order.is_cancelled else None,
        "cancellation_refused": order.cancellation_refused_at is not None,
        "payment_due_at": order.payment_due_at if order.awaits_payment else None,
        "refunded": money(order.refunded_amount, c),
        "tracking": TrackingOut(
            carrier=shipment.carrier,
            tracking_number=shipment.tracking_number,
            tracking_url=shipment.tracking_url,
            promised_delivery_date=shipment.promised_delivery_date,
        )
        if shipment
        else None,
        "timeline": [TimelineOut(at=t.at, status=t.status, note=t.note) for t in order.timeline],
    }


def order_out(view: OrderView) -> OrderOut:
    return OrderOut(**_order_fields(view.order), client_secret=view.client_secret)


def admin_order_out(order: Order) -> AdminOrderOut:
    return AdminOrderOut(
        **_order_fields(order), cart_id=order.cart_id, session_id=order.session_id, customer_id=order.customer_id
    )


def coupon_out(coupon: Coupon) -> CouponOut:
    return CouponOut(
        code=coupon.code,
        kind=coupon.kind,
        value=coupon.value,
        currency=coupon.currency,
        min_subtotal=coupon.min_subtotal,
        valid_from=coupon.valid_from,
        valid_until=coupon.valid_until,
        usage_limit=coupon.usage_limit,
        per_customer_limit=coupon.per_customer_limit,
        used=coupon.used,
    )
