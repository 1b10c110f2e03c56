"""Events of the catalog service: discovery, product changes, reviews and stock."""

from __future__ import annotations

from typing import Annotated, ClassVar

from pydantic import Field

from kasse_contracts import topics
from kasse_contracts.base import Channel, ContractModel, Event, FunnelEvent, Identifier, MinorUnits, Money, OpenEnum
from kasse_contracts.events.common import StockLine, TaxClass


class ProductViewed(FunnelEvent):
    """A shopper opened a product's detail page (GA4 `view_item`)."""

    event_type: ClassVar[str] = "io.kasse.catalog.ProductViewed.v1"
    topic: ClassVar[str] = topics.STOREFRONT
    key_field: ClassVar[str] = "session_id"
    ga4_event: ClassVar[str | None] = "view_item"

    product_id: Identifier
    sku: Identifier
    category: str
    price: Money
    channel: Channel
    campaign: str | None = Field(None, description="utm_campaign, when the visit came from one")
    referrer: str | None = None


class SearchFilters(ContractModel):
    category: str | None = None
    min_price: MinorUnits | None = None
    max_price: MinorUnits | None = None
    in_stock: bool | None = None
    min_rating: Annotated[float, Field(ge=0, le=5)] | None = None


class ProductSearched(FunnelEvent):
    """A shopper searched or browsed a list (GA4 `search` / `view_item_list`)."""

    event_type: ClassVar[str] = "io.kasse.catalog.ProductSearched.v1"
    topic: ClassVar[str] = topics.STOREFRONT
    key_field: ClassVar[str] = "session_id"
    ga4_event: ClassVar[str | None] = "search"

    query: str = Field("", description="Free text; empty when the shopper only browsed")
    filters: SearchFilters = SearchFilters()
    sort: str = "relevance"
    page: Annotated[int, Field(ge=1)] = 1
    result_count: Annotated[int, Field(ge=0)]
    product_ids: list[Identifier] = Field(default_factory=list, description="Products shown, in order")
    channel: Channel = Channel.DIRECT


class ProductChangeKind(OpenEnum):
    CREATED = "created"
    PRICE = "price"
    STOCK = "stock"
    AVAILABILITY = "availability"
    DETAILS = "details"


class ProductChanged(Event):
    """A product's price, stock or availability changed; carries the product's current state."""

    event_type: ClassVar[str] = "io.kasse.catalog.ProductChanged.v1"
    topic: ClassVar[str] = topics.CATALOG
    key_field: ClassVar[str] = "product_id"

    product_id: Identifier
    sku: Identifier
    name: str
    category: str
    image_url: str | None = None
    price: Money
    compare_at_price: Money | None = None
    stock_available: Annotated[int, Field(ge=0, description="On hand minus reserved")]
    active: bool
    tax_class: TaxClass | None = Field(None, description="VAT class; absent from older producers: read as standard")
    changes: list[ProductChangeKind]
    revision: Annotated[int, Field(ge=1, description="Grows with every change: readers keep the highest")]


class ReviewSubmitted(Event):
    """A review was accepted; carries the product's new rating."""

    event_type: ClassVar[str] = "io.kasse.catalog.ReviewSubmitted.v1"
    topic: ClassVar[str] = topics.CATALOG
    key_field: ClassVar[str] = "product_id"

    product_id: Identifier
    review_id: Identifier
    rating: Annotated[int, Field(ge=1, le=5)]
    verified_purchase: bool
    customer_id: Identifier | None = None
    session_id: Identifier | None = None
    rating_average: Annotated[float, Field(ge=0, le=5)]
    rating_count: Annotated[int, Field(ge=1)]


class StockReserved(FunnelEvent):
    """Every line of the order is reserved."""

    event_type: ClassVar[str] = "io.kasse.catalog.StockReserved.v1"
    topic: ClassVar[str] = topics.STOCK
    key_field: ClassVar[str] = "order_id"

    order_id: Identifier
    lines: list[StockLine]


class RejectedLine(ContractModel):
    product_id: Identifier
    sku: Identifier
    requested: Annotated[int, Field(ge=1)]
    available: Annotated[int, Field(ge=0)]


class StockRejected(FunnelEvent):
    """At least one line could not be served; nothing stays reserved for the order."""

    event_type: ClassVar[str] = "io.kasse.catalog.StockRejected.v1"
    topic: ClassVar[str] = topics.STOCK
    key_field: ClassVar[str] = "order_id"

    order_id: Identifier
    rejected_lines: list[RejectedLine]
