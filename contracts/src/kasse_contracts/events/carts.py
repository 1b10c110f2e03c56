"""Events of the cart service: the cart and the start of checkout."""

from __future__ import annotations

from typing import Annotated, ClassVar

from pydantic import AwareDatetime, Field

from kasse_contracts import topics
from kasse_contracts.base import FunnelEvent, Identifier, Money, OpenEnum
from kasse_contracts.events.common import DiscountLine, LineItem


class CartAction(OpenEnum):
    ADDED = "added"  # GA4 add_to_cart
    QUANTITY_CHANGED = "quantity_changed"  # add_to_cart or remove_from_cart, by the sign of the delta
    REMOVED = "removed"  # GA4 remove_from_cart
    CLEARED = "cleared"
    COUPON_APPLIED = "coupon_applied"
    COUPON_REMOVED = "coupon_removed"
    PRICE_UPDATED = "price_updated"


class CartUpdated(FunnelEvent):
    """The cart changed (GA4 `add_to_cart` / `remove_from_cart`); carries a snapshot."""

    event_type: ClassVar[str] = "io.kasse.cart.CartUpdated.v1"
    topic: ClassVar[str] = topics.CARTS
    key_field: ClassVar[str] = "cart_id"
    ga4_event: ClassVar[str | None] = "add_to_cart"

    cart_id: Identifier
    action: CartAction
    line: LineItem | None = Field(None, description="The line the action touched, after the action")
    quantity_delta: int = Field(0, description="+n added, -n removed")
    items: list[LineItem]
    coupon_codes: list[str] = Field(default_factory=list)
    subtotal: Money
    discounts: list[DiscountLine] = Field(default_factory=list)
    total: Money


class CartAbandoned(FunnelEvent):
    """A cart with items saw no checkout for the configured time. Published once per cart."""

    event_type: ClassVar[str] = "io.kasse.cart.CartAbandoned.v1"
    topic: ClassVar[str] = topics.CARTS
    key_field: ClassVar[str] = "cart_id"

    cart_id: Identifier
    item_count: Annotated[int, Field(ge=1)]
    subtotal: Money
    last_activity_at: AwareDatetime


class CheckoutStarted(FunnelEvent):
    """The shopper began checkout (GA4 `begin_checkout`)."""

    event_type: ClassVar[str] = "io.kasse.cart.CheckoutStarted.v1"
    topic: ClassVar[str] = topics.CARTS
    key_field: ClassVar[str] = "cart_id"
    ga4_event: ClassVar[str | None] = "begin_checkout"

    cart_id: Identifier
    items: list[LineItem]
    coupon_codes: list[str] = Field(default_factory=list)
    subtotal: Money
    total: Money
