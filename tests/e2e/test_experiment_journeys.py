"""An experiment on the free-shipping threshold through the real shop (issue 17): metrics defines and
starts it, the cart honours each session's variant, shoppers run journeys in both variants, and the
per-variant KPIs equal the journeys run, also after every exposure and capture is delivered again and
after the metrics service crashes and restarts.

The journeys are deterministic: the session ids are chosen by computing their variant with the kit's
assignment rule (`assign_variant`), the same function the cart uses, so each variant gets exactly the
planned sessions and outcomes."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from pymongo import AsyncMongoClient

from kasse_common.envelope import decode, encode
from kasse_common.experiments import assign_variant, exposure_event_id
from kasse_contracts import topics
from kasse_contracts.events import ExperimentExposed, PaymentCaptured
from kasse_testkit import ServiceProcess, TestPublisher, wait_until
from kasse_testkit.e2e.journeys import Shopper
from kasse_testkit.e2e.shop import ADMIN, Shop, executable, running_shop
from kasse_testkit.infrastructure import Infrastructure
from kasse_testkit.kafka import ReadRecord, TopicReader

from .test_order_journeys import pay, ready_product

pytestmark = pytest.mark.e2e

EXPERIMENT = "exp_e2e_free_shipping"
WEIGHTS = [("control", 1), ("low", 1)]
PRICE = 2500  # 25 EUR: free shipping in `low` (from 20 EUR), charged in `control` (from 50 EUR)
DEFINITION = {
    "experiment_id": EXPERIMENT,
    "name": "Free shipping from 20 EUR",
    "hypothesis": "A lower free-shipping threshold converts more carts",
    "parameter": "free_shipping_threshold",
    "variants": [{"name": "control", "weight": 1, "value": "5000"}, {"name": "low", "weight": 1, "value": "2000"}],
    "primary_metric": "conversion_rate",
    "baseline": 0.1,
    "minimum_detectable_effect": 0.2,
}
# The journeys per variant: "cart" adds to the cart and leaves, "failed" orders and the payment fails.
PLAN = {"control": ["paid", "paid", "failed", "cart"], "low": ["paid", "paid", "paid", "cart"]}
STEPS = ("exposed", "added_to_cart", "checkout_started", "order_placed", "paid")


def planned_sessions() -> list[tuple[str, str, str]]:
    """(session, variant, outcome): the first session ids whose computed variant still has a slot."""
    slots = {v: list(outcomes) for v, outcomes in PLAN.items()}
    chosen = []
    for i in range(1000):
        session = f"sess-e2e-exp-{i}"
        variant = assign_variant(EXPERIMENT, session, WEIGHTS)
        if slots[variant]:
            chosen.append((session, variant, slots[variant].pop(0)))
        if not any(slots.values()):
            return chosen
    raise AssertionError("the assignment does not spread 1000 sessions over both variants")


@pytest.fixture(scope="module")
async def experiment_shop(kasse_infra: Infrastructure, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Shop]:
    # A shop of its own (the analysis counts every session it sees); snapshots every second, so the
    # restart below resumes from a snapshot plus the facts after it.
    settings = {"KASSE_METRICS_SNAPSHOT_INTERVAL_S": "1"}
    async with running_shop(kasse_infra, tmp_path_factory.mktemp("experiment"), settings=settings) as shop:
        yield shop


async def counter(client: httpx.AsyncClient, shop: Shop, name: str) -> float:
    text = (await client.get(shop.url("metrics") + "/metrics")).text
    found = re.search(rf"^{name}_total (\S+)$", text, re.MULTILINE)
    assert found, f"{name}_total not exported"
    return float(found.group(1))


def per_variant(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        v["variant"]: {
            "sessions": v["sessions"],
            "funnel": {step["step"]: step["sessions"] for step in v["funnel"]},
            "orders_paid": v["orders_paid"],
            "conversion_rate": v["conversion_rate"],
            "revenue": v["revenue"],
            "payment_failure_rate": v["payment_failure_rate"],
        }
        for v in report["variants"]
    }


async def test_per_variant_kpis_equal_the_journeys_through_redelivery_and_a_metrics_restart(
    experiment_shop: Shop,
) -> None:
    shop = experiment_shop
    admin = {"Authorization": f"Bearer {ADMIN['metrics']}"}
    async with httpx.AsyncClient(timeout=30) as client:
        product_id = await ready_product(client, shop, "E2E-EXP", stock=50, price=PRICE)
        created = await client.post(shop.url("metrics") + "/v1/admin/experiments", json=DEFINITION, headers=admin)
        assert created.status_code == 201, created.text
        started = await client.post(shop.url("metrics") + f"/v1/admin/experiments/{EXPERIMENT}/start", headers=admin)
        assert started.status_code == 200 and started.json()["status"] == "running", started.text

        # The cart learns the running experiment from ExperimentChanged (no call to metrics).
        mongo: AsyncMongoClient[Any] = AsyncMongoClient(shop.infra.mongo_uri)
        try:
            experiments = mongo[shop.namespace.database("cart")]["experiments"]

            async def cart_runs_it() -> bool:
                doc = await experiments.find_one({"_id": EXPERIMENT})
                return bool(doc and doc["definition"]["status"] == "running")

            await wait_until(cart_runs_it, timeout=30, message="the cart folded the running experiment")
        finally:
            await mongo.close()

        plan = planned_sessions()
        paid_total = {"control": 0, "low": 0}

        async def journey(session: str, variant: str, outcome: str) -> None:
            # One e-mail per shopper: payment's fraud rules block a sixth order from one address within an hour.
            shopper = Shopper(
                client, shop.url("catalog"), shop.url("cart"), session_id=session, email=f"{session}@example.com"
            )
            await shopper.view(product_id)
            added = await shopper.add(product_id)
            assert added.status_code in (200, 201), added.text
            # The cart honours the session's variant: free shipping from 20 EUR only in `low`.
            assert added.json()["totals"]["free_shipping"] is (variant == "low"), (session, variant)
            again = await client.get(f"{shop.url('cart')}/v1/carts/{shopper.cart_id}", headers=shopper.cart_headers)
            assert again.json()["totals"]["free_shipping"] is (variant == "low")
            if outcome == "cart":
                return
            await shopper.checkout()
            placed = await shopper.place_order()
            # Generous time-outs: a condition, not a sleep — on an idle machine they are met in seconds.
            await shop.wait_for_status(client, placed["order_id"], placed["order_token"], "stock_reserved", 120)
            await pay(client, shop, placed["order_id"], succeed=outcome == "paid")
            if outcome == "paid":
                paid_total[variant] += placed["total"]["amount"]
            else:
                await shop.wait_for_status(client, placed["order_id"], placed["order_token"], "cancelled", 120)

        await asyncio.gather(*(journey(*p) for p in plan))
        assert paid_total["control"] > 2 * PRICE  # control paid shipping on both orders, `low` did not
        assert paid_total["low"] == 3 * PRICE

        expected: dict[str, dict[str, Any]] = {}
        for variant, outcomes in PLAN.items():
            paid = outcomes.count("paid")
            ordered = paid + outcomes.count("failed")
            expected[variant] = {
                "sessions": len(outcomes),
                "funnel": dict(zip(STEPS, [len(outcomes), len(outcomes), ordered, ordered, paid], strict=True)),
                "orders_paid": paid,
                "conversion_rate": paid / len(outcomes),
                "revenue": paid_total[variant],
                "payment_failure_rate": outcomes.count("failed") / ordered,
            }
        seen: dict[str, Any] = {}

        async def kpis_equal_the_journeys() -> bool:
            nonlocal seen
            r = await client.get(shop.url("metrics") + f"/v1/experiments/{EXPERIMENT}")
            seen = per_variant(r.json()) if r.status_code == 200 else {"status": r.status_code}
            return seen == expected

        def mismatch() -> str:
            return f"per-variant KPIs {seen} != journeys {expected}"

        await wait_until(kpis_equal_the_journeys, timeout=120, message=mismatch)

        # Exactly one exposure per session reached Kafka (the cart showed each cart more than once).
        exposure_topic = shop.namespace.topic(topics.EXPOSURES)
        payment_topic = shop.namespace.topic(topics.PAYMENTS)
        async with TopicReader(shop.infra.kafka_bootstrap, exposure_topic, payment_topic) as reader:
            exposures = await reader.wait_for(lambda r: r.event_type == ExperimentExposed.event_type, count=len(plan))
            captures = await reader.wait_for(lambda r: r.event_type == PaymentCaptured.event_type, count=5)
        assert sorted(r.headers["ce_id"] for r in exposures) == sorted(
            exposure_event_id(EXPERIMENT, s) for s, _, _ in plan
        )

        async def redeliver() -> None:
            """Every exposure and capture again, as a redelivery would (same records), and each once more
            as a new publication (a new event id: not caught by the event-id dedupe)."""
            read_before = await counter(client, shop, "kasse_metrics_records_ingested")
            applied_before = await counter(client, shop, "kasse_metrics_facts_applied")
            async with TestPublisher(shop.infra.kafka_bootstrap, shop.namespace.topic_prefix) as publisher:
                for record in [*exposures, *captures]:
                    await publisher.publish_raw(record.topic, record.value, record.key, record.headers)
                    await publisher.publish_record(republished(record))
            n = len(exposures) + len(captures)

            async def consumed() -> bool:
                # Every record read, and the new publications applied (the analysis observes each fact
                # in the same step as the projection applies it).
                read = await counter(client, shop, "kasse_metrics_records_ingested")
                applied = await counter(client, shop, "kasse_metrics_facts_applied")
                return read >= read_before + 2 * n and applied >= applied_before + n

            await wait_until(consumed, timeout=60, message="metrics consumed the redelivered records")

        await redeliver()
        assert await kpis_equal_the_journeys(), mismatch()

        # A crash of metrics (SIGKILL: nothing flushed) and a restart: it resumes from its snapshot and
        # the records after it, and the analysis is the same; redelivered again, still the same.
        shop.processes["metrics"].kill()
        shop.processes["metrics"] = await ServiceProcess(
            [executable("metrics")],
            shop.env("metrics"),
            port=shop.ports["metrics"],
            log_path=shop.log_dir / "metrics-restarted.log",
        ).start(timeout=60)
        await wait_until(kpis_equal_the_journeys, timeout=60, message=mismatch)
        await redeliver()
        assert await kpis_equal_the_journeys(), mismatch()


def republished(record: ReadRecord) -> Any:
    """The same event published again under a new event id (another producer's retry after a lost ack)."""
    event = decode(record.value, record.headers).event
    assert event is not None
    return encode(event, service="e2e-redelivery", event_id="redelivered-" + uuid.uuid4().hex)
