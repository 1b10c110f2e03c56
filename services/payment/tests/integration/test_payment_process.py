"""The `kasse-payment` console script as a real process, configured only through the environment."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from kasse_payment.testing import reserved
from kasse_testkit import Namespace, ServiceProcess, TestPublisher, free_port, samples, wait_until
from kasse_testkit.infrastructure import Infrastructure

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


async def test_the_console_script_serves_and_charges_and_stops_gracefully(
    kasse_infra: Infrastructure, namespace: Namespace, test_publisher: TestPublisher, tmp_path: Path
) -> None:
    script = shutil.which("kasse-payment", path=str(Path(sys.executable).parent))
    assert script, "the kasse-payment console script is installed"
    port = free_port()
    service = ServiceProcess(
        [script],
        {
            "KASSE_PAYMENT_KAFKA_BOOTSTRAP": kasse_infra.kafka_bootstrap,
            "KASSE_PAYMENT_MONGO_URI": kasse_infra.mongo_uri,
            "KASSE_PAYMENT_MONGO_DATABASE": namespace.database("payment"),
            "KASSE_PAYMENT_TOPIC_PREFIX": namespace.topic_prefix,
            "KASSE_PAYMENT_HTTP_PORT": str(port),
            "KASSE_PAYMENT_STRIPE_API_BASE": kasse_infra.stripe_api_base,
            "KASSE_PAYMENT_STRIPE_API_KEY": "sk_test_ProcessTest4242",
            "KASSE_PAYMENT_INTERNAL_TOKEN": "process-internal",
            "KASSE_PAYMENT_CONFIRMATION_MODE": "server",
        },
        port=port,
        log_path=tmp_path / "payment.log",
    )
    await service.start()
    try:
        order = samples.order_placed()
        await test_publisher.publish(order)
        await test_publisher.publish(reserved(order.order_id))

        async def payment() -> dict[str, Any] | None:
            async with httpx.AsyncClient(base_url=service.base_url, timeout=5) as client:
                r = await client.get(
                    f"/v1/payments/{order.order_id}", headers={"Authorization": "Bearer process-internal"}
                )
                return r.json() if r.status_code == 200 and r.json()["status"] == "processing" else None

        found = await wait_until(payment, timeout=30)
        assert found["payment_intent_id"].startswith("pi_")
    finally:
        code = await service.stop()
    # uvicorn re-raises the captured SIGTERM after its graceful shutdown, hence -15 rather than 0.
    assert code in (0, -15)
    log = (tmp_path / "payment.log").read_text()
    assert "service stopping" in log and "Traceback" not in log
    assert "sk_test_ProcessTest4242" not in log and "process-internal" not in log
