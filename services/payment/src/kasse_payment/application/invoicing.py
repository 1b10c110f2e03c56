"""Invoices on capture, credit notes on refunds (payment issues them: it is where captures and refunds
become facts, and it already hears OrderPlaced, whose lines and VAT breakdown an invoice restates).

Handlers are idempotent: a document's id is derived from the order (and the refund), it is stored
once, and numbering a numbered document returns its number.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol

from kasse_common.envelope import OutgoingRecord, derived_event_id
from kasse_contracts.base import Event, Money
from kasse_contracts.events import OrderPlaced, PaymentCaptured, PaymentRefunded
from kasse_contracts.events.common import VatRateLine
from kasse_contracts.events.payments import CreditNoteIssued, InvoiceIssued, InvoiceTotals
from kasse_payment.domain.invoice import (
    INVOICE,
    CreditedLine,
    Document,
    Seller,
    credit_note_for,
    invoice_for,
    invoice_id,
)

Encoder = Callable[..., OutgoingRecord]


class Documents(Protocol):
    async def record_order(self, order_id: str, payload: dict[str, Any]) -> None: ...
    async def order(self, order_id: str) -> dict[str, Any] | None: ...
    async def add(self, document: Document) -> bool: ...
    async def get(self, document_id: str) -> Document | None: ...
    async def for_order(self, order_id: str) -> list[Document]: ...
    async def unnumbered(self, limit: int = 100) -> list[str]: ...
    async def assign_number(self, document_id: str) -> str: ...


class NotYet(Exception):
    """A fact this step needs has not arrived yet; the consumer retries (transient)."""


def document_event(d: Document, now: datetime) -> Event:
    """InvoiceIssued or CreditNoteIssued for a numbered document."""

    def eur(amount: int) -> Money:
        return Money(amount=amount, currency=d.currency)

    rates = [
        VatRateLine(
            rate_basis_points=r.basis_points, goods_gross=eur(r.goods_gross), discount=eur(r.discount),
            shipping=eur(r.shipping), gross=eur(r.gross), net=eur(r.net), vat=eur(r.vat),
        )
        for r in d.rates
    ]  # fmt: skip
    totals = InvoiceTotals(rates=rates, net_total=eur(d.net), vat_total=eur(d.vat), gross_total=eur(d.gross))
    if d.kind == INVOICE:
        return InvoiceIssued(
            occurred_at=now, order_id=d.order_id, invoice_number=d.number or "", issued_on=d.issued_on,
            delivery_from=d.delivery_from, delivery_to=d.delivery_to, country=d.country, totals=totals,
        )  # fmt: skip
    return CreditNoteIssued(
        occurred_at=now, order_id=d.order_id, credit_note_number=d.number or "", invoice_number=d.refers_to or "",
        refund_id=d.refund_id or d.document_id, issued_on=d.issued_on, totals=totals,
    )  # fmt: skip


def document_record(encode: Encoder, clock: Callable[[], datetime]) -> Callable[[Document], OutgoingRecord]:
    """The outbox record written together with a document's number (one event per document, ever)."""

    def build(d: Document) -> OutgoingRecord:
        return encode(document_event(d, clock()), event_id=derived_event_id("payment", d.document_id, "issued"))

    return build


class Invoicing:
    def __init__(self, documents: Documents, seller: Seller, clock: Callable[[], datetime]) -> None:
        self.documents = documents
        self.seller = seller
        self.clock = clock

    async def order_placed(self, event: OrderPlaced) -> None:
        await self.documents.record_order(event.order_id, event.model_dump(mode="json"))

    async def payment_captured(self, event: PaymentCaptured) -> Document:
        order = await self.documents.order(event.order_id)
        if order is None:
            raise NotYet(f"order {event.order_id} not recorded yet: the invoice waits for it")
        document = invoice_for(order, self.seller, issued_on=event.occurred_at.date())
        await self.documents.add(document)
        await self.documents.assign_number(document.document_id)
        return await self._get(document.document_id)

    async def payment_refunded(self, event: PaymentRefunded) -> Document:
        invoice = await self.documents.get(invoice_id(event.order_id))
        if invoice is None or invoice.number is None:
            raise NotYet(f"order {event.order_id} has no numbered invoice yet: the credit note waits for it")
        document = credit_note_for(
            invoice,
            refund_key=event.refund_id,
            refund_id=event.refund_id,
            amount=event.amount.amount,
            lines=[CreditedLine(li.product_id, li.quantity, li.amount.amount) for li in event.lines],
            shipping=event.shipping.amount if event.shipping else 0,
            issued_on=event.occurred_at.date(),
        )
        await self.documents.add(document)
        await self.documents.assign_number(document.document_id)
        return await self._get(document.document_id)

    async def sweep(self) -> int:
        """Number what a crash left unnumbered (run at start and periodically)."""
        ids = await self.documents.unnumbered()
        for document_id in ids:
            await self.documents.assign_number(document_id)
        return len(ids)

    async def for_order(self, order_id: str) -> list[Document]:
        return [d for d in await self.documents.for_order(order_id) if d.number is not None]

    async def _get(self, document_id: str) -> Document:
        document = await self.documents.get(document_id)
        assert document is not None
        return document
