"""Client IP (issue 13): X-Forwarded-For is believed only from configured proxies.

Fraud screening (payment) counts orders per `OrderPlaced.client_ip`; when a client could choose that
IP with a header, a client blocked after ten orders was let through again by changing it. The cart runs
here as a real process (uvicorn, as in production): without KASSE_TRUSTED_PROXIES every order carries
the socket's IP whatever the header says, so the velocity count cannot be reset by the client.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from kasse_contracts import topics
from kasse_contracts.events import OrderPlaced
from kasse_testkit import Namespace, ServiceProcess, free_port
from kasse_testkit.infrastructure import Infrastructure

from .conftest import checked_out_order, product, rate_table

pytestmark = pytest.mark.integration


async def test_a_client_chosen_forwarded_for_does_not_change_the_ip_fraud_screening_sees(
    kasse_infra: Infrastructure, namespace: Namespace, seed: Any, topic_reader: Any, tmp_path: Path
) -> None:
    port = free_port()
    cart = ServiceProcess(
        [str(Path(sys.executable).with_name("kasse-cart"))],
        {
            "KASSE_KAFKA_BOOTSTRAP": kasse_infra.kafka_bootstrap,
            "KASSE_MONGO_URI": kasse_infra.mongo_uri,
            "KASSE_CART_TOPIC_PREFIX": namespace.topic_prefix,
            "KASSE_CART_MONGO_DATABASE": namespace.database("cart"),
            "KASSE_CART_HTTP_PORT": str(port),
            "KASSE_CART_PAYMENT_BASE_URL": "",
            "KASSE_CART_OUTBOX_POLL_INTERVAL_S": "0.2",
            "KASSE_TRUSTED_PROXIES": "",
        },
        port=port,
        log_path=tmp_path / "cart.log",
    )
    await cart.start()
    try:
        async with topic_reader(topics.ORDERS) as reader:
            await seed(product("p1", 1999), table=rate_table())
            forged = ["203.0.113.7", "198.51.100.1, 203.0.113.8"]
            async with httpx.AsyncClient(base_url=cart.base_url, timeout=10) as plain:
                for n, header in enumerate(forged):
                    client = httpx.AsyncClient(base_url=cart.base_url, timeout=10, headers={"X-Forwarded-For": header})
                    async with client:
                        await checked_out_order(client, {"p1": 1}, key=f"forwarded-{n}-key")
                await checked_out_order(plain, {"p1": 1}, key="no-header-key")
            placed = await reader.wait_for_events(OrderPlaced, count=3)
        assert {p.client_ip for p in placed} == {"127.0.0.1"}, [p.client_ip for p in placed]
    finally:
        await cart.stop()


async def test_behind_a_configured_proxy_its_forwarded_client_ip_is_used(
    cart_service: Any, seed: Any, topic_reader: Any
) -> None:
    # In-process the peer is 127.0.0.1, here configured as the proxy (an ingress, the storefront).
    async with topic_reader(topics.ORDERS) as reader, cart_service(trusted_proxies="127.0.0.1") as (_, client):
        await seed(product("p1", 1999), table=rate_table())
        client.headers["X-Forwarded-For"] = "198.51.100.1, 203.0.113.9"  # the proxy appended the real client
        await checked_out_order(client, {"p1": 1}, key="proxied-key-1")
        (placed,) = await reader.wait_for_events(OrderPlaced)
    assert placed.client_ip == "203.0.113.9"
