"""The cart honours experiments on the free-shipping threshold and on the coupon offered on the cart
page: each session gets its variant (the kit's assignment rule, no call to metrics), and its exposure
is recorded once."""

from __future__ import annotations

from typing import Any

import pytest

from kasse_contracts import topics
from kasse_contracts.events import ExperimentChanged, ExperimentParameter, ExperimentStatus
from kasse_testkit import TestPublisher, wait_until
from kasse_testkit.experiments import experiment_changed, exposed_once_each, sessions_by_variant

from .conftest import ADMIN, new_cart, product, rate_table

pytestmark = pytest.mark.integration

WEIGHTS = [("control", 50), ("low", 50)]


def experiment(revision: int, status: ExperimentStatus) -> ExperimentChanged:
    return experiment_changed(
        "exp_fs_cart",
        ExperimentParameter.FREE_SHIPPING_THRESHOLD,
        [(n, w, "5000" if n == "control" else "2000") for n, w in WEIGHTS],
        revision=revision,
        name="free shipping from 20 EUR",
        status=status,
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

        variant_of = sessions_by_variant("exp_fs_cart", WEIGHTS, "sess-exp", 12)
        # 25.00 EUR of items: free shipping exactly in the `low` variant (from 20 EUR; control from 50 EUR).
        for s in variant_of:
            cart_id, token = await new_cart(client, session=s)
            r = await client.post(
                f"/v1/carts/{cart_id}/items", json={"product_id": "p-exp", "quantity": 1}, headers=token
            )
            assert r.status_code in (200, 201), r.text
            assert r.json()["totals"]["free_shipping"] is (variant_of[s] == "low"), (s, variant_of[s])
            again = await client.get(f"/v1/carts/{cart_id}", headers=token)  # another view: no second exposure
            assert again.json()["totals"]["free_shipping"] is (variant_of[s] == "low")

        await exposed_once_each(exposures, "exp_fs_cart", variant_of)


COUPON_WEIGHTS = [("none", 1), ("offer", 1), ("typo", 1)]
COUPON_VALUES = {"none": "", "offer": "welcome10", "typo": "NO-SUCH-CODE"}


def coupon_experiment() -> ExperimentChanged:
    return experiment_changed(
        "exp_coupon_cart",
        ExperimentParameter.CART_COUPON,
        [(n, w, COUPON_VALUES[n]) for n, w in COUPON_WEIGHTS],
        name="offer 10 % on the cart page",
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
        variant_of = sessions_by_variant("exp_coupon_cart", COUPON_WEIGHTS, "sess-cpn", 12)
        for s in variant_of:
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

        await exposed_once_each(exposures, "exp_coupon_cart", variant_of)
