"""Invoices and credit notes: their content per German rules (§14 UStG) and their numbers.

An invoice is issued when an order's payment is captured; a credit note (Rechnungskorrektur) when money
goes back, referring to the invoice. Content: the seller's name, address and VAT id; the buyer's name
and address; a number from a gapless yearly sequence (`RE-2026-000001`, credit notes `GS-…`); the
issue date; the delivery period; the lines with quantities; per VAT rate the net, the rate and the
VAT, and the gross. Amounts come from the order as placed (OrderPlaced: each line's discounted
total and the VAT breakdown), so the invoice says exactly what was charged.

How a number is claimed so that a crash never leaves a gap: adapters/invoices.py.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from kasse_common.money.allocation import allocate
from kasse_common.money.vat import Breakdown, RateTotal, group_by_rate

INVOICE = "invoice"
CREDIT_NOTE = "credit_note"
PREFIX = {INVOICE: "RE", CREDIT_NOTE: "GS"}


@dataclass(frozen=True)
class Seller:
    name: str
    address: tuple[str, ...]  # the lines of the postal address
    vat_id: str


@dataclass(frozen=True)
class DocumentLine:
    product_id: str
    sku: str
    name: str
    quantity: int
    unit_price: int  # gross list price
    discount: int  # the line's share of the discounts
    gross: int  # what was charged (or credited) for the line
    rate_basis_points: int


@dataclass
class Document:
    """An invoice or a credit note. `number` is None until the sequence has given it one."""

    document_id: str
    kind: str  # invoice | credit_note
    order_id: str
    issued_on: date
    currency: str
    seller: Seller
    buyer: Mapping[str, Any]  # name, line1, line2, postal_code, city, country
    country: str
    export: bool
    lines: list[DocumentLine]
    shipping_gross: int
    rates: list[RateTotal]
    delivery_from: date | None = None
    delivery_to: date | None = None
    refers_to: str | None = None  # a credit note: the invoice number it corrects
    refund_id: str | None = None
    number: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def sequence(self) -> str:
        """The sequence this document's number comes from: one per kind and year."""
        return f"{PREFIX[self.kind]}-{self.issued_on.year}"

    @property
    def gross(self) -> int:
        return sum(r.gross for r in self.rates)

    @property
    def net(self) -> int:
        return sum(r.net for r in self.rates)

    @property
    def vat(self) -> int:
        return sum(r.vat for r in self.rates)


def format_number(sequence: str, n: int) -> str:
    return f"{sequence}-{n:06d}"


def invoice_id(order_id: str) -> str:
    return f"inv_{order_id}"


def credit_note_id(order_id: str, refund_key: str) -> str:
    return f"cn_{order_id}_{refund_key}"


def invoice_for(order: Mapping[str, Any], seller: Seller, issued_on: date) -> Document:
    """The invoice of an order as placed (`order`: the OrderPlaced payload as JSON)."""
    currency = order["total"]["currency"]
    vat = order.get("vat")
    lines = [_line(li) for li in order["lines"]]
    if vat is not None:
        rates = [
            RateTotal(
                r["rate_basis_points"], r["goods_gross"]["amount"], r["discount"]["amount"], r["shipping"]["amount"]
            )
            for r in vat["rates"]
        ]
        country, export = vat["country"], vat["export"]
    else:  # placed before VAT was carried: German standard rate on everything, as charged
        country, export = order["shipping_address"]["country"], False
        shipping_discount = sum(
            d["amount"]["amount"] for d in order.get("discounts", []) if d["applies_to"] == "shipping"
        )
        rates = [
            RateTotal(
                1900,
                order["subtotal"]["amount"],
                order["discount_total"]["amount"] - shipping_discount,
                order["shipping_total"]["amount"] - shipping_discount,
            )
        ]
    shipping = sum(r.shipping for r in rates)
    notes = ["Alle Preise inkl. MwSt."]
    if export:
        notes = ["Steuerfreie Ausfuhrlieferung (§ 4 Nr. 1a i. V. m. § 6 UStG)."]
    elif country != "DE":
        notes.append(f"Fernverkauf nach {country}: Umsatzsteuer des Bestimmungslands (OSS, § 18j UStG).")
    return Document(
        document_id=invoice_id(order["order_id"]),
        kind=INVOICE,
        order_id=order["order_id"],
        issued_on=issued_on,
        currency=currency,
        seller=seller,
        buyer=dict(order["shipping_address"]),
        country=country,
        export=export,
        lines=lines,
        shipping_gross=shipping,
        rates=rates,
        delivery_from=date.fromisoformat(order["shipping"]["promised_from"]),
        delivery_to=date.fromisoformat(order["shipping"]["promised_to"]),
        notes=notes,
    )


@dataclass(frozen=True)
class CreditedLine:
    product_id: str
    quantity: int
    amount: int


def credit_note_for(
    invoice: Document,
    *,
    refund_key: str,
    refund_id: str,
    amount: int,
    lines: Sequence[CreditedLine],
    shipping: int,
    issued_on: date,
) -> Document:
    """A credit note for a refund of `amount`: its lines at the invoice's rates, its shipping split
    like the invoice's shipping; what no line explains (a refund made at Stripe) is split over the
    invoice's rates in proportion to their gross. VAT is computed per rate, as on the invoice."""
    by_product = {li.product_id: li for li in invoice.lines}
    parts: list[tuple[int, int, int, int]] = []
    credited: list[DocumentLine] = []
    for line in lines:
        original = by_product.get(line.product_id)
        if original is None:
            continue
        parts.append((original.rate_basis_points, line.amount, 0, 0))
        credited.append(
            DocumentLine(
                original.product_id, original.sku, original.name, line.quantity, original.unit_price, 0,
                line.amount, original.rate_basis_points,
            )
        )  # fmt: skip
    explained = sum(p[1] for p in parts)
    shipping = min(shipping, max(amount - explained, 0))
    rest = max(amount - explained - shipping, 0)
    if shipping:
        weights = [r.shipping for r in invoice.rates]
        if not any(weights):
            weights = [r.gross for r in invoice.rates]
        parts += [(r.basis_points, 0, 0, s) for r, s in zip(invoice.rates, allocate(shipping, weights), strict=True)]
    if rest:
        weights = [r.gross for r in invoice.rates]
        parts += [(r.basis_points, s, 0, 0) for r, s in zip(invoice.rates, allocate(rest, weights), strict=True)]
    breakdown: Breakdown = group_by_rate(parts, invoice.country, invoice.export)
    return Document(
        document_id=credit_note_id(invoice.order_id, refund_key),
        kind=CREDIT_NOTE,
        order_id=invoice.order_id,
        issued_on=issued_on,
        currency=invoice.currency,
        seller=invoice.seller,
        buyer=invoice.buyer,
        country=invoice.country,
        export=invoice.export,
        lines=credited,
        shipping_gross=shipping,
        rates=list(breakdown.rates),
        delivery_from=invoice.delivery_from,
        delivery_to=invoice.delivery_to,
        refers_to=invoice.number,
        refund_id=refund_id,
        notes=[f"Rechnungskorrektur zu Rechnung {invoice.number}."],
    )


def _line(li: Mapping[str, Any]) -> DocumentLine:
    discount = (li.get("discount") or {}).get("amount", 0)
    gross = (li.get("discounted_total") or li["line_total"])["amount"]
    rate = li.get("vat_rate_basis_points")
    return DocumentLine(
        product_id=li["product_id"],
        sku=li["sku"],
        name=li["name"],
        quantity=li["quantity"],
        unit_price=li["unit_price"]["amount"],
        discount=discount,
        gross=gross,
        rate_basis_points=1900 if rate is None else rate,
    )
