"""Events of the payment service."""

from __future__ import annotations

from datetime import date
from typing import Annotated, ClassVar

from pydantic import Field

from kasse_contracts import topics
from kasse_contracts.base import ContractModel, Event, FunnelEvent, Identifier, Money
from kasse_contracts.events.common import VatRateLine


class RefundedLine(ContractModel):
    """Units of an order line that a refund paid back, and what they were worth to the customer."""

    product_id: Identifier
    sku: Identifier | None = None
    quantity: Annotated[int, Field(ge=1)]
    amount: Money


class PaymentCaptured(FunnelEvent):
    """The order's payment succeeded."""

    event_type: ClassVar[str] = "io.kasse.payment.PaymentCaptured.v1"
    topic: ClassVar[str] = topics.PAYMENTS
    key_field: ClassVar[str] = "order_id"

    order_id: Identifier
    payment_intent_id: Identifier
    amount: Money


class PaymentFailed(FunnelEvent):
    """The payment failed for good; `reason` is `fraud_suspected` when screening blocked it."""

    event_type: ClassVar[str] = "io.kasse.payment.PaymentFailed.v1"
    topic: ClassVar[str] = topics.PAYMENTS
    key_field: ClassVar[str] = "order_id"

    order_id: Identifier
    payment_intent_id: Identifier | None = None
    reason: str = Field(description="card_declined, fraud_suspected, processing_error, …")
    decline_code: str | None = None
    message: str = ""
    amount: Money


class PaymentRefunded(FunnelEvent):
    """Money went back to the customer (GA4 `refund`)."""

    event_type: ClassVar[str] = "io.kasse.payment.PaymentRefunded.v1"
    topic: ClassVar[str] = topics.PAYMENTS
    key_field: ClassVar[str] = "order_id"
    ga4_event: ClassVar[str | None] = "refund"

    order_id: Identifier
    refund_id: Identifier
    payment_intent_id: Identifier
    amount: Money
    total_refunded: Money
    full: bool
    reason: str = ""
    lines: list[RefundedLine] = Field(
        default_factory=list, description="The lines refunded (a return's units; a cancellation's remaining units)"
    )
    shipping: Money | None = Field(None, description="The part of amount that pays back shipping")


class InvoiceTotals(ContractModel):
    """A document's sums: per VAT rate (net, VAT, gross) and in all; the rates add up to the totals."""

    rates: list[VatRateLine]
    net_total: Money
    vat_total: Money
    gross_total: Money


class InvoiceIssued(Event):
    """An invoice was issued for a captured order (for accounting systems). Numbers are gapless per year."""

    event_type: ClassVar[str] = "io.kasse.payment.InvoiceIssued.v1"
    topic: ClassVar[str] = topics.PAYMENTS
    key_field: ClassVar[str] = "order_id"

    order_id: Identifier
    invoice_number: str = Field(description="RE-<year>-<6 digits>, gapless and unique within the year")
    issued_on: date
    delivery_from: date | None = Field(None, description="The delivery period (Leistungszeitraum)")
    delivery_to: date | None = None
    country: str
    totals: InvoiceTotals


class CreditNoteIssued(Event):
    """A credit note (Gutschrift / Rechnungskorrektur) for a refund, referring to the order's invoice."""

    event_type: ClassVar[str] = "io.kasse.payment.CreditNoteIssued.v1"
    topic: ClassVar[str] = topics.PAYMENTS
    key_field: ClassVar[str] = "order_id"

    order_id: Identifier
    credit_note_number: str = Field(description="GS-<year>-<6 digits>, gapless and unique within the year")
    invoice_number: str = Field(description="The invoice it corrects")
    refund_id: Identifier
    issued_on: date
    totals: InvoiceTotals
