"""An invoice or credit note as PDF (fpdf2). Rendered on demand from the stored document: the
document, not the file, is the record, so the same number always renders the same content."""

from __future__ import annotations

from fpdf import FPDF

from kasse_payment.domain.invoice import INVOICE, Document


def _text(value: object) -> str:
    # The core fonts cover Latin-1 (German umlauts, ß); anything else is replaced, never an error.
    return str(value).encode("latin-1", "replace").decode("latin-1")


def _money(amount: int, currency: str) -> str:
    sign = "-" if amount < 0 else ""
    amount = abs(amount)
    return (
        f"{sign}{amount // 100:,}.{amount % 100:02d} {currency}".replace(",", "X").replace(".", ",").replace("X", ".")
    )


def _rate(basis_points: int) -> str:
    return f"{basis_points / 100:g} %".replace(".", ",")


def render_pdf(d: Document) -> bytes:
    pdf = FPDF(format="A4")
    pdf.set_title(_text(d.number or d.document_id))
    pdf.set_creator("Kasse")
    pdf.add_page()
    pdf.set_font("Helvetica", size=9)
    pdf.multi_cell(0, 4.5, _text(f"{d.seller.name} · " + " · ".join(d.seller.address)), new_x="LMARGIN", new_y="NEXT")
    pdf.cell(0, 4.5, _text(f"USt-IdNr.: {d.seller.vat_id}"), new_x="LMARGIN", new_y="NEXT")
    pdf.ln(6)
    pdf.set_font("Helvetica", size=10)
    buyer = d.buyer
    for line in (
        buyer.get("name"),
        buyer.get("line1"),
        buyer.get("line2"),
        f"{buyer.get('postal_code', '')} {buyer.get('city', '')}",
        buyer.get("country"),
    ):
        if line and str(line).strip():
            pdf.cell(0, 5, _text(line), new_x="LMARGIN", new_y="NEXT")
    pdf.ln(8)
    pdf.set_font("Helvetica", style="B", size=14)
    title = "Rechnung" if d.kind == INVOICE else "Gutschrift / Rechnungskorrektur"
    pdf.cell(0, 8, _text(f"{title} {d.number or ''}"), new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", size=10)
    pdf.cell(0, 5, _text(f"Rechnungsdatum: {d.issued_on:%d.%m.%Y}"), new_x="LMARGIN", new_y="NEXT")
    if d.delivery_from and d.delivery_to:
        pdf.cell(
            0, 5, _text(f"Lieferdatum (Leistungszeitraum): {d.delivery_from:%d.%m.%Y} - {d.delivery_to:%d.%m.%Y}"),
            new_x="LMARGIN", new_y="NEXT",
        )  # fmt: skip
    pdf.cell(0, 5, _text(f"Bestellung: {d.order_id}"), new_x="LMARGIN", new_y="NEXT")
    if d.refers_to:
        pdf.cell(0, 5, _text(f"Zu Rechnung: {d.refers_to}"), new_x="LMARGIN", new_y="NEXT")
    pdf.ln(4)

    c = d.currency
    with pdf.table(
        col_widths=(12, 70, 28, 24, 16, 30), text_align=("RIGHT", "LEFT", "RIGHT", "RIGHT", "RIGHT", "RIGHT")
    ) as table:
        table.row(["Menge", "Artikel", "Einzelpreis", "Rabatt", "USt.", "Betrag (brutto)"])
        for li in d.lines:
            table.row([
                str(li.quantity), _text(f"{li.name} ({li.sku})"), _money(li.unit_price, c), _money(li.discount, c),
                _rate(li.rate_basis_points), _money(li.gross, c),
            ])  # fmt: skip
        if d.shipping_gross:
            table.row(["", "Versand", "", "", "", _money(d.shipping_gross, c)])
    pdf.ln(4)
    with pdf.table(col_widths=(30, 40, 40, 40), text_align="RIGHT") as table:
        table.row(["USt.-Satz", "Netto", "USt.", "Brutto"])
        for r in d.rates:
            table.row([_rate(r.basis_points), _money(r.net, c), _money(r.vat, c), _money(r.gross, c)])
        table.row(["Summe", _money(d.net, c), _money(d.vat, c), _money(d.gross, c)])
    pdf.ln(4)
    for note in d.notes:
        pdf.multi_cell(0, 5, _text(note), new_x="LMARGIN", new_y="NEXT")
    return bytes(pdf.output())
