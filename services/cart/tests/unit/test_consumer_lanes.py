"""The order's own events are never queued behind the catalog's stream of product changes."""

from __future__ import annotations

import pytest

from kasse_cart.entrypoints.consumers import register
from kasse_cart.settings import CartSettings
from kasse_common.messaging import EventConsumer, EventPublisher, create_broker
from kasse_contracts import topics

pytestmark = pytest.mark.unit


def test_product_changes_are_consumed_in_a_lane_apart_from_the_order_events() -> None:
    settings = CartSettings(profile="development", topic_prefix="u.")
    broker = create_broker(settings)
    consumer = EventConsumer(broker, settings, EventPublisher(broker, settings))
    register(consumer, orders=None, read_models=None)  # type: ignore[arg-type]  # not called: no record flows
    consumer.attach()
    lanes: list[set[str]] = [set(getattr(s, "topic_names", ())) for s in broker.subscribers]
    (catalog_lane,) = [lane for lane in lanes if "u." + topics.CATALOG in lane]
    assert catalog_lane == {"u." + topics.CATALOG}
    # The order's own facts: a lane per topic, so a burst of shipment events does not hold up payments.
    for topic in (topics.STOCK, topics.PAYMENTS):
        assert {"u." + topic} in lanes
    assert {"u." + topics.SHIPPING, "u." + topics.SHIPPING_METHODS} in lanes
    assert len(lanes) == 4
