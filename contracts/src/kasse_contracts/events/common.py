"""Value objects shared by several events."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from kasse_contracts.base import ContractModel, CountryCode, Identifier, Money


class ProductRef(ContractModel):
    product_id: Identifier
    sku: Identifier
    name: str
    category: str


class LineItem(ProductRef):
    """One line of a cart or order: GA4's `items[]` entry."""

    quantity: Annotated[int, Field(ge=1)]
    unit_price: Money
    line_total: Money


class DiscountLine(ContractModel):
    code: str | None = Field(None, description="The coupon code, or None for an automatic promotion")
    description: str
    amount: Money
    applies_to: str = Field("items", description="'items' or 'shipping'")


class Address(ContractModel):
    name: Annotated[str, Field(min_length=1, max_length=200)]
    line1: Annotated[str, Field(min_length=1, max_length=200)]
    line2: str | None = None
    postal_code: Annotated[str, Field(min_length=1, max_length=20)]
    city: Annotated[str, Field(min_length=1, max_length=100)]
    region: str | None = None
    country: CountryCode


class StockLine(ContractModel):
    product_id: Identifier
    sku: Identifier
    quantity: Annotated[int, Field(ge=1)]
