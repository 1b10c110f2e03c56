"""Domain objects to and from plain documents (BSON-friendly: dates as ISO strings)."""

from __future__ import annotations

from dataclasses import asdict
from datetime import date
from typing import Any

from kasse_cart.domain.cart import Cart, CartLine, CartStatus, CheckoutDetails, IdempotentReply, ProductInfo
from kasse_cart.domain.order import CancelReason, Order, OrderStatus, Shipment, TimelineEntry
from kasse_cart.domain.promotions import Coupon, CouponKind
from kasse_cart.domain.shipping import RateTable
from kasse_contracts.events.common import TaxClass


def cart_to_doc(cart: Cart) -> dict[str, Any]:
    doc = asdict(cart)
    doc.pop("cart_id")
    doc.pop("version")
    doc["status"] = cart.status.value
    doc["item_count"] = cart.item_count  # for the abandonment query
    for line in doc["lines"]:
        line["tax_class"] = str(line["tax_class"])
    return doc


def cart_from_doc(doc: dict[str, Any]) -> Cart:
    checkout = doc.get("checkout")
    return Cart(
        cart_id=doc["_id"],
        token_hash=doc["token_hash"],
        session_id=doc["session_id"],
        currency=doc["currency"],
        created_at=doc["created_at"],
        last_activity_at=doc["last_activity_at"],
        customer_id=doc.get("customer_id"),
        email=doc.get("email"),
        lines=[_cart_line(line) for line in doc.get("lines", [])],
        coupon_code=doc.get("coupon_code"),
        status=CartStatus(doc.get("status", "open")),
        checkout=CheckoutDetails(**checkout) if checkout else None,
        order_id=doc.get("order_id"),
        abandoned_at=doc.get("abandoned_at"),
        replies=[IdempotentReply(**r) for r in doc.get("replies") or []],
        version=doc.get("_version", 0),
    )


def _cart_line(doc: dict[str, Any]) -> CartLine:
    return CartLine(**{**doc, "tax_class": TaxClass(doc.get("tax_class") or TaxClass.STANDARD)})


def order_to_doc(order: Order) -> dict[str, Any]:
    doc = asdict(order)
    doc.pop("order_id")
    doc.pop("version")
    doc["status"] = order.status.value
    doc["cancel_reason"] = order.cancel_reason.value if order.cancel_reason else None
    doc["timeline"] = [{"at": t.at, "status": t.status.value, "note": t.note} for t in order.timeline]
    if order.shipment is not None:
        shipment = asdict(order.shipment)
        promised = order.shipment.promised_delivery_date
        shipment["promised_delivery_date"] = promised.isoformat() if promised else None
        doc["shipment"] = shipment
    return doc


def order_from_doc(doc: dict[str, Any]) -> Order:
    shipment = doc.get("shipment")
    if shipment:
        promised = shipment.get("promised_delivery_date")
        shipment = Shipment(
            **{**shipment, "promised_delivery_date": date.fromisoformat(promised) if promised else None}
        )
    return Order(
        order_id=doc["_id"],
        placed_at=doc["placed_at"],
        total=doc["total"],
        currency=doc["currency"],
        cart_id=doc.get("cart_id", ""),
        session_id=doc.get("session_id", ""),
        customer_id=doc.get("customer_id"),
        email=doc.get("email", ""),
        token_hash=doc.get("token_hash", ""),
        idempotency_key=doc.get("idempotency_key", ""),
        details=doc.get("details", {}),
        status=OrderStatus(doc["status"]),
        stock_reserved_at=doc.get("stock_reserved_at"),
        stock_rejected_at=doc.get("stock_rejected_at"),
        paid_at=doc.get("paid_at"),
        payment_intent_id=doc.get("payment_intent_id"),
        payment_failed_at=doc.get("payment_failed_at"),
        shipment=shipment,
        dispatched_at=doc.get("dispatched_at"),
        delivered_at=doc.get("delivered_at"),
        refunded_amount=doc.get("refunded_amount", 0),
        fully_refunded=doc.get("fully_refunded", False),
        cancelled_at=doc.get("cancelled_at"),
        cancel_reason=CancelReason(doc["cancel_reason"]) if doc.get("cancel_reason") else None,
        cancel_detail=doc.get("cancel_detail", ""),
        cancel_announced_paid=doc.get("cancel_announced_paid", False),
        payment_due_at=doc.get("payment_due_at"),
        cancellation_refused_at=doc.get("cancellation_refused_at"),
        timeline=[TimelineEntry(t["at"], OrderStatus(t["status"]), t["note"]) for t in doc.get("timeline", [])],
        version=doc.get("_version", 0),
    )


def product_to_doc(product: ProductInfo) -> dict[str, Any]:
    doc = asdict(product)
    doc.pop("product_id")
    doc["tax_class"] = str(product.tax_class)
    return doc


def product_from_doc(doc: dict[str, Any]) -> ProductInfo:
    fields = {k: v for k, v in doc.items() if k != "_id"}
    fields["tax_class"] = TaxClass(fields.get("tax_class") or TaxClass.STANDARD)
    return ProductInfo(product_id=doc["_id"], **fields)


def rate_table_to_doc(table: RateTable) -> dict[str, Any]:
    return {
        "revision": table.revision,
        "origin_timezone": table.origin_timezone,
        "cutoff_local_time": table.cutoff_local_time,
        "holidays": [d.isoformat() for d in table.holidays],
        "methods": list(table.methods),
    }


def rate_table_from_doc(doc: dict[str, Any]) -> RateTable:
    return RateTable(
        revision=doc["revision"],
        origin_timezone=doc["origin_timezone"],
        cutoff_local_time=doc["cutoff_local_time"],
        holidays=tuple(date.fromisoformat(d) for d in doc["holidays"]),
        methods=tuple(doc["methods"]),
    )


def coupon_to_doc(coupon: Coupon) -> dict[str, Any]:
    doc = asdict(coupon)
    doc.pop("code")
    doc.pop("used_by_customer")
    doc["kind"] = coupon.kind.value
    doc["per_customer"] = {}
    doc["redemptions"] = {}
    return doc


def coupon_from_doc(doc: dict[str, Any], customer_hash: str | None) -> Coupon:
    return Coupon(
        code=doc["_id"],
        kind=CouponKind(doc["kind"]),
        value=doc["value"],
        currency=doc["currency"],
        min_subtotal=doc.get("min_subtotal", 0),
        valid_from=doc.get("valid_from"),
        valid_until=doc.get("valid_until"),
        usage_limit=doc.get("usage_limit"),
        per_customer_limit=doc.get("per_customer_limit"),
        used=doc.get("used", 0),
        used_by_customer=(doc.get("per_customer") or {}).get(customer_hash, 0) if customer_hash else 0,
    )
