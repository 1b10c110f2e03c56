"""The HTTP API's request and response bodies (and so its OpenAPI schema)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from kasse_catalog.application.discovery import Recommendation
from kasse_catalog.domain.product import Image, Product, ProductDetails
from kasse_catalog.domain.review import Review
from kasse_common.http import JSON_INTEGER
from kasse_contracts.base import Money
from kasse_contracts.events.common import TaxClass

Sku = Annotated[str, StringConstraints(pattern=r"^[A-Z0-9][A-Z0-9-]{1,63}$")]
Slug = Annotated[str, StringConstraints(pattern=r"^[a-z0-9]+(?:-[a-z0-9]+)*$", max_length=120)]
Category = Annotated[str, StringConstraints(pattern=r"^[a-z0-9]+(?:-[a-z0-9]+)*$", max_length=50)]
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Description = Annotated[str, StringConstraints(strip_whitespace=True, max_length=5000)]
# An absolute http(s) URL, or a path on the shop's own host (the storefront serves /images/products/…).
Url = Annotated[str, StringConstraints(pattern=r"^(https?://[^\s]+|/[^/\s][^\s]*)$", max_length=2000)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MoneyIn(Strict):
    amount: Annotated[int, Field(ge=0, le=100_000_000, description="Minor units (cents for EUR)"), JSON_INTEGER]
    currency: Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")] = "EUR"

    def to_money(self) -> Money:
        return Money(amount=self.amount, currency=self.currency)


class MoneyOut(BaseModel):
    amount: int = Field(description="Minor units (cents for EUR)")
    currency: str

    @classmethod
    def of(cls, money: Money | None) -> MoneyOut | None:
        return cls(amount=money.amount, currency=money.currency) if money else None


class ImageIn(Strict):
    url: Url
    alt: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=300)] = Field(
        description="Alternative text: what the image shows, for screen readers"
    )


class ImageOut(BaseModel):
    url: str
    alt: str


Attributes = Annotated[
    dict[
        Annotated[str, StringConstraints(min_length=1, max_length=50)],
        Annotated[str, StringConstraints(max_length=200)],
    ],
    Field(max_length=30),
]


class ProductIn(Strict):
    """A product as an admin creates or imports it."""

    sku: Sku
    slug: Slug | None = Field(None, description="Derived from the name when omitted")
    name: Name
    description: Description = ""
    category: Category
    images: Annotated[list[ImageIn], Field(max_length=12)] = []
    attributes: Attributes = {}
    price: MoneyIn
    compare_at_price: MoneyIn | None = Field(None, description="The 'was' price of a sale; higher than price")
    stock_on_hand: Annotated[int, Field(ge=0, le=10_000_000), JSON_INTEGER] = 0
    active: Annotated[bool, Field(strict=True)] = True  # 0 or "no" is not a yes/no answer
    tax_class: TaxClass = Field(TaxClass.STANDARD, description="VAT class: standard, reduced (books) or zero")

    def to_details(self) -> ProductDetails:
        return ProductDetails(
            sku=self.sku,
            slug=self.slug,
            name=self.name,
            description=self.description,
            category=self.category,
            price=self.price.to_money(),
            compare_at_price=self.compare_at_price.to_money() if self.compare_at_price else None,
            images=[Image(i.url, i.alt) for i in self.images],
            attributes=dict(self.attributes),
            stock_on_hand=self.stock_on_hand,
            active=self.active,
            tax_class=self.tax_class,
        )


class ProductPatch(Strict):
    """Fields to change; omitted fields stay. `compare_at_price: null` ends a sale."""

    slug: Slug | None = None
    name: Name | None = None
    description: Description | None = None
    category: Category | None = None
    images: Annotated[list[ImageIn], Field(max_length=12)] | None = None
    attributes: Attributes | None = None
    price: MoneyIn | None = None
    compare_at_price: MoneyIn | None = None
    active: Annotated[bool | None, Field(strict=True)] = None
    tax_class: TaxClass | None = None

    def changes(self) -> dict[str, object]:
        out: dict[str, object] = {}
        for name in self.model_fields_set:
            value = getattr(self, name)
            if value is None and name != "compare_at_price":
                continue  # null means "unchanged" except for the sale price, where it ends the sale
            if name in ("price", "compare_at_price"):
                out[name] = value.to_money() if value is not None else None
            elif name == "images":
                out[name] = [Image(i.url, i.alt) for i in value]
            else:
                out[name] = value
        return out


class StockAdjustment(Strict):
    # Exactly one of the two, as the OpenAPI says (checked in the domain).
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "oneOf": [
                {"required": ["delta"], "properties": {"delta": {"type": "integer"}}},
                {"required": ["on_hand"], "properties": {"on_hand": {"type": "integer"}}},
            ]
        },
    )

    delta: Annotated[int, Field(ge=-10_000_000, le=10_000_000), JSON_INTEGER] | None = Field(
        None, description="Units received (+) or written off (-)"
    )
    on_hand: Annotated[int, Field(ge=0, le=10_000_000), JSON_INTEGER] | None = Field(
        None, description="The counted stock on hand"
    )


class BulkImport(Strict):
    products: Annotated[list[ProductIn], Field(min_length=1, max_length=1000)]


class ImportResultOut(BaseModel):
    created: list[str]
    updated: list[str]
    unchanged: list[str]


class RatingOut(BaseModel):
    average: float
    count: int


class ProductSummaryOut(BaseModel):
    product_id: str
    sku: str
    slug: str
    name: str
    category: str
    image: ImageOut | None
    price: MoneyOut
    compare_at_price: MoneyOut | None
    tax_class: str = Field(description="VAT class; prices include VAT (inkl. MwSt.)")
    in_stock: bool
    low_stock: bool
    rating: RatingOut

    @classmethod
    def of(cls, p: Product, low_stock_threshold: int) -> ProductSummaryOut:
        return cls(**_summary_fields(p, low_stock_threshold))


def _summary_fields(p: Product, low: int) -> dict[str, object]:
    return {
        "product_id": p.product_id,
        "sku": p.sku,
        "slug": p.slug,
        "name": p.name,
        "category": p.category,
        "image": ImageOut(url=p.images[0].url, alt=p.images[0].alt) if p.images else None,
        "price": MoneyOut.of(p.price),
        "compare_at_price": MoneyOut.of(p.compare_at_price),
        "tax_class": p.tax_class.value,
        "in_stock": p.stock_available > 0,
        "low_stock": 0 < p.stock_available <= low,
        "rating": RatingOut(average=p.rating_average, count=p.rating_count),
    }


class ProductOut(ProductSummaryOut):
    description: str
    images: list[ImageOut]
    attributes: dict[str, str]
    stock_available: int
    active: bool
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, p: Product, low_stock_threshold: int) -> ProductOut:
        return cls(
            **_summary_fields(p, low_stock_threshold),
            description=p.description,
            images=[ImageOut(url=i.url, alt=i.alt) for i in p.images],
            attributes=p.attributes,
            stock_available=p.stock_available,
            active=p.active,
            created_at=p.created_at,
            updated_at=p.updated_at,
        )


class AdminProductOut(ProductOut):
    stock_on_hand: int
    stock_reserved: int
    revision: int

    @classmethod
    def of(cls, p: Product, low_stock_threshold: int) -> AdminProductOut:
        base = ProductOut.of(p, low_stock_threshold).model_dump()
        return cls(**base, stock_on_hand=p.stock_on_hand, stock_reserved=p.stock_reserved, revision=p.revision)


class SearchResultOut(BaseModel):
    items: list[ProductSummaryOut]
    total: int = Field(description="Products matching the query and filters")
    page: int
    page_size: int
    sort: str
    query: str


class CategoryOut(BaseModel):
    category: str
    products: int = Field(description="Active products in the category")


class CategoriesOut(BaseModel):
    items: list[CategoryOut]


class ReviewIn(Strict):
    rating: Annotated[int, Field(ge=1, le=5, description="1 (poor) to 5 (excellent)"), JSON_INTEGER]
    title: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=150)]
    text: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=5000)]
    author_name: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=80)]
    order_id: Annotated[
        str | None,
        Field(
            min_length=1,
            max_length=200,
            pattern=r"^[\w.:-]+$",
            description="The order the review is about; proven by its token in X-Order-Token (a verified purchase)",
        ),
    ] = None

    @field_validator("title", "text", "author_name")
    @classmethod
    def _printable(cls, value: str) -> str:
        if any(ord(ch) < 32 and ch not in "\n\t" for ch in value):
            raise ValueError("must not contain control characters")
        return value


class ReviewOut(BaseModel):
    review_id: str
    product_id: str
    rating: int
    title: str
    text: str
    author_name: str
    verified_purchase: bool
    created_at: datetime

    @classmethod
    def of(cls, r: Review) -> ReviewOut:
        return cls(
            review_id=r.review_id,
            product_id=r.product_id,
            rating=r.rating,
            title=r.title,
            text=r.text,
            author_name=r.author_name,
            verified_purchase=r.verified_purchase,
            created_at=r.created_at,
        )


class SubmittedReviewOut(ReviewOut):
    product_rating: RatingOut


class ReviewPageOut(BaseModel):
    items: list[ReviewOut]
    total: int
    page: int
    page_size: int
    sort: str
    rating: RatingOut


class RecommendationOut(BaseModel):
    product: ProductSummaryOut
    reason: str = Field(description="bought_together, viewed_together, popular_in_category or popular")
    score: int

    @classmethod
    def of(cls, r: Recommendation, low: int) -> RecommendationOut:
        return cls(product=ProductSummaryOut.of(r.product, low), reason=r.reason, score=r.score)


class RecommendationsOut(BaseModel):
    strategy: str = Field(
        "blended",
        description="The relations used: the asked kind, else the session's strategy (blended, bought_together, "
        "viewed_together or popular; an experiment on recommendation_strategy decides it per session)",
    )
    items: list[RecommendationOut]
