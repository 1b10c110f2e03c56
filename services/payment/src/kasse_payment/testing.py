"""Test support (integration tests, local demos): record what is sent to Stripe, sign webhooks the
way Stripe does, build the events other services publish. Not used by the running service."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs

import stripe

from kasse_common import stripe_signing
from kasse_common.stripe_signing import intent_object as intent_object  # re-exported for the tests
from kasse_common.stripe_signing import stripe_event as stripe_event
from kasse_contracts.base import Money
from kasse_contracts.events import OrderCancelled, ReturnReceived, ShipmentCancelled, StockReserved
from kasse_contracts.events.common import StockLine
from kasse_contracts.events.orders import CancellationReason

WEBHOOK_SECRET = "whsec_integration_test"
INTERNAL_TOKEN = "internal-test-token"
ADMIN_TOKEN = "admin-test-token"


@dataclass(frozen=True)
class SentRequest:
    method: str
    path: str
    headers: dict[str, str]
    params: dict[str, list[str]]

    def one(self, name: str) -> str:
        (value,) = self.params[name]
        return value


class RecordingHTTPClient(stripe.HTTPXClient):
    """The SDK's real httpx client, also keeping every request it sends (stripe-mock only echoes fixtures)."""

    def __init__(self) -> None:
        super().__init__(timeout=10)
        self.sent: list[SentRequest] = []

    async def request_async(self, method: str, url: str, headers: Any, post_data: Any = None) -> Any:
        body = post_data.decode() if isinstance(post_data, bytes) else (post_data or "")
        path = url.split("://", 1)[-1].split("/", 1)[-1]
        query = path.split("?", 1)[1] if "?" in path else ""
        params = {**parse_qs(query), **parse_qs(body)}  # GET sends its parameters in the query string
        self.sent.append(SentRequest(method.upper(), "/" + path.split("?")[0], dict(headers), params))
        return await super().request_async(method, url, headers, post_data)

    def to(self, method: str, path_prefix: str, order_id: str | None = None) -> list[SentRequest]:
        return [
            r
            for r in self.sent
            if r.method == method
            and r.path.startswith(path_prefix)
            and (order_id is None or order_id in r.headers.get("Idempotency-Key", ""))
        ]


def sign(payload: str, secret: str = WEBHOOK_SECRET, timestamp: int | None = None) -> str:
    return stripe_signing.sign(payload, secret, timestamp)


def reserved(order_id: str) -> StockReserved:
    return StockReserved(
        occurred_at=datetime.now(UTC),
        session_id="sess_stock",
        order_id=order_id,
        lines=[StockLine(product_id="prod_1", sku="SKU-prod_1", quantity=1)],
    )


def cancelled(order_id: str, total: int, was_paid: bool) -> OrderCancelled:
    return OrderCancelled(
        occurred_at=datetime.now(UTC),
        session_id="sess_cart",
        order_id=order_id,
        reason=CancellationReason.CUSTOMER_REQUEST,
        was_paid=was_paid,
        total=Money(amount=total, currency="EUR"),
    )


def shipment_cancelled(order_id: str) -> ShipmentCancelled:
    """Shipping's verdict on a cancellation: the parcel was stopped (payment may refund)."""
    return ShipmentCancelled(
        occurred_at=datetime.now(UTC), session_id="sess_ship", order_id=order_id, reason="customer_request"
    )


def return_received(order_id: str, return_id: str, amount: int) -> ReturnReceived:
    return ReturnReceived(
        occurred_at=datetime.now(UTC),
        session_id="sess_ship",
        order_id=order_id,
        return_id=return_id,
        lines=[],
        refund_amount=Money(amount=amount, currency="EUR"),
    )
