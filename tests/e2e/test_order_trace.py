"""One order, one trace: HTTP into the cart, Kafka to catalog, payment, shipping and metrics, the Mongo
calls on the way, collected over OTLP from the five service processes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from kasse_testkit import wait_until
from kasse_testkit.e2e.journeys import Shopper
from kasse_testkit.e2e.shop import Shop, running_shop
from kasse_testkit.infrastructure import Infrastructure
from kasse_testkit.otlp import OtlpCollector

from .test_order_journeys import pay, ready_product

pytestmark = pytest.mark.e2e

SERVER, CLIENT, PRODUCER, CONSUMER = 2, 3, 4, 5  # OTLP SpanKind values


@pytest.fixture(scope="module")
def collector() -> Iterator[OtlpCollector]:
    with OtlpCollector() as running:
        yield running


@pytest.fixture(scope="module")
async def traced_shop(
    kasse_infra: Infrastructure, collector: OtlpCollector, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Shop]:
    async with running_shop(kasse_infra, tmp_path_factory.mktemp("traced"), otlp_endpoint=collector.endpoint) as shop:
        yield shop


async def test_one_trace_links_every_hop_of_an_order(traced_shop: Shop, collector: OtlpCollector) -> None:
    shop = traced_shop
    async with httpx.AsyncClient(timeout=30) as client:
        product_id = await ready_product(client, shop, "E2E-TRACE", stock=3)
        shopper = Shopper(client, shop.url("catalog"), shop.url("cart"))
        placed = await shopper.buy(product_id)
        order_id, token = placed["order_id"], placed["order_token"]
        await shop.wait_for_status(client, order_id, token, "stock_reserved")
        await pay(client, shop, order_id)
        await shop.wait_for_status(client, order_id, token, "delivered", timeout=90)

    def place_order_trace() -> list[str]:
        return [
            s.trace_id
            for s in collector.spans
            if s.service == "kasse-cart"
            and s.kind == SERVER
            and s.attributes.get("http.method") == "POST"
            and str(s.attributes.get("http.target", "")) == f"/v1/carts/{shopper.cart_id}/order"
        ]

    def server_spans() -> str:
        return str([(s.service, s.name, s.attributes) for s in collector.spans if s.kind == SERVER][:6])

    (trace_id,) = await wait_until(
        place_order_trace, timeout=30, message=lambda: f"the cart's place-order span among {server_spans()}"
    )

    def hops() -> set[tuple[str, int]]:
        return {(s.service, s.kind) for s in collector.trace(trace_id)}

    expected = {
        ("kasse-cart", SERVER),
        ("kasse-cart", PRODUCER),
        ("kasse-catalog", CONSUMER),
        ("kasse-catalog", PRODUCER),
        ("kasse-payment", CONSUMER),
        ("kasse-payment", PRODUCER),
        ("kasse-shipping", CONSUMER),
        ("kasse-shipping", PRODUCER),
        ("kasse-metrics", CONSUMER),
    }
    await wait_until(
        lambda: expected <= hops(),
        timeout=30,
        message=lambda: f"missing hops {sorted(expected - hops())} in trace {trace_id}",
    )

    # Every span but the root has its parent in the same trace: the hops are linked, not just tagged.
    # (Parents may reach the collector after their children: processes export in batches.)
    def roots() -> list[tuple[str, int]]:
        spans = collector.trace(trace_id)
        ids = {s.span_id for s in spans}
        return [(s.service, s.kind) for s in spans if s.parent_span_id not in ids]

    await wait_until(lambda: roots() == [("kasse-cart", SERVER)], timeout=30, message=lambda: f"roots {roots()}")
    spans = collector.trace(trace_id)
    mongo = [s for s in spans if s.kind == CLIENT and s.attributes.get("db.system") == "mongodb"]
    assert {s.service for s in mongo} >= {"kasse-cart", "kasse-catalog", "kasse-payment", "kasse-shipping"}
