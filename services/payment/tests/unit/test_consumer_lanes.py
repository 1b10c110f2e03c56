"""An order's OrderPlaced, its StockReserved and its shipment answers never queue behind another topic's records."""

from __future__ import annotations

import pytest

from kasse_common.messaging import EventConsumer, EventPublisher, create_broker
from kasse_contracts import topics
from kasse_payment.entrypoints.consumers import register
from kasse_payment.settings import PaymentSettings

pytestmark = pytest.mark.unit


def test_each_topic_payment_reads_has_a_lane_of_its_own() -> None:
    settings = PaymentSettings(profile="development", topic_prefix="u.")
    broker = create_broker(settings)
    consumer = EventConsumer(broker, settings, EventPublisher(broker, settings))
    register(consumer, payments=None, invoicing=None)  # type: ignore[arg-type]  # not called: no record flows
    consumer.attach()
    lanes = sorted(tuple(sorted(getattr(s, "topic_names", ()))) for s in broker.subscribers)
    wanted = [topics.ORDERS, topics.PAYMENTS, topics.SHIPPING, topics.STOCK]
    assert lanes == sorted(("u." + t,) for t in wanted)
