"""The HTTP API is documented: paths, token headers, problem responses (no infrastructure needed)."""

from __future__ import annotations

import pytest

from kasse_cart.main import create_app
from kasse_cart.settings import CartSettings

pytestmark = pytest.mark.unit


def test_the_openapi_document_lists_the_cart_api_with_its_errors() -> None:
    spec = create_app(CartSettings(profile="development", payment_base_url=None)).openapi()
    paths = spec["paths"]
    expected = {
        ("/v1/carts", "post"),
        ("/v1/carts/{cart_id}", "get"),
        ("/v1/carts/{cart_id}/items", "post"),
        ("/v1/carts/{cart_id}/items", "delete"),
        ("/v1/carts/{cart_id}/items/{product_id}", "put"),
        ("/v1/carts/{cart_id}/items/{product_id}", "delete"),
        ("/v1/carts/{cart_id}/coupon", "put"),
        ("/v1/carts/{cart_id}/coupon", "delete"),
        ("/v1/carts/{cart_id}/shipping-options", "get"),
        ("/v1/carts/{cart_id}/checkout", "post"),
        ("/v1/carts/{cart_id}/order", "post"),
        ("/v1/orders/{order_id}", "get"),
        ("/v1/orders/{order_id}/cancel", "post"),
        ("/v1/admin/orders", "get"),
        ("/v1/admin/orders/{order_id}", "get"),
        ("/v1/admin/coupons", "post"),
        ("/v1/admin/coupons", "get"),
    }
    documented = {(path, method) for path, ops in paths.items() for method in ops}
    assert expected <= documented
    for path, method in expected:
        op = paths[path][method]
        assert op.get("summary"), f"{method} {path} has no summary"
        assert "200" in op["responses"] or "201" in op["responses"]
    place = paths["/v1/carts/{cart_id}/order"]["post"]
    headers = {p["name"] for p in place["parameters"] if p["in"] == "header"}
    assert {"Idempotency-Key", "X-Cart-Token"} <= headers
    assert {"404", "409", "422"} <= set(place["responses"])
    assert {"401", "403"} <= set(paths["/v1/admin/orders"]["get"]["responses"])
    assert "CartOut" in spec["components"]["schemas"] and "Problem" in spec["components"]["schemas"]


def test_the_add_items_idempotency_key_is_published_as_an_optional_string_of_8_to_200_characters() -> None:
    """A client generated from the document must know a short key is refused (the fuzzer sent one and got 422)."""
    spec = create_app(CartSettings(profile="development", payment_base_url=None)).openapi()
    params = spec["paths"]["/v1/carts/{cart_id}/items"]["post"]["parameters"]
    key = next(p for p in params if p["in"] == "header" and p["name"] == "Idempotency-Key")
    assert key.get("required", False) is False
    assert key["schema"]["type"] == "string"
    assert (key["schema"]["minLength"], key["schema"]["maxLength"]) == (8, 200)
