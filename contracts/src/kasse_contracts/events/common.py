"""Value objects shared by several events."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import Field

from kasse_contracts.base import ContractModel, CountryCode, Identifier, Money


class TaxClass(StrEnum):
    """A product's VAT class; the rate follows from it and the destination country (and the date)."""

    STANDARD = "standard"
    REDUCED = "reduced"
    ZERO = "zero"


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
    discount: Money | None = Field(
        None, description="This line's share of the item discounts (largest remainder, see the kit's money rules)"
    )
    discounted_total: Money | None = Field(
        None, description="What the customer pays for the line: line_total - discount"
    )
    tax_class: TaxClass | None = None
    vat_rate_basis_points: Annotated[int, Field(ge=0, le=10000)] | None = Field(None, description="1900 = 19 %")


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


class VatRateLine(ContractModel):
    """One VAT rate of an order or cart: `gross = goods_gross - discount + shipping`, `gross = net + vat`.

    Amounts are gross (prices include VAT). `vat` is rounded half up once, on this rate's gross total.
    """

    rate_basis_points: Annotated[int, Field(ge=0, le=10000, description="1900 = 19 %")]
    goods_gross: Money = Field(description="The lines at this rate before discounts")
    discount: Money = Field(description="The item discounts allocated to those lines")
    shipping: Money = Field(description="This rate's share of the shipping actually charged")
    gross: Money
    net: Money
    vat: Money


class VatBreakdown(ContractModel):
    """The VAT in a total, per rate; the rates' gross add up to the total to the cent."""

    country: CountryCode = Field(description="The destination whose rates apply (origin DE; OSS inside the EU)")
    export: bool = Field(False, description="Outside the EU: no EU VAT charged")
    rates: list[VatRateLine]
    net_total: Money
    vat_total: Money
    gross_total: Money
