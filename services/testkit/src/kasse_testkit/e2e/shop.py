"""The whole shop for end-to-end tests: the five services as real processes on the real stack.

Every shop gets its own topic prefix and databases, so it never sees another test's events. Payments
run in customer-confirmation mode: as in production, the outcome reaches Kasse through Stripe's signed
webhooks, which `Shop.stripe_webhook` sends the way Stripe does (the test plays the customer's bank).
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from kasse_payment.testing import sign, stripe_event
from kasse_testkit import Namespace, ServiceProcess, free_port, wait_until
from kasse_testkit.infrastructure import Infrastructure
from kasse_testkit.kafka import delete_namespace_topics

SERVICES = ("catalog", "cart", "payment", "shipping", "metrics")
ADMIN = {name: f"e2e-{name}-admin" for name in SERVICES}
INTERNAL_TOKEN = "e2e-internal"
WEBHOOK_SECRET = "whsec_e2e_" + uuid.uuid4().hex


@asynccontextmanager
async def running_shop(infra: Infrastructure, log_dir: Path, **options: Any) -> AsyncIterator[Shop]:
    """A started Shop in a namespace of its own (`options`: Shop's fields, e.g. settings), stopped and its
    topics deleted at the end, also when it failed to start."""
    shop = Shop(infra, Namespace(uuid.uuid4().hex[:10]), log_dir, **options)
    try:
        yield await shop.start()
    finally:
        await shop.stop()


def executable(name: str) -> str:
    path = Path(sys.executable).with_name(f"kasse-{name}")
    if not path.exists():
        raise AssertionError(f"{path} missing: run `uv sync`")
    return str(path)


@dataclass
class Shop:
    infra: Infrastructure
    namespace: Namespace
    log_dir: Path
    otlp_endpoint: str | None = None
    # The storefront (web shop) on top of the five, with test payments: only the tests that use it.
    with_storefront: bool = False
    ports: dict[str, int] = field(default_factory=lambda: {name: free_port() for name in (*SERVICES, "storefront")})
    processes: dict[str, ServiceProcess] = field(default_factory=dict)
    settings: dict[str, str] = field(default_factory=dict)  # extra KASSE_* settings (prefixed, so per service)

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.ports[service]}"

    def storefront_env(self) -> dict[str, str]:
        return {
            "KASSE_PROFILE": "development",
            "KASSE_STOREFRONT_HTTP_PORT": str(self.ports["storefront"]),
            "KASSE_STOREFRONT_CATALOG_URL": self.url("catalog"),
            "KASSE_STOREFRONT_CART_URL": self.url("cart"),
            "KASSE_STOREFRONT_PAYMENT_URL": self.url("payment"),
            "KASSE_STOREFRONT_SHIPPING_URL": self.url("shipping"),
            "KASSE_STOREFRONT_TEST_PAYMENT_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "KASSE_STOREFRONT_TEST_PAYMENT_INTERNAL_TOKEN": INTERNAL_TOKEN,
            "KASSE_STOREFRONT_LOG_JSON": "true",
            # Layout experiments: the storefront keeps their read model and records exposures like the cart.
            "KASSE_KAFKA_BOOTSTRAP": self.infra.kafka_bootstrap,
            "KASSE_MONGO_URI": self.infra.mongo_uri,
            "KASSE_STOREFRONT_TOPIC_PREFIX": self.namespace.topic_prefix,
            "KASSE_STOREFRONT_MONGO_DATABASE": self.namespace.database("storefront"),
            "KASSE_STOREFRONT_OUTBOX_POLL_INTERVAL_S": "0.2",
            **{k: v for k, v in self.settings.items() if k.startswith("KASSE_STOREFRONT_")},
        }

    def env(self, service: str) -> dict[str, str]:
        prefix = f"KASSE_{service.upper()}_"
        env = {
            "KASSE_KAFKA_BOOTSTRAP": self.infra.kafka_bootstrap,
            "KASSE_MONGO_URI": self.infra.mongo_uri,
            f"{prefix}TOPIC_PREFIX": self.namespace.topic_prefix,
            f"{prefix}MONGO_DATABASE": self.namespace.database(service),
            f"{prefix}HTTP_PORT": str(self.ports[service]),
            "KASSE_PROFILE": "development",  # the harness chooses it explicitly (production fails closed)
            # As under `make up`: the journeys and shoppers stand in for the storefront, a proxy that
            # forwards each visitor's IP (the default, no proxy trusted, is covered by cart's test_client_ip
            # and tests/e2e/test_blocked_client.py, which sets KASSE_CART_TRUSTED_PROXIES empty).
            "KASSE_TRUSTED_PROXIES": "127.0.0.1",
            f"{prefix}ADMIN_TOKEN": ADMIN[service],
            f"{prefix}OUTBOX_POLL_INTERVAL_S": "0.2",
            f"{prefix}LOG_JSON": "true",
        }
        if self.otlp_endpoint:
            env["OTEL_EXPORTER_OTLP_ENDPOINT"] = self.otlp_endpoint
            env["OTEL_BSP_SCHEDULE_DELAY"] = "200"
        if service == "payment":
            env.update(
                {
                    "KASSE_PAYMENT_STRIPE_API_BASE": self.infra.stripe_api_base,
                    "KASSE_PAYMENT_STRIPE_API_KEY": "sk_test_123",
                    "KASSE_PAYMENT_STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
                    "KASSE_PAYMENT_INTERNAL_TOKEN": INTERNAL_TOKEN,
                    "KASSE_PAYMENT_CONFIRMATION_MODE": "customer",
                    "KASSE_PAYMENT_SWEEP_INTERVAL_S": "1",
                }
            )
        if service == "cart":
            env.update(
                {
                    "KASSE_CART_PAYMENT_BASE_URL": self.url("payment"),
                    "KASSE_CART_PAYMENT_INTERNAL_TOKEN": INTERNAL_TOKEN,
                }
            )
        if service == "shipping":
            env.update(
                {
                    "KASSE_SHIPPING_CARRIER_DISPATCH_AFTER_S": "1",
                    "KASSE_SHIPPING_CARRIER_DELIVER_AFTER_S": "1",
                    "KASSE_SHIPPING_CARRIER_SCAN_INTERVAL_S": "0.5",
                }
            )
        env.update({k: v for k, v in self.settings.items() if k.startswith(prefix) or not k.startswith("KASSE_")})
        return env

    async def start(self) -> Shop:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for name in SERVICES:
            self.processes[name] = ServiceProcess(
                [executable(name)], self.env(name), port=self.ports[name], log_path=self.log_dir / f"{name}.log"
            )
        # Side by side: each spends most of its start waiting for Kafka (topics, group join).
        await asyncio.gather(*(process.start(timeout=120) for process in self.processes.values()))
        if self.with_storefront:
            self.processes["storefront"] = await ServiceProcess(
                [executable("storefront")],
                self.storefront_env(),
                port=self.ports["storefront"],
                log_path=self.log_dir / "storefront.log",
            ).start(timeout=120)
        return self

    async def stop(self) -> None:
        for name in ("storefront", *reversed(SERVICES)):
            if name in self.processes:
                await self.processes[name].stop()
        # The broker holds files open per partition: a shop's topics go with it (see delete_namespace_topics).
        await asyncio.to_thread(delete_namespace_topics, self.infra.kafka_bootstrap, self.namespace.topic_prefix)

    def log(self, service: str) -> str:
        return (self.log_dir / f"{service}.log").read_text(errors="replace")

    # -- the storefront's calls ---------------------------------------------------------------
    async def stripe_webhook(self, client: httpx.AsyncClient, event_type: str, obj: dict[str, Any]) -> httpx.Response:
        """Deliver a Stripe event signed with the endpoint secret, as Stripe does."""
        payload = stripe_event(event_type, obj)
        return await client.post(
            self.url("payment") + "/v1/webhooks/stripe",
            content=payload,
            headers={"Stripe-Signature": sign(payload, WEBHOOK_SECRET), "Content-Type": "application/json"},
        )

    async def payment(self, client: httpx.AsyncClient, order_id: str) -> dict[str, Any]:
        r = await client.get(
            self.url("payment") + f"/v1/admin/payments/{order_id}",
            headers={"Authorization": f"Bearer {ADMIN['payment']}"},
        )
        return r.json() if r.status_code == 200 else {}

    async def order(self, client: httpx.AsyncClient, order_id: str, token: str) -> dict[str, Any]:
        r = await client.get(self.url("cart") + f"/v1/orders/{order_id}", headers={"X-Order-Token": token})
        assert r.status_code == 200, r.text
        return dict(r.json())

    async def wait_for_status(
        self, client: httpx.AsyncClient, order_id: str, token: str, status: str, timeout: float = 60
    ) -> dict[str, Any]:
        last: dict[str, Any] = {}

        async def reached() -> bool:
            nonlocal last
            last = await self.order(client, order_id, token)
            return bool(last.get("status") == status)

        await wait_until(
            reached,
            timeout=timeout,
            interval=0.25,
            message=lambda: f"order {order_id} to be {status}; it is {last.get('status')}: {last.get('timeline')}",
        )
        return last
