"""Builders of valid contract events for tests, with overridable fields."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

from kasse_contracts.base import Money
from kasse_contracts.events import (
    Address,
    LineItem,
    OrderPlaced,
    ShippingSelection,
)


def now() -> datetime:
    return datetime.now(UTC)


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


def eur(amount: int) -> Money:
    return Money(amount=amount, currency="EUR")


def line_item(product_id: str = "prod_1", quantity: int = 1, unit_price: int = 1999, **kw: Any) -> LineItem:
    values: dict[str, Any] = {
        "product_id": product_id,
        "sku": f"SKU-{product_id}",
        "name": f"Product {product_id}",
        "category": "kitchen",
        "quantity": quantity,
        "unit_price": eur(unit_price),
        "line_total": eur(unit_price * quantity),
    }
    values.update(kw)
    return LineItem(**values)


def address(**kw: Any) -> Address:
    values: dict[str, Any] = {
        "name": "Erika Mustermann",
        "line1": "Hauptstraße 5",
        "postal_code": "10115",
        "city": "Berlin",
        "country": "DE",
    }
    values.update(kw)
    return Address(**values)


def order_placed(order_id: str | None = None, lines: list[LineItem] | None = None, **kw: Any) -> OrderPlaced:
    lines = lines or [line_item()]
    subtotal = sum(line.line_total.amount for line in lines)
    shipping = 495
    today = date.today()
    values: dict[str, Any] = {
        "occurred_at": now(),
        "order_id": order_id or new_id("ord"),
        "cart_id": new_id("cart"),
        "session_id": new_id("sess"),
        "email": "erika@example.com",
        "lines": lines,
        "shipping": ShippingSelection(
            method_id="standard",
            name="Standard",
            carrier="SimPost",
            price=eur(shipping),
            promised_from=today + timedelta(days=2),
            promised_to=today + timedelta(days=4),
        ),
        "shipping_address": address(),
        "subtotal": eur(subtotal),
        "discount_total": eur(0),
        "shipping_total": eur(shipping),
        "total": eur(subtotal + shipping),
    }
    values.update(kw)
    return OrderPlaced(**values)
