"""An outside system reads Kasse events with a plain aiokafka consumer, the committed JSON Schemas
and the `ce_*` headers, importing nothing from Kasse (contracts/examples/plain_consumer.py)."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any, ClassVar

import pytest
from pydantic_settings import SettingsConfigDict

from kasse_common.runtime import ServiceRuntime
from kasse_common.settings import ServiceSettings
from kasse_contracts.events import OrderPlaced
from kasse_testkit import Namespace
from kasse_testkit.infrastructure import Infrastructure
from kasse_testkit.samples import order_placed

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "contracts" / "examples" / "plain_consumer.py"


class CartLikeSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="KASSE_PLAIN_TEST_", extra="ignore", frozen=True)
    service_name: ClassVar[str] = "cart"


async def test_plain_consumer_decodes_a_kasse_event_with_only_the_schema_and_headers(
    kasse_infra: Infrastructure, namespace: Namespace, settings_for: Any
) -> None:
    producer = ServiceRuntime(settings_for(CartLikeSettings), configure_logs=False)
    producer.produces(OrderPlaced)
    orders = producer.document_store("orders")
    event = order_placed()
    await producer.start()
    try:
        await orders.commit(
            event.order_id,
            expected_version=None,
            state={"status": "placed"},
            events=[producer.encode(event, event_id="plain-1")],
        )
        await producer.relay.drain()
    finally:
        await producer.stop()

    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(EXAMPLE),
        "--bootstrap",
        kasse_infra.kafka_bootstrap,
        "--topic",
        namespace.topic(OrderPlaced.topic),
        "--max-events",
        "1",
        "--idle-timeout",
        "20",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    lines = out.decode().splitlines()
    assert len(lines) == 1, lines
    line = lines[0]
    decoded = json.loads(line)
    assert decoded["valid"], decoded["errors"]
    assert decoded["id"] == "plain-1"
    assert decoded["type"] == "io.kasse.cart.OrderPlaced.v1"
    assert decoded["source"] == "urn:kasse:service:cart"
    assert decoded["subject"] == decoded["key"] == event.order_id
    assert decoded["data"]["total"] == {"amount": event.total.amount, "currency": "EUR"}
    assert OrderPlaced.model_validate(decoded["data"]) == event
    assert json.loads(err.decode().strip().splitlines()[-1]) == {"kasse_modules": []}
