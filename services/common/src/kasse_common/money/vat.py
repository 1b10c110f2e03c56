"""VAT: rates as data (`vat_rates.json`, with validity dates) and the breakdown of a gross total per rate.

Prices in Kasse are gross (they include VAT). Kasse ships from Germany: a German destination pays
German VAT; another EU member is a distance sale under the OSS scheme at the destination's rate
(Kasse is above the EUR 10,000 threshold, so there is no origin-rate case); any other country is an
export, free of EU VAT (rate 0). An EU member the table has no rate for is refused, never taxed at 0.

Rounding (the one rule, documented in services/common/README.md): per rate, on that rate's gross
total, `vat = round_half_up(gross * r / (1 + r))` and `net = gross - vat`. Lines are never rounded one
by one, so the rates' gross add up to the order's total to the cent and net + vat = gross per rate.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from functools import cache
from importlib import resources
from typing import Any

from kasse_common.errors import Unprocessable
from kasse_contracts.events.common import TaxClass


@dataclass(frozen=True)
class VatRate:
    country: str
    tax_class: TaxClass
    basis_points: int  # 1900 = 19 %
    valid_from: date
    valid_until: date | None  # exclusive; None: still valid

    def valid_on(self, day: date) -> bool:
        return self.valid_from <= day and (self.valid_until is None or day < self.valid_until)


@dataclass(frozen=True)
class VatTable:
    table_id: str
    origin_country: str
    eu_members: frozenset[str]
    rates: tuple[VatRate, ...]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> VatTable:
        rates = tuple(
            VatRate(
                country=r["country"],
                tax_class=TaxClass(r["tax_class"]),
                basis_points=int(r["basis_points"]),
                valid_from=date.fromisoformat(r["valid_from"]),
                valid_until=date.fromisoformat(r["valid_until"]) if r.get("valid_until") else None,
            )
            for r in data["rates"]
        )
        table = cls(data["table_id"], data["origin_country"], frozenset(data["eu_members"]), rates)
        table.check()
        return table

    def check(self) -> None:
        """Periods of one country and class must not overlap (a day has exactly one rate)."""
        for rate in self.rates:
            if not 0 <= rate.basis_points <= 10000:
                raise ValueError(f"VAT rate {rate} out of range")
            if rate.valid_until is not None and rate.valid_until <= rate.valid_from:
                raise ValueError(f"VAT rate {rate} ends before it starts")
            if rate.country not in self.eu_members:
                raise ValueError(f"VAT rate for {rate.country}, which is not an EU member in the table")
            for other in self.rates:
                if other is rate or (other.country, other.tax_class) != (rate.country, rate.tax_class):
                    continue
                if other.valid_from <= rate.valid_from and (
                    other.valid_until is None or rate.valid_from < other.valid_until
                ):
                    raise ValueError(f"VAT rates overlap: {other} and {rate}")

    def is_export(self, country: str) -> bool:
        return country not in self.eu_members

    def rate(self, country: str, tax_class: TaxClass, on: date) -> int:
        """The rate in basis points for goods of `tax_class` delivered to `country` on `on`."""
        if self.is_export(country):
            return 0
        for rate in self.rates:
            if rate.country == country and rate.tax_class == tax_class and rate.valid_on(on):
                return rate.basis_points
        raise Unprocessable(
            f"no VAT rate for {tax_class.value} goods to {country} on {on.isoformat()} (table {self.table_id})",
            field="country",
        )


@cache
def default_vat_table() -> VatTable:
    """The rate table shipped with the kit."""
    text = resources.files("kasse_common.money").joinpath("vat_rates.json").read_text(encoding="utf-8")
    return VatTable.from_dict(json.loads(text))


def vat_in_gross(gross: int, basis_points: int) -> int:
    """The VAT contained in a gross amount, rounded half up (gross >= 0)."""
    if gross < 0:
        raise ValueError("gross must not be negative")
    denominator = 10000 + basis_points
    return (2 * gross * basis_points + denominator) // (2 * denominator)


@dataclass(frozen=True)
class RateTotal:
    """One rate's part of a total. `gross = goods_gross - discount + shipping = net + vat`."""

    basis_points: int
    goods_gross: int
    discount: int
    shipping: int

    @property
    def gross(self) -> int:
        return self.goods_gross - self.discount + self.shipping

    @property
    def vat(self) -> int:
        return vat_in_gross(self.gross, self.basis_points)

    @property
    def net(self) -> int:
        return self.gross - self.vat


@dataclass(frozen=True)
class Breakdown:
    country: str
    export: bool
    rates: tuple[RateTotal, ...]  # highest rate first

    @property
    def gross(self) -> int:
        return sum(r.gross for r in self.rates)

    @property
    def vat(self) -> int:
        return sum(r.vat for r in self.rates)

    @property
    def net(self) -> int:
        return sum(r.net for r in self.rates)


def group_by_rate(parts: Iterable[tuple[int, int, int, int]], country: str, export: bool) -> Breakdown:
    """(basis_points, goods_gross, discount, shipping) parts summed per rate."""
    totals: dict[int, list[int]] = {}
    for bp, goods, discount, shipping in parts:
        entry = totals.setdefault(bp, [0, 0, 0])
        entry[0] += goods
        entry[1] += discount
        entry[2] += shipping
    rates = tuple(
        RateTotal(bp, goods, discount, shipping)
        for bp, (goods, discount, shipping) in sorted(totals.items(), key=lambda kv: -kv[0])
    )
    return Breakdown(country, export, rates)
