"""An order's OrderPlaced never queues behind the shipping or payments topic's records (issue 12)."""

from __future__ import annotations

import pytest

from kasse_catalog.entrypoints.consumers import register
from kasse_catalog.settings import CatalogSettings
from kasse_common.messaging import EventConsumer, EventPublisher, create_broker
from kasse_contracts import topics

pytestmark = pytest.mark.unit


def test_each_topic_catalog_reads_has_a_lane_of_its_own() -> None:
    settings = CatalogSettings(profile="development", topic_prefix="u.")
    broker = create_broker(settings)
    consumer = EventConsumer(broker, settings, EventPublisher(broker, settings))
    register(consumer, stock=None, learner=None)  # type: ignore[arg-type]  # not called: no record flows
    consumer.attach()
    lanes = sorted(tuple(sorted(getattr(s, "topic_names", ()))) for s in broker.subscribers)
    wanted = [topics.ORDERS, topics.PAYMENTS, topics.SHIPPING, topics.STOREFRONT]
    assert lanes == sorted(("u." + t,) for t in wanted)
