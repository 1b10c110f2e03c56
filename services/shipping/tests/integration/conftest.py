"""Shared helpers of the shipping integration tests (real Kafka and FerretDB)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from kasse_common.persistence import processed_ids
from kasse_contracts.events import OrderPlaced, PaymentCaptured
from kasse_shipping.settings import ShippingSettings
from kasse_testkit.samples import now

ADMIN_TOKEN = "test-admin-token"


@pytest.fixture
def shipping_settings(settings_for: Callable[..., Any]) -> Callable[..., ShippingSettings]:
    """Settings on the real stack with a fast simulated carrier (overridable)."""

    def build(**overrides: Any) -> ShippingSettings:
        values: dict[str, Any] = {
            "admin_token": ADMIN_TOKEN,
            "carrier_dispatch_after_s": 0.3,
            "carrier_deliver_after_s": 0.3,
            "carrier_scan_interval_s": 0.1,
            "outbox_poll_interval_s": 0.1,
        }
        values.update(overrides)
        settings: ShippingSettings = settings_for(ShippingSettings, **values)
        return settings

    return build


def payment_for(order: OrderPlaced, **kw: Any) -> PaymentCaptured:
    values: dict[str, Any] = {
        "occurred_at": now(),
        "session_id": order.session_id,
        "order_id": order.order_id,
        "payment_intent_id": "pi_" + order.order_id,
        "amount": order.total,
    }
    values.update(kw)
    return PaymentCaptured(**values)


async def fulfilment_doc(settings: ShippingSettings, order_id: str) -> dict[str, Any] | None:
    client: AsyncMongoClient[Any] = AsyncMongoClient(settings.mongo_uri.get_secret_value(), tz_aware=True)
    try:
        return await client[settings.database_name]["fulfilments"].find_one({"_id": order_id})
    finally:
        await client.close()


async def processed(settings: ShippingSettings, order_id: str, *event_ids: str) -> bool:
    doc = await fulfilment_doc(settings, order_id)
    return doc is not None and set(event_ids) <= processed_ids(doc)
