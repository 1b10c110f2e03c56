"""Customer identity (issue 13): a customer id comes only from a verified signed token.

A client-chosen `X-Customer-Id` used to name the cart's customer, so a fresh id reset a coupon's
per-customer limit. Now the header names no one (a guest, keyed on the normalised e-mail), and a
customer is proven by an OIDC JWT checked against the configured key.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from kasse_testkit.identity import TestIdentityProvider

from .conftest import ADDRESS, ADMIN, product, rate_table

pytestmark = pytest.mark.integration


async def place_with_coupon(client: Any, email: str, key: str, headers: dict[str, str] | None = None) -> Any:
    r = await client.post("/v1/carts", json={}, headers=headers or {})
    assert r.status_code == 201, r.text
    cart_id, cart_token = r.json()["cart_id"], {"X-Cart-Token": r.json()["cart_token"]}
    await client.post(f"/v1/carts/{cart_id}/items", json={"product_id": "p1", "quantity": 1}, headers=cart_token)
    assert (
        await client.put(f"/v1/carts/{cart_id}/coupon", json={"code": "ONCEEACH"}, headers=cart_token)
    ).status_code == 200
    r = await client.post(
        f"/v1/carts/{cart_id}/checkout",
        json={"email": email, "shipping_address": ADDRESS, "shipping_method_id": "standard"},
        headers=cart_token,
    )
    if r.status_code != 200:
        return r  # refused at checkout
    return await client.post(f"/v1/carts/{cart_id}/order", headers={**cart_token, "Idempotency-Key": key})


async def test_a_client_chosen_customer_id_neither_names_a_customer_nor_resets_a_coupon_limit(
    cart_service: Any, seed: Any
) -> None:
    async with cart_service() as (_, client):
        await seed(product("p1", 1999), table=rate_table())
        coupon = {"code": "ONCEEACH", "kind": "fixed", "value": 500, "per_customer_limit": 1}
        assert (await client.post("/v1/admin/coupons", json=coupon, headers=ADMIN)).status_code == 201
        first = await place_with_coupon(client, "erika@example.com", "first-order-1")
        assert first.status_code == 201, first.text
        # the same shopper again, claiming to be someone new and tagging the address
        again = await place_with_coupon(
            client, "Erika+again@Example.com", "second-order-1", headers={"X-Customer-Id": "someone-new"}
        )
        assert again.status_code == 422 and "by this customer" in again.json()["detail"], again.text
        # the header does not name the cart's customer
        r = await client.post("/v1/carts", json={}, headers={"X-Customer-Id": "cust-42"})
        assert r.json()["cart"]["customer_id"] is None
        # nor does the body, without a token that proves it
        r = await client.post("/v1/carts", json={"customer_id": "cust-42"})
        assert r.status_code == 403 and r.headers["content-type"] == "application/problem+json"


async def test_a_verified_token_names_the_customer_and_a_forged_one_is_refused(cart_service: Any) -> None:
    idp, forger = TestIdentityProvider(), TestIdentityProvider()
    async with cart_service(identity_public_key=idp.public_pem, identity_issuer=idp.issuer) as (_, client):
        proven = idp.bearer("cust-7")
        r = await client.post("/v1/carts", json={}, headers=proven)
        assert r.status_code == 201 and r.json()["cart"]["customer_id"] == "cust-7"
        r = await client.post("/v1/carts", json={"customer_id": "cust-7"}, headers=proven)
        assert r.status_code == 201, r.text
        refused = [
            forger.bearer("cust-7"),  # signed by someone else
            idp.bearer("cust-7", exp=int(time.time()) - 10),  # expired
            idp.bearer("cust-7", iss="https://evil.example"),  # another issuer
            {"Authorization": "Bearer not-a-jwt"},
        ]
        for headers in refused:
            r = await client.post("/v1/carts", json={}, headers=headers)
            assert r.status_code == 401 and r.headers["content-type"] == "application/problem+json", r.text
        r = await client.post("/v1/carts", json={"customer_id": "cust-8"}, headers=proven)
        assert r.status_code == 403
