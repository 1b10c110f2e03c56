"""The cart honours an experiment on the free-shipping threshold: each session gets its variant's
threshold (the kit's assignment rule, no call to metrics), and its exposure is recorded once."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from typing import Any

import pytest

from kasse_common.experiments import assign_variant, exposure_event_id
from kasse_contracts import topics
from kasse_contracts.events import (
    ExperimentChanged,
    ExperimentExposed,
    ExperimentMetric,
    ExperimentParameter,
    ExperimentStatus,
    Variant,
)
from kasse_testkit import TestPublisher, wait_until

from .conftest import new_cart, product, rate_table

pytestmark = pytest.mark.integration

WEIGHTS = [("control", 50), ("low", 50)]


def experiment(revision: int, status: ExperimentStatus) -> ExperimentChanged:
    return ExperimentChanged(
        occurred_at=datetime.now(UTC),
        experiment_id="exp_fs_cart",
        revision=revision,
        name="free shipping from 20 EUR",
        parameter=ExperimentParameter.FREE_SHIPPING_THRESHOLD,
        variants=[Variant(name=n, weight=w, value="5000" if n == "control" else "2000") for n, w in WEIGHTS],
        primary_metric=ExperimentMetric.CONVERSION_RATE,
        status=status,
        baseline=0.1,
        minimum_detectable_effect=0.2,
        started_at=datetime.now(UTC),
    )


async def test_each_session_gets_its_variants_threshold_and_one_exposure(
    cart_service: Any, seed: Any, cart_db: Any, test_publisher: TestPublisher, topic_reader: Any
) -> None:
    async with topic_reader(topics.EXPOSURES) as exposures, cart_service() as (_, client):
        await seed(product("p-exp", 2500), table=rate_table())
        await test_publisher.publish(experiment(1, ExperimentStatus.DRAFT))
        await test_publisher.publish(experiment(2, ExperimentStatus.RUNNING))
        await test_publisher.publish(experiment(1, ExperimentStatus.DRAFT))  # late and stale: ignored

        async def running() -> bool:
            doc = await cart_db["experiments"].find_one({"_id": "exp_fs_cart"})
            return doc is not None and doc["revision"] == 2

        await wait_until(running, message="the cart folded the running experiment")

        sessions = [f"sess-exp-{i}" for i in range(12)]
        variant_of = {s: assign_variant("exp_fs_cart", s, WEIGHTS) for s in sessions}
        assert set(variant_of.values()) == {"control", "low"}
        # 25.00 EUR of items: free shipping exactly in the `low` variant (from 20 EUR; control from 50 EUR).
        for s in sessions:
            cart_id, token = await new_cart(client, session=s)
            r = await client.post(
                f"/v1/carts/{cart_id}/items", json={"product_id": "p-exp", "quantity": 1}, headers=token
            )
            assert r.status_code in (200, 201), r.text
            assert r.json()["totals"]["free_shipping"] is (variant_of[s] == "low"), (s, variant_of[s])
            again = await client.get(f"/v1/carts/{cart_id}", headers=token)  # another view: no second exposure
            assert again.json()["totals"]["free_shipping"] is (variant_of[s] == "low")

        records = await exposures.wait_for(lambda r: r.event_type == ExperimentExposed.event_type, count=len(sessions))
        ids = Counter(r.headers["ce_id"] for r in records)
        assert ids == Counter({exposure_event_id("exp_fs_cart", s): 1 for s in sessions})
        for event in exposures.events(ExperimentExposed):
            assert event.variant == variant_of[event.session_id]
