"""Abuse limits on the real routes (issue 13): cart creation per client, coupon guessing per cart and
order placement per cart answer 429 problem+json with Retry-After once the limit is reached."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.integration


def assert_limited(response: httpx.Response) -> None:
    assert response.status_code == 429, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert int(response.headers["Retry-After"]) >= 1


async def test_cart_creation_coupon_guessing_and_order_placement_are_rate_limited(cart_service: Any) -> None:
    async with cart_service(
        rate_limits_enabled=True,
        rate_limit_cart_creation="2/minute",
        rate_limit_coupon_per_cart="3/minute",
        rate_limit_order_per_cart="2/minute",
    ) as (_, client):
        created = [await client.post("/v1/carts", json={}) for _ in range(2)]
        assert [r.status_code for r in created] == [201, 201]
        assert_limited(await client.post("/v1/carts", json={}))

        first, second = (r.json() for r in created)
        guess = {"X-Cart-Token": first["cart_token"]}
        for code in ("GUESS1", "GUESS2", "GUESS3"):
            tried = await client.put(f"/v1/carts/{first['cart_id']}/coupon", json={"code": code}, headers=guess)
            assert tried.status_code != 429, tried.text
        assert_limited(await client.put(f"/v1/carts/{first['cart_id']}/coupon", json={"code": "X"}, headers=guess))
        # Another cart's attempts count apart.
        other = {"X-Cart-Token": second["cart_token"]}
        tried = await client.put(f"/v1/carts/{second['cart_id']}/coupon", json={"code": "GUESS1"}, headers=other)
        assert tried.status_code != 429

        order = {**guess, "Idempotency-Key": "rate-limit-key-1"}
        for _ in range(2):
            placed = await client.post(f"/v1/carts/{first['cart_id']}/order", headers=order)
            assert placed.status_code != 429, placed.text  # an empty cart: refused for that, not limited
        assert_limited(await client.post(f"/v1/carts/{first['cart_id']}/order", headers=order))
