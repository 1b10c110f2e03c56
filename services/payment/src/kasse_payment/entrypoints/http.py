"""HTTP API: the cart's order view, Stripe's webhook endpoint, and the admins' fraud review."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import date, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from pydantic import BaseModel, Field, SecretStr

from kasse_common.errors import NotFound
from kasse_common.http import bearer_guard, problem_responses
from kasse_payment.adapters.invoice_pdf import render_pdf
from kasse_payment.application.invoicing import Invoicing
from kasse_payment.application.service import PaymentService
from kasse_payment.domain.invoice import Document
from kasse_payment.domain.payment import Payment, PaymentStatus
from kasse_payment.entrypoints import webhooks

log = logging.getLogger(__name__)


def problems(*codes: int) -> dict[int | str, dict[str, Any]]:
    return problem_responses(
        *codes,
        descriptions={
            400: "Unsigned, forged, stale or unreadable webhook",
            404: "No payment for the order yet",
            409: "The payment is not in a state that allows this",
        },
    )


class PaymentView(BaseModel):
    order_id: str
    status: PaymentStatus
    payment_intent_id: str | None
    client_secret: str | None = Field(description="Only while the customer must act on the intent, else null")


class Amount(BaseModel):
    amount: int
    currency: str


class ReasonView(BaseModel):
    rule: str
    detail: str
    points: int


class FraudDecisionView(BaseModel):
    order_id: str
    email: str | None
    client_ip: str | None
    amount: Amount | None
    outcome: str
    score: int
    reasons: list[ReasonView]
    decided_at: datetime
    reviewed: str | None
    payment_status: PaymentStatus


class RefundView(BaseModel):
    key: str
    amount: int
    reason: str
    state: str
    refund_id: str | None


class HistoryView(BaseModel):
    at: datetime
    status: str
    note: str


class PaymentDetail(BaseModel):
    order_id: str
    status: PaymentStatus
    payment_intent_id: str | None
    amount: Amount | None
    refunded_total: int
    refunds: list[RefundView]
    failure_reason: str | None
    fraud: FraudDecisionView | None
    history: list[HistoryView]


class ReviewRequest(BaseModel):
    decision: Literal["approve", "reject"]


class WebhookAck(BaseModel):
    received: bool = True
    outcome: Literal["applied", "duplicate", "ignored"]


def _amount(p: Payment) -> Amount | None:
    return Amount(amount=p.order.amount, currency=p.order.currency) if p.order else None


def view(p: Payment) -> PaymentView:
    return PaymentView(
        order_id=p.order_id,
        status=p.status,
        payment_intent_id=p.intent_id,
        client_secret=p.client_secret if p.status is PaymentStatus.REQUIRES_ACTION else None,
    )


def decision_view(p: Payment) -> FraudDecisionView | None:
    if p.fraud is None:
        return None
    return FraudDecisionView(
        order_id=p.order_id,
        email=p.order.email if p.order else None,
        client_ip=p.order.client_ip if p.order else None,
        amount=_amount(p),
        outcome=p.fraud.outcome.value,
        score=p.fraud.score,
        reasons=[ReasonView(rule=r.rule, detail=r.detail, points=r.points) for r in p.fraud.reasons],
        decided_at=p.fraud.decided_at,
        reviewed=p.fraud.reviewed_by_admin,
        payment_status=p.status,
    )


def detail(p: Payment) -> PaymentDetail:
    return PaymentDetail(
        order_id=p.order_id,
        status=p.status,
        payment_intent_id=p.intent_id,
        amount=_amount(p),
        refunded_total=p.refunded_total,
        refunds=[
            RefundView(key=r.key, amount=r.amount, reason=r.reason, state=r.state, refund_id=r.refund_id)
            for r in p.refunds
        ],
        failure_reason=p.failure.reason if p.failure else None,
        fraud=decision_view(p),
        history=[HistoryView(at=h.at, status=h.status, note=h.note) for h in p.history],
    )


class InvoiceSummary(BaseModel):
    number: str
    kind: str = Field(description="invoice or credit_note")
    issued_on: date
    refers_to: str | None = Field(description="A credit note: the invoice it corrects")
    currency: str
    net_total: int
    vat_total: int
    gross_total: int
    vat_rates: list[dict[str, int]] = Field(description="Per rate: basis_points, net, vat, gross")


def invoice_summary(d: Document) -> InvoiceSummary:
    return InvoiceSummary(
        number=d.number or "",
        kind=d.kind,
        issued_on=d.issued_on,
        refers_to=d.refers_to,
        currency=d.currency,
        net_total=d.net,
        vat_total=d.vat,
        gross_total=d.gross,
        vat_rates=[{"basis_points": r.basis_points, "net": r.net, "vat": r.vat, "gross": r.gross} for r in d.rates],
    )


def routers(
    payments: PaymentService,
    invoicing: Invoicing,
    *,
    internal_token: SecretStr | None,
    admin_token: SecretStr | None,
    webhook_secret: SecretStr,
    webhook_tolerance_s: int,
    webhook_limit: Callable[[Request], None] | None = None,
) -> list[APIRouter]:
    internal = APIRouter(
        prefix="/v1/payments",
        tags=["payments"],
        dependencies=[
            Depends(bearer_guard(internal_token, setting="KASSE_PAYMENT_INTERNAL_TOKEN", purpose="the payment view"))
        ],
    )
    stripe_hooks = APIRouter(
        prefix="/v1/webhooks",
        tags=["webhooks"],
        dependencies=[Depends(webhook_limit)] if webhook_limit else [],  # per client IP
    )
    admin = APIRouter(
        prefix="/v1/admin",
        tags=["admin"],
        dependencies=[Depends(bearer_guard(admin_token, setting="KASSE_PAYMENT_ADMIN_TOKEN"))],
    )

    @internal.get(
        "/{order_id}",
        summary="The payment of an order (for the cart's order view)",
        response_model=PaymentView,
        responses=problems(401, 403, 404),
    )
    async def get_payment(order_id: str) -> PaymentView:
        return view(await payments.get(order_id))

    @internal.get(
        "/{order_id}/invoices",
        summary="The order's invoice and credit notes (for the cart's order view)",
        response_model=list[InvoiceSummary],
        responses=problems(401, 403),
    )
    async def list_invoices(order_id: str) -> list[InvoiceSummary]:
        return [invoice_summary(d) for d in await invoicing.for_order(order_id)]

    @internal.get(
        "/{order_id}/invoices/{number}.pdf",
        summary="An invoice or credit note as PDF",
        response_class=Response,
        responses={200: {"content": {"application/pdf": {}}}, **problems(401, 403, 404)},
    )
    async def invoice_pdf(order_id: str, number: str) -> Response:
        found = next((d for d in await invoicing.for_order(order_id) if d.number == number), None)
        if found is None:
            raise NotFound(f"no invoice {number} for order {order_id}")
        return Response(
            render_pdf(found),
            media_type="application/pdf",
            headers={"Content-Disposition": f'attachment; filename="{number}.pdf"'},
        )

    @stripe_hooks.post(
        "/stripe",
        summary="Stripe webhook endpoint (payment_intent.succeeded / payment_failed, charge.refunded)",
        description="Verifies `Stripe-Signature` against the endpoint secret with a timestamp tolerance. "
        "Each Stripe event id is applied once; a webhook for an order not seen yet is kept until it is. "
        "An event without a PaymentIntent id, or for another intent than the order's, changes nothing: "
        "`outcome` is `ignored`.",
        response_model=WebhookAck,
        responses=problems(400, 429),
        openapi_extra={
            "requestBody": {
                "required": True,
                "description": "A Stripe event, exactly as Stripe sent it (the signature covers the raw bytes)",
                "content": {"application/json": {"schema": {"type": "object"}}},
            }
        },
    )
    async def stripe_webhook(
        request: Request, stripe_signature: Annotated[str | None, Header(alias="Stripe-Signature")] = None
    ) -> WebhookAck:
        payload = await request.body()
        event = webhooks.verify(payload, stripe_signature, webhook_secret.get_secret_value(), webhook_tolerance_s)
        if event["type"] not in webhooks.HANDLED:
            return WebhookAck(outcome="ignored")
        order_id = webhooks.order_id_of(event)
        if order_id is None:
            intent_id = webhooks.intent_of(event)
            order_id = await payments.order_for_intent(intent_id) if intent_id else None
        if order_id is None:
            log.warning("webhook for no known order", extra={"stripe_event_id": event["id"], "type": event["type"]})
            return WebhookAck(outcome="ignored")
        applied = await payments.stripe_notice(webhooks.to_notice(event, order_id))
        return WebhookAck(outcome="ignored" if applied is None else "applied" if applied else "duplicate")

    @admin.get(
        "/fraud-decisions",
        summary="Fraud screening decisions, newest first",
        response_model=list[FraudDecisionView],
        responses=problems(401, 403, 422),
    )
    async def list_decisions(
        outcome: Annotated[Literal["allow", "block", "review"] | None, Query()] = None,
        email: Annotated[str | None, Query(max_length=254)] = None,
        client_ip: Annotated[str | None, Query(max_length=64)] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
    ) -> list[FraudDecisionView]:
        found = await payments.fraud_decisions(outcome=outcome, email=email, client_ip=client_ip, limit=limit)
        return [d for d in (decision_view(p) for p in found) if d is not None]

    @admin.get(
        "/payments/{order_id}",
        summary="A payment with its fraud decision, refunds and history",
        response_model=PaymentDetail,
        responses=problems(401, 403, 404),
    )
    async def get_detail(order_id: str) -> PaymentDetail:
        return detail(await payments.get(order_id))

    @admin.post(
        "/payments/{order_id}/review",
        summary="Approve (charge) or reject (PaymentFailed fraud_suspected) a payment held for review",
        response_model=PaymentDetail,
        responses=problems(401, 403, 404, 409, 422),
    )
    async def review(order_id: str, body: ReviewRequest) -> PaymentDetail:
        return detail(await payments.review(order_id, body.decision == "approve"))

    return [internal, stripe_hooks, admin]
