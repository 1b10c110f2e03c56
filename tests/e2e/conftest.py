from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from kasse_contracts import topics
from kasse_testkit.e2e.shop import Shop, running_shop
from kasse_testkit.e2e.subscriber import OrderEventsSubscriber
from kasse_testkit.infrastructure import Infrastructure

ORDER_TOPICS = [topics.ORDERS, topics.STOCK, topics.PAYMENTS, topics.SHIPPING]


@pytest.fixture(scope="module")
async def shop(kasse_infra: Infrastructure, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Shop]:
    async with running_shop(kasse_infra, tmp_path_factory.mktemp("shop")) as running:
        yield running


@pytest.fixture(scope="module")
async def order_events(shop: Shop, kasse_infra: Infrastructure) -> AsyncIterator[OrderEventsSubscriber]:
    names = [shop.namespace.topic(t) for t in ORDER_TOPICS]
    async with OrderEventsSubscriber(kasse_infra.kafka_bootstrap, names) as subscriber:
        yield subscriber
