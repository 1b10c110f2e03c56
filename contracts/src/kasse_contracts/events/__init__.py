"""Every Kasse event payload, and the registry that maps CloudEvents types to them."""

from kasse_contracts.base import Event
from kasse_contracts.events.carts import CartAbandoned, CartAction, CartUpdated, CheckoutStarted
from kasse_contracts.events.catalog import (
    ProductChanged,
    ProductChangeKind,
    ProductSearched,
    ProductViewed,
    RejectedLine,
    ReviewSubmitted,
    SearchFilters,
    StockRejected,
    StockReserved,
)
from kasse_contracts.events.common import Address, DiscountLine, LineItem, ProductRef, StockLine
from kasse_contracts.events.orders import CancellationReason, OrderCancelled, OrderPlaced, ShippingSelection
from kasse_contracts.events.payments import PaymentCaptured, PaymentFailed, PaymentRefunded
from kasse_contracts.events.shipping import (
    CancellationRefused,
    ItemCondition,
    MethodKind,
    PriceBand,
    ReturnLine,
    ReturnReason,
    ReturnReceived,
    ReturnRequested,
    ShipmentCancelled,
    ShipmentCreated,
    ShipmentDelivered,
    ShipmentDispatched,
    ShippingMethod,
    ShippingMethodsPublished,
    ShippingRate,
)
from kasse_contracts.topics import _attach_event_types

ALL_EVENTS: tuple[type[Event], ...] = (
    ProductViewed,
    ProductSearched,
    ProductChanged,
    ReviewSubmitted,
    StockReserved,
    StockRejected,
    CartUpdated,
    CartAbandoned,
    CheckoutStarted,
    OrderPlaced,
    OrderCancelled,
    PaymentCaptured,
    PaymentFailed,
    PaymentRefunded,
    ShippingMethodsPublished,
    ShipmentCreated,
    ShipmentDispatched,
    ShipmentDelivered,
    ReturnRequested,
    ReturnReceived,
    ShipmentCancelled,
    CancellationRefused,
)

EVENTS_BY_TYPE: dict[str, type[Event]] = {e.event_type: e for e in ALL_EVENTS}

_attach_event_types((e.event_type, e.topic) for e in ALL_EVENTS)

__all__ = [
    "ALL_EVENTS",
    "EVENTS_BY_TYPE",
    "Address",
    "CancellationReason",
    "CancellationRefused",
    "CartAbandoned",
    "CartAction",
    "CartUpdated",
    "CheckoutStarted",
    "DiscountLine",
    "Event",
    "ItemCondition",
    "LineItem",
    "MethodKind",
    "OrderCancelled",
    "OrderPlaced",
    "PaymentCaptured",
    "PaymentFailed",
    "PaymentRefunded",
    "PriceBand",
    "ProductChangeKind",
    "ProductChanged",
    "ProductRef",
    "ProductSearched",
    "ProductViewed",
    "RejectedLine",
    "ReturnLine",
    "ReturnReason",
    "ReturnReceived",
    "ReturnRequested",
    "ReviewSubmitted",
    "SearchFilters",
    "ShipmentCancelled",
    "ShipmentCreated",
    "ShipmentDelivered",
    "ShipmentDispatched",
    "ShippingMethod",
    "ShippingMethodsPublished",
    "ShippingRate",
    "ShippingSelection",
    "StockLine",
    "StockRejected",
    "StockReserved",
]
