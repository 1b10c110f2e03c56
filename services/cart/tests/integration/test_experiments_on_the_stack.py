"""The cart honours experiments on the free-shipping threshold and on the coupon offered on the cart
page: each session gets its variant (the kit's assignment rule, no call to metrics), and its exposure
is recorded once."""

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

from .conftest import ADMIN, new_cart, product, rate_table

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


COUPON_WEIGHTS = [("none", 1), ("offer", 1), ("typo", 1)]
COUPON_VALUES = {"none": "", "offer": "welcome10", "typo": "NO-SUCH-CODE"}


def coupon_experiment() -> ExperimentChanged:
    return ExperimentChanged(
        occurred_at=datetime.now(UTC),
        experiment_id="exp_coupon_cart",
        revision=1,
        name="offer 10 % on the cart page",
        parameter=ExperimentParameter.CART_COUPON,
        variants=[Variant(name=n, weight=w, value=COUPON_VALUES[n]) for n, w in COUPON_WEIGHTS],
        primary_metric=ExperimentMetric.CONVERSION_RATE,
        status=ExperimentStatus.RUNNING,
        baseline=0.1,
        minimum_detectable_effect=0.2,
        started_at=datetime.now(UTC),
    )


async def test_the_cart_page_offers_the_coupon_of_the_sessions_variant_with_one_exposure(
    cart_service: Any, seed: Any, cart_db: Any, test_publisher: TestPublisher, topic_reader: Any
) -> None:
    async with topic_reader(topics.EXPOSURES) as exposures, cart_service() as (_, client):
        await seed(product("p-cpn", 2500), table=rate_table())
        r = await client.post(
            "/v1/admin/coupons", json={"code": "welcome10", "kind": "percent", "value": 10}, headers=ADMIN
        )
        assert r.status_code == 201, r.text
        # Before the experiment runs nothing is offered, and no exposure is recorded.
        cart_id, token = await new_cart(client, session="sess-cpn-before")
        assert (await client.get(f"/v1/carts/{cart_id}", headers=token)).json()["offered_coupon"] is None

        await test_publisher.publish(coupon_experiment())

        async def running() -> bool:
            return await cart_db["experiments"].find_one({"_id": "exp_coupon_cart"}) is not None

        await wait_until(running, message="the cart folded the running coupon experiment")
        sessions = [f"sess-cpn-{i}" for i in range(12)]
        variant_of = {s: assign_variant("exp_coupon_cart", s, COUPON_WEIGHTS) for s in sessions}
        assert set(variant_of.values()) == {"none", "offer", "typo"}
        for s in sessions:
            offered = "WELCOME10" if variant_of[s] == "offer" else None  # a code no coupon has is not offered
            cart_id, token = await new_cart(client, session=s)
            r = await client.post(
                f"/v1/carts/{cart_id}/items", json={"product_id": "p-cpn", "quantity": 1}, headers=token
            )
            assert r.status_code in (200, 201), r.text
            assert r.json()["offered_coupon"] == offered, (s, variant_of[s])
            again = await client.get(f"/v1/carts/{cart_id}", headers=token)  # another view: no second exposure
            assert again.json()["offered_coupon"] == offered
            if offered:  # the offer is a real coupon: applying it discounts the basket
                applied = await client.put(f"/v1/carts/{cart_id}/coupon", json={"code": offered}, headers=token)
                assert applied.status_code == 200, applied.text
                assert applied.json()["totals"]["discount_total"]["amount"] == 250

        records = await exposures.wait_for(lambda r: r.event_type == ExperimentExposed.event_type, count=len(sessions))
        ids = Counter(r.headers["ce_id"] for r in records)
        assert ids == Counter({exposure_event_id("exp_coupon_cart", s): 1 for s in sessions})
        for event in exposures.events(ExperimentExposed):
            assert event.experiment_id == "exp_coupon_cart" and event.variant == variant_of[event.session_id]
