"""PaymentGateway on the official Stripe SDK (async methods, httpx).

The SDK retries connection errors, 409s and 5xx with exponential backoff (`max_network_retries`),
re-sending the same idempotency key, so a retry can never charge twice. What still fails after that
is GatewayUnavailable (try again later) or GatewayDeclined (final). Nothing here logs the API key,
client secrets or card data.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Mapping
from typing import Any

import stripe

from kasse_common.progress import working
from kasse_payment.application.ports import GatewayDeclined, GatewayUnavailable, IntentState

FINAL_ERRORS = (
    stripe.InvalidRequestError,
    stripe.AuthenticationError,
    stripe.PermissionError,
    stripe.IdempotencyError,
)
TRANSIENT_ERRORS = (stripe.APIConnectionError, stripe.RateLimitError, stripe.APIError)


class ProgressHTTPXClient(stripe.HTTPXClient):
    """The SDK's httpx client, each request attempt reported as progress to the consumer's watchdog while it
    lasts, up to its bound: a handler waiting on a slow Stripe call (retries included: the SDK's sleeps
    between attempts are at most 5 s) is working, not stalled; one hung beyond the bound is still restarted.
    httpx applies the timeout to connecting, waiting for the pool, writing and each read: four of them bound
    an attempt (a trickling answer may take longer and then counts as stalled)."""

    def __init__(self, *, timeout_s: float, **kwargs: Any) -> None:
        super().__init__(timeout=timeout_s, **kwargs)
        self.attempt_bound_s = 4 * timeout_s

    async def request_async(
        self, method: str, url: str, headers: Mapping[str, str], post_data: Any = None
    ) -> tuple[bytes, int, Mapping[str, str]]:
        async with working(self.attempt_bound_s):
            return await super().request_async(method, url, headers, post_data)

    async def request_stream_async(
        self, method: str, url: str, headers: Mapping[str, str], post_data: Any = None
    ) -> tuple[AsyncIterable[bytes], int, Mapping[str, str]]:
        async with working(self.attempt_bound_s):
            return await super().request_stream_async(method, url, headers, post_data)


def build_client(
    api_key: str,
    api_base: str,
    *,
    timeout_s: float,
    max_network_retries: int,
    http_client: stripe.HTTPClient | None = None,
) -> stripe.StripeClient:
    return stripe.StripeClient(
        api_key,
        base_addresses={"api": api_base},
        max_network_retries=max_network_retries,
        http_client=http_client or ProgressHTTPXClient(timeout_s=timeout_s),
    )


def _error_body(exc: stripe.StripeError) -> dict[str, Any]:
    body = exc.json_body if isinstance(exc.json_body, dict) else {}
    error = body.get("error")
    return error if isinstance(error, dict) else {}


def _translate(exc: stripe.StripeError) -> Exception:
    error = _error_body(exc)
    intent = error.get("payment_intent")
    intent_id = intent.get("id") if isinstance(intent, dict) else None
    if isinstance(exc, stripe.CardError):
        return GatewayDeclined(
            exc.code or "card_declined",
            error.get("message") or "the card was declined",
            decline_code=error.get("decline_code"),
            intent_id=intent_id,
        )
    if isinstance(exc, FINAL_ERRORS):
        return GatewayDeclined(
            "processing_error",
            f"{type(exc).__name__}: {error.get('message') or exc.code or 'refused'}",
            intent_id=intent_id,
        )
    if isinstance(exc, TRANSIENT_ERRORS):
        return GatewayUnavailable(f"{type(exc).__name__} (HTTP {exc.http_status})")
    return GatewayUnavailable(type(exc).__name__)


class StripeGateway:
    def __init__(self, client: stripe.StripeClient) -> None:
        self.client = client

    async def create_intent(
        self, *, order_id: str, amount: int, currency: str, email: str, idempotency_key: str, server_confirmation: bool
    ) -> IntentState:
        automatic: dict[str, Any] = {"enabled": True}
        if server_confirmation:
            automatic["allow_redirects"] = "never"  # no return_url when the server confirms
        params: dict[str, Any] = {
            "amount": amount,
            "currency": currency.lower(),
            "receipt_email": email,
            "automatic_payment_methods": automatic,
            "metadata": {"order_id": order_id},
            "description": f"Kasse order {order_id}",
        }
        try:
            intent = await self.client.v1.payment_intents.create_async(
                params,  # type: ignore[arg-type]
                options={"idempotency_key": idempotency_key},
            )
        except stripe.StripeError as exc:
            raise _translate(exc) from exc
        return IntentState(intent.id, intent.status, intent.client_secret)

    async def confirm_intent(self, *, intent_id: str, payment_method: str, idempotency_key: str) -> IntentState:
        try:
            intent = await self.client.v1.payment_intents.confirm_async(
                intent_id, {"payment_method": payment_method}, options={"idempotency_key": idempotency_key}
            )
        except stripe.StripeError as exc:
            raise _translate(exc) from exc
        return IntentState(intent.id, intent.status, intent.client_secret)

    async def refund(self, *, intent_id: str, amount: int, order_id: str, reason: str, idempotency_key: str) -> str:
        try:
            refund = await self.client.v1.refunds.create_async(
                {
                    "payment_intent": intent_id,
                    "amount": amount,
                    # Our key in the metadata too: the charge.refunded echo names it, whatever the timing.
                    "metadata": {"order_id": order_id, "kasse_reason": reason, "kasse_refund_key": idempotency_key},
                },
                options={"idempotency_key": idempotency_key},
            )
        except stripe.StripeError as exc:
            raise _translate(exc) from exc
        return refund.id

    async def cancel_intent(self, *, intent_id: str, idempotency_key: str) -> None:
        try:
            await self.client.v1.payment_intents.cancel_async(intent_id, options={"idempotency_key": idempotency_key})
        except stripe.StripeError as exc:
            raise _translate(exc) from exc

    async def find_intent(self, *, order_id: str) -> IntentState | None:
        try:
            found = await self.client.v1.payment_intents.search_async(
                {"query": f"metadata['order_id']:'{order_id}'", "limit": 10}
            )
        except stripe.StripeError as exc:
            raise _translate(exc) from exc
        # Only an intent that really carries this order id counts (search is eventually consistent, and a
        # test double may answer with anything); a canceled one is no payment.
        for intent in found.data:
            metadata = intent.to_dict().get("metadata") or {}
            if metadata.get("order_id") == order_id and intent.status != "canceled":
                return IntentState(intent.id, intent.status, intent.client_secret)
        return None
