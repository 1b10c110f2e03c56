"""Invoices restate the order as placed: a German, an Austrian and a US order (the cart's worked
example: 2 x 19.99 standard + 1 x 15.00 book, 10 % off, 4.95 shipping) and a credit note for a return."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest

from kasse_cart.application.carts import vat_breakdown
from kasse_common.money.basket import BasketLine, price_basket
from kasse_contracts.events.common import TaxClass
from kasse_payment.adapters.invoice_pdf import render_pdf
from kasse_payment.domain.invoice import CreditedLine, Seller, credit_note_for, invoice_for
from kasse_testkit import samples

pytestmark = pytest.mark.unit

SELLER = Seller("Kasse Demo GmbH", ("Musterstraße 1", "10115 Berlin"), "DE123456789")
TODAY = date(2026, 12, 6)
TOTAL = 3998 + 1500 - 549 + 495
EXPECTED = {
    "DE": {1900: (3959, 3327, 632), 700: (1485, 1388, 97)},
    "AT": {2000: (3959, 3299, 660), 1000: (1485, 1350, 135)},
    "US": {0: (TOTAL, TOTAL, 0)},
}


def placed(country: str) -> dict[str, Any]:
    basket = price_basket(
        [BasketLine(3998, TaxClass.STANDARD), BasketLine(1500, TaxClass.REDUCED)],
        item_discount=549, shipping_price=495, shipping_discount=0, country=country, on=TODAY,
    )  # fmt: skip
    eur = samples.eur
    lines = [
        samples.line_item("mug", quantity=2, unit_price=1999, discount=eur(p.discount),
                          discounted_total=eur(p.discounted_total), tax_class=tc, vat_rate_basis_points=p.basis_points)
        for p, tc in zip(basket.lines, (TaxClass.STANDARD, TaxClass.REDUCED), strict=True)
    ]  # fmt: skip
    lines[1] = lines[1].model_copy(
        update={"product_id": "book", "sku": "SKU-book", "name": "Ein Buch", "quantity": 1,
                "unit_price": eur(1500), "line_total": eur(1500)}
    )  # fmt: skip
    event = samples.order_placed(
        "ord_inv_" + country,
        lines,
        shipping_address=samples.address(country=country),
        discount_total=eur(549),
        total=eur(TOTAL),
        vat=vat_breakdown(basket.vat, "EUR"),
    )
    return event.model_dump(mode="json")


@pytest.mark.parametrize("country", ["DE", "AT", "US"])
def test_the_invoice_shows_the_orders_vat_per_rate(country: str) -> None:
    invoice = invoice_for(placed(country), SELLER, TODAY)
    assert {r.basis_points: (r.gross, r.net, r.vat) for r in invoice.rates} == EXPECTED[country]
    assert invoice.gross == TOTAL and invoice.net + invoice.vat == TOTAL
    assert [(li.quantity, li.gross, li.rate_basis_points) for li in invoice.lines] == [
        (2, 3599, {"DE": 1900, "AT": 2000, "US": 0}[country]),
        (1, 1350, {"DE": 700, "AT": 1000, "US": 0}[country]),
    ]
    assert invoice.shipping_gross == 495 and invoice.delivery_from is not None
    assert invoice.seller.vat_id == "DE123456789" and invoice.buyer["country"] == country
    assert invoice.export is (country == "US")
    if country == "US":
        assert "Ausfuhrlieferung" in invoice.notes[0]
    if country == "AT":
        assert any("OSS" in n for n in invoice.notes)
    invoice.number = "RE-2026-000001"
    pdf = render_pdf(invoice)
    assert pdf.startswith(b"%PDF-") and len(pdf) > 1000


def test_a_credit_note_refers_to_the_invoice_and_splits_shipping_like_it() -> None:
    invoice = invoice_for(placed("DE"), SELLER, TODAY)
    invoice.number = "RE-2026-000007"
    # The last return: one book (13.50 paid) and the shipping (4.95).
    note = credit_note_for(
        invoice, refund_key="re_1", refund_id="re_1", amount=1350 + 495,
        lines=[CreditedLine("book", 1, 1350)], shipping=495, issued_on=TODAY,
    )  # fmt: skip
    assert note.refers_to == "RE-2026-000007" and note.sequence == "GS-2026"
    by_rate = {r.basis_points: (r.goods_gross, r.shipping) for r in note.rates}
    assert by_rate == {700: (1350, 135), 1900: (0, 360)}  # shipping as on the invoice: 3.60 / 1.35
    assert note.gross == 1845
    assert render_pdf(note).startswith(b"%PDF-")
