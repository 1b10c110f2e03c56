"""Cart, checkout and order use cases with in-memory adapters."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from functools import partial
from typing import Any

import pytest

from kasse_cart.application.abandonment import AbandonmentJob
from kasse_cart.application.admin import Admin
from kasse_cart.application.carts import CartService
from kasse_cart.application.orders import OrderLife, OrderNotYetKnown
from kasse_cart.application.payment_deadline import PaymentDeadlineJob
from kasse_cart.domain.cart import REPLIES_KEPT, CartLimits, ProductInfo
from kasse_cart.domain.order import OrderStatus
from kasse_cart.domain.promotions import CouponKind, FreeShippingPromotion
from kasse_cart.domain.shipping import RateTable
from kasse_cart.entrypoints.schemas import cart_out, order_out
from kasse_common.envelope import encode
from kasse_common.errors import Conflict, NotFound, Unprocessable
from kasse_contracts.events import OrderPlaced
from kasse_contracts.events.common import TaxClass

from .fakes import (
    FixedPaymentLookup,
    InMemoryCarts,
    InMemoryCoupons,
    InMemoryOrders,
    InMemoryProducts,
    InMemoryRateTables,
)

pytestmark = pytest.mark.unit

ADDRESS = {"name": "Erika", "line1": "Hauptstraße 5", "line2": None, "postal_code": "10115", "city": "Berlin",
           "region": None, "country": "DE"}  # fmt: skip


@dataclass
class Clock:
    now: datetime = field(default_factory=lambda: datetime(2026, 11, 18, 9, 0, tzinfo=UTC))  # a Wednesday

    def __call__(self) -> datetime:
        return self.now


@dataclass
class World:
    clock: Clock
    carts: InMemoryCarts
    orders: InMemoryOrders
    products: InMemoryProducts
    rates: InMemoryRateTables
    coupons: InMemoryCoupons
    service: CartService
    life: OrderLife
    admin: Admin
    payments: FixedPaymentLookup

    def events(self, store: Any, event_type: str) -> list[dict[str, Any]]:
        return [json.loads(r.value) for r in store.events(f"io.kasse.cart.{event_type}.v1")]


def product(pid: str, price: int, *, stock: int = 10, active: bool = True, revision: int = 1) -> ProductInfo:
    return ProductInfo(pid, f"SKU-{pid}", f"Product {pid}", "kitchen", price, "EUR", stock, active, revision)


@pytest.fixture
async def world() -> World:
    clock = Clock()
    carts, orders, products = InMemoryCarts(), InMemoryOrders(), InMemoryProducts()
    rates, coupons, payments = InMemoryRateTables(), InMemoryCoupons(), FixedPaymentLookup("pi_secret_1")
    enc = partial(encode, service="cart")
    service = CartService(
        carts=carts,
        products=products,
        rate_tables=rates,
        coupons=coupons,
        orders=orders,
        encode=enc,
        clock=clock,
        limits=CartLimits(max_quantity_per_line=5, max_lines=3),
        free_shipping=FreeShippingPromotion(5000, "EUR"),
        currency="EUR",
    )
    for p in (product("p1", 1999), product("p2", 2500), product("off", 100, active=False)):
        await products.upsert(p)
    await rates.upsert(
        "default",
        RateTable(
            revision=1,
            origin_timezone="Europe/Berlin",
            cutoff_local_time="14:00",
            holidays=(date(2026, 11, 19),),
            methods=(
                {"method_id": "standard", "name": "Standard", "carrier": "SimPost", "rates": [
                    {"countries": ["DE"], "currency": "EUR", "free_shipping_threshold": None,
                     "price_bands": [{"min_subtotal": 0, "price": 495}], "min_business_days": 1,
                     "max_business_days": 2}]},
            ),
        ),
    )  # fmt: skip
    life = OrderLife(orders=orders, encode=enc, clock=clock, payments=payments)
    return World(clock, carts, orders, products, rates, coupons, service, life, Admin(coupons=coupons, orders=orders),
                 payments)  # fmt: skip


async def new_cart(w: World, *items: tuple[str, int]) -> tuple[str, str]:
    view, token = await w.service.create_cart("sess-1", None, None)
    for pid, qty in items:
        await w.service.add_item(view.cart.cart_id, token, pid, qty)
    return view.cart.cart_id, token


async def checkout(w: World, cart_id: str, token: str, email: str = "erika@example.com") -> Any:
    return await w.service.begin_checkout(
        cart_id, token, email=email, address=dict(ADDRESS), shipping_method_id="standard", billing_country=None
    )


async def test_the_token_is_required_and_only_its_hash_is_kept(world: World) -> None:
    view, token = await world.service.create_cart("sess-1", "cust-1", None)
    cart_id = view.cart.cart_id
    stored = world.carts.docs[cart_id]
    assert token not in json.dumps(stored, default=str)
    for wrong in (None, "", token + "x"):
        with pytest.raises(NotFound):
            await world.service.get_cart(cart_id, wrong)
    with pytest.raises(NotFound):
        await world.service.get_cart("cart_other", token)
    assert (await world.service.get_cart(cart_id, token)).cart.customer_id == "cust-1"


async def test_changes_publish_cart_updated_with_line_snapshot_and_totals(world: World) -> None:
    cart_id, token = await new_cart(world, ("p1", 2), ("p2", 1))
    await world.service.set_quantity(cart_id, token, "p1", 1)
    await world.service.remove_item(cart_id, token, "p2")
    await world.service.clear(cart_id, token)
    updates = world.events(world.carts, "CartUpdated")
    assert [(u["action"], u["quantity_delta"]) for u in updates] == [
        ("added", 2), ("added", 1), ("quantity_changed", -1), ("removed", -1), ("cleared", -1)
    ]  # fmt: skip
    assert updates[1]["subtotal"]["amount"] == 3998 + 2500 and updates[1]["line"]["product_id"] == "p2"
    assert updates[3]["items"][0]["line_total"]["amount"] == 1999
    assert updates[4]["items"] == [] and updates[4]["total"]["amount"] == 0


@pytest.mark.parametrize(
    ("pid", "qty", "reason"),
    [("p1", 0, "quantity"), ("p1", 6, "quantity"), ("zzz", 1, "unknown product"), ("off", 1, "not available"),
     ("p1", 11, "quantity")],
)  # fmt: skip
async def test_refused_additions_leave_the_cart_unchanged(world: World, pid: str, qty: int, reason: str) -> None:
    cart_id, token = await new_cart(world, ("p1", 1))
    before = dict(world.carts.docs[cart_id])
    with pytest.raises(Unprocessable, match=reason):
        await world.service.add_item(cart_id, token, pid, qty)
    assert world.carts.docs[cart_id] == before
    assert len(world.events(world.carts, "CartUpdated")) == 1


async def test_stock_and_line_limits(world: World) -> None:
    await world.products.upsert(product("p1", 1999, stock=3, revision=2))
    cart_id, token = await new_cart(world, ("p1", 3))
    with pytest.raises(Unprocessable, match="only 3"):
        await world.service.add_item(cart_id, token, "p1", 1)
    await world.service.set_quantity(cart_id, token, "p1", 2)  # fewer is always fine
    for pid in ("a", "b", "c"):
        await world.products.upsert(product(pid, 100))
    await world.service.add_item(cart_id, token, "a", 1)
    await world.service.add_item(cart_id, token, "b", 1)
    with pytest.raises(Unprocessable, match="at most 3 different"):
        await world.service.add_item(cart_id, token, "c", 1)


async def test_coupon_refusals_say_why(world: World) -> None:
    now = world.clock.now
    for code, kw in {
        "LATER": {"valid_from": now + timedelta(days=1)},
        "OLD": {"valid_until": now - timedelta(days=1)},
        "BIG": {"min_subtotal": 10000},
        "GONE": {"usage_limit": 1},
    }.items():
        await world.admin.create_coupon(code=code, kind=CouponKind.FIXED, value=500, currency="EUR",
                                        min_subtotal=kw.get("min_subtotal", 0), valid_from=kw.get("valid_from"),
                                        valid_until=kw.get("valid_until"), usage_limit=kw.get("usage_limit"),
                                        per_customer_limit=None)  # fmt: skip
    world.coupons.docs["GONE"]["used"] = 1
    cart_id, token = await new_cart(world, ("p1", 1))
    for code, reason in (("NOPE", "unknown coupon"), ("later", "not valid before"), ("OLD", "expired"),
                         ("BIG", "at least 100.00 EUR"), ("GONE", "used up"), ("bad code!", "1 to 40")):  # fmt: skip
        with pytest.raises(Unprocessable, match=reason):
            await world.service.apply_coupon(cart_id, token, code)
    assert (await world.service.get_cart(cart_id, token)).cart.coupon_code is None


async def test_totals_with_percent_coupon_and_automatic_free_shipping(world: World) -> None:
    await world.admin.create_coupon(
        code="TEN",
        kind=CouponKind.PERCENT,
        value=10,
        currency="EUR",
        min_subtotal=0,
        valid_from=None,
        valid_until=None,
        usage_limit=None,
        per_customer_limit=None,
    )
    cart_id, token = await new_cart(world, ("p2", 2))  # 5000
    view = await world.service.apply_coupon(cart_id, token, "ten")
    assert view.totals.item_discount_total == 500 and view.totals.free_shipping is False  # 4500 < 5000
    await world.service.add_item(cart_id, token, "p1", 1)  # 6999, minus 699 = 6300
    view = await checkout(world, cart_id, token)
    assert [(d.code, d.amount, d.applies_to) for d in view.totals.discounts] == [
        ("TEN", 699, "items"), (None, 495, "shipping")
    ]  # fmt: skip
    assert view.totals.shipping_total == 495 and view.totals.total == 6999 - 699
    # Wednesday 09:00 Berlin, before the cut-off, ships today; Thursday is a holiday.
    assert view.shipping is not None
    assert (view.shipping.promised_from, view.shipping.promised_to) == (date(2026, 11, 20), date(2026, 11, 23))


async def test_place_order_is_idempotent_and_one_cart_makes_one_order(world: World) -> None:
    cart_id, token = await new_cart(world, ("p1", 2))
    await checkout(world, cart_id, token)
    first = await world.service.place_order(cart_id, token, "key-1", "203.0.113.9")
    again = await world.service.place_order(cart_id, token, "key-1", "203.0.113.9")
    assert first.created and not again.created
    assert first.order.order_id == again.order.order_id and first.order_token == again.order_token
    with pytest.raises(Conflict, match="already ordered"):
        await world.service.place_order(cart_id, token, "key-2", None)
    (placed,) = world.events(world.orders, "OrderPlaced")
    assert placed["total"]["amount"] == 3998 + 495 and placed["client_ip"] == "203.0.113.9"
    assert placed["shipping"]["promised_from"] == "2026-11-20"
    # The hash of the shopper's order token (catalog checks a verified-purchase review by it), not the token.
    assert placed["order_token_sha256"] == hashlib.sha256(first.order_token.encode()).hexdigest()
    assert first.order_token not in json.dumps(placed)
    with pytest.raises(Conflict, match="can no longer change"):
        await world.service.add_item(cart_id, token, "p1", 1)
    view = await world.life.view(first.order.order_id, first.order_token)
    assert view.order.status is OrderStatus.PLACED and view.client_secret == "pi_secret_1"
    with pytest.raises(NotFound):
        await world.life.view(first.order.order_id, "guess")


async def test_the_price_paid_is_the_read_models_at_checkout_and_a_change_needs_a_new_checkout(world: World) -> None:
    cart_id, token = await new_cart(world, ("p1", 1))
    await checkout(world, cart_id, token)
    await world.products.upsert(product("p1", 2999, revision=2))  # the catalog raised it; no event seen yet
    with pytest.raises(Conflict, match="total changed"):
        await world.service.place_order(cart_id, token, "key-1", None)
    view = await checkout(world, cart_id, token)
    assert view.cart.lines[0].unit_price == 2999 and view.cart.lines[0].price_changed
    placed = await world.service.place_order(cart_id, token, "key-1", None)
    assert placed.order.total == 2999 + 495


async def test_checkout_needs_items_and_a_known_method_and_a_valid_address(world: World) -> None:
    cart_id, token = await new_cart(world)
    with pytest.raises(Unprocessable, match="empty"):
        await checkout(world, cart_id, token)
    await world.service.add_item(cart_id, token, "p1", 1)
    with pytest.raises(Unprocessable, match="postal code"):
        await world.service.begin_checkout(cart_id, token, email="e@x.de", address={**ADDRESS, "postal_code": "1A"},
                                           shipping_method_id="standard", billing_country=None)  # fmt: skip
    with pytest.raises(Unprocessable, match="does not deliver to FR"):
        await world.service.begin_checkout(cart_id, token, email="e@x.de",
                                           address={**ADDRESS, "country": "FR", "postal_code": "75001"},
                                           shipping_method_id="standard", billing_country=None)  # fmt: skip
    with pytest.raises(Unprocessable, match="unknown shipping method"):
        await world.service.begin_checkout(cart_id, token, email="e@x.de", address=ADDRESS, shipping_method_id="x",
                                           billing_country=None)  # fmt: skip
    assert world.events(world.carts, "CheckoutStarted") == []


async def test_a_coupon_limited_per_customer_is_redeemed_once_per_customer(world: World) -> None:
    await world.admin.create_coupon(
        code="ONCE",
        kind=CouponKind.FIXED,
        value=300,
        currency="EUR",
        min_subtotal=0,
        valid_from=None,
        valid_until=None,
        usage_limit=5,
        per_customer_limit=1,
    )
    placed = []
    for email in ("a@example.com", "b@example.com"):
        cart_id, token = await new_cart(world, ("p1", 1))
        await world.service.apply_coupon(cart_id, token, "ONCE")
        await checkout(world, cart_id, token, email)
        placed.append(await world.service.place_order(cart_id, token, "key-" + email, None))
    assert [p.order.total for p in placed] == [1999 - 300 + 495] * 2
    cart_id, token = await new_cart(world, ("p1", 1))
    await world.service.apply_coupon(cart_id, token, "ONCE")  # anonymous so far: cannot tell yet
    with pytest.raises(Unprocessable, match="maximum number of times"):
        await checkout(world, cart_id, token, "A@example.com")
    assert world.coupons.docs["ONCE"]["used"] == 2


async def test_a_product_change_reprices_open_carts_once_per_event(world: World) -> None:
    from kasse_cart.application.read_models import ReadModels
    from kasse_contracts.base import Money
    from kasse_contracts.events import ProductChanged, ProductChangeKind

    cart_id, token = await new_cart(world, ("p1", 2))
    event = ProductChanged(occurred_at=world.clock.now, product_id="p1", sku="SKU-p1", name="Product p1",
                           category="kitchen", price=Money(amount=1499, currency="EUR"), stock_available=9,
                           active=True, changes=[ProductChangeKind.PRICE], revision=2)  # fmt: skip
    models = ReadModels(world.service)
    await models.product_changed(event, "evt-1")
    await models.product_changed(event, "evt-1")
    line = (await world.service.get_cart(cart_id, token)).cart.lines[0]
    assert (line.unit_price, line.previous_unit_price, line.price_changed) == (1499, 1999, True)
    actions = [u["action"] for u in world.events(world.carts, "CartUpdated")]
    assert actions == ["added", "price_updated"]


async def test_order_facts_apply_once_and_cancellations_are_published_once(world: World) -> None:
    cart_id, token = await new_cart(world, ("p1", 1))
    await checkout(world, cart_id, token)
    placed = await world.service.place_order(cart_id, token, "key-1", None)
    oid = placed.order.order_id
    assert await world.life.apply(oid, "e1", lambda o: o.stock_rejected(world.clock.now, "none left"))
    assert not await world.life.apply(oid, "e1", lambda o: o.stock_rejected(world.clock.now, "none left"))
    (cancelled,) = world.events(world.orders, "OrderCancelled")
    assert cancelled["reason"] == "stock_rejected" and cancelled["was_paid"] is False
    assert cancelled["total"]["amount"] == placed.order.total
    with pytest.raises(OrderNotYetKnown):
        await world.life.apply("ord_unknown", "e2", lambda o: o.stock_reserved(world.clock.now))
    view = await world.life.view(oid, placed.order_token)
    assert view.order.status is OrderStatus.CANCELLED and view.client_secret is None  # not asked once cancelled


async def test_abandonment_reports_each_idle_cart_once_even_with_two_jobs(world: World) -> None:
    idle_id, _ = await new_cart(world, ("p1", 1))
    await new_cart(world)  # empty: never abandoned
    enc = partial(encode, service="cart")
    jobs = [AbandonmentJob(carts=world.carts, encode=enc, clock=world.clock, idle=timedelta(minutes=30))
            for _ in range(2)]  # fmt: skip
    assert [await j.run_once() for j in jobs] == [0, 0]
    world.clock.now += timedelta(minutes=31)
    assert [await j.run_once() for j in jobs] + [await j.run_once() for j in jobs] == [1, 0, 0, 0]
    (abandoned,) = world.events(world.carts, "CartAbandoned")
    assert abandoned["cart_id"] == idle_id and abandoned["item_count"] == 1


async def test_two_jobs_racing_on_the_same_cart_claim_it_once(world: World) -> None:
    await new_cart(world, ("p1", 1))
    world.clock.now += timedelta(hours=2)
    enc = partial(encode, service="cart")
    a, b = (AbandonmentJob(carts=world.carts, encode=enc, clock=world.clock, idle=timedelta(hours=1)) for _ in "ab")
    # Both read the candidate before either writes: the second write is stale and claims nothing.
    seen_by_b = await world.carts.idle_since(world.clock.now - timedelta(hours=1), 10)
    assert await a.run_once() == 1

    async def stale_candidates(cutoff: datetime, limit: int) -> list[Any]:
        return seen_by_b

    b.carts = type("Stale", (), {"idle_since": staticmethod(stale_candidates), "save": world.carts.save})()
    assert await b.run_once() == 0
    assert len(world.events(world.carts, "CartAbandoned")) == 1


async def test_a_product_withdrawn_from_sale_is_flagged_in_open_carts_without_a_cart_event(world: World) -> None:
    from kasse_cart.application.read_models import ReadModels
    from kasse_contracts.base import Money
    from kasse_contracts.events import ProductChanged, ProductChangeKind

    cart_id, token = await new_cart(world, ("p1", 2))

    def change(revision: int, active: bool, stock: int) -> ProductChanged:
        return ProductChanged(occurred_at=world.clock.now, product_id="p1", sku="SKU-p1", name="Product p1",
                              category="kitchen", price=Money(amount=1999, currency="EUR"), stock_available=stock,
                              active=active, changes=[ProductChangeKind.AVAILABILITY], revision=revision)  # fmt: skip

    models = ReadModels(world.service)
    await models.product_changed(change(2, False, 9), "evt-off")
    assert not (await world.service.get_cart(cart_id, token)).cart.lines[0].available
    with pytest.raises(Unprocessable, match="no longer available"):
        await checkout(world, cart_id, token)
    await models.product_changed(change(3, True, 1), "evt-low")  # on sale again, but 1 < 2 in the cart
    assert not (await world.service.get_cart(cart_id, token)).cart.lines[0].available
    await world.service.set_quantity(cart_id, token, "p1", 1)  # the shopper adapts
    assert (await world.service.get_cart(cart_id, token)).cart.lines[0].available
    assert [u["action"] for u in world.events(world.carts, "CartUpdated")] == ["added", "quantity_changed"]


async def test_a_place_order_retried_after_a_crash_keeps_its_own_coupon_redemption(world: World) -> None:
    await world.admin.create_coupon(
        code="LAST",
        kind=CouponKind.FIXED,
        value=300,
        currency="EUR",
        min_subtotal=0,
        valid_from=None,
        valid_until=None,
        usage_limit=1,
        per_customer_limit=None,
    )
    cart_id, token = await new_cart(world, ("p1", 1))
    await world.service.apply_coupon(cart_id, token, "LAST")
    await checkout(world, cart_id, token)
    coupon = await world.coupons.get("LAST")
    assert coupon is not None
    from kasse_cart.application.carts import order_id_for

    # The first attempt redeemed the last use, then died before storing the order.
    assert await world.coupons.redeem(coupon, order_id_for(cart_id), None)
    placed = await world.service.place_order(cart_id, token, "key-1", None)
    assert placed.created and placed.order.total == 1999 - 300 + 495
    assert world.coupons.docs["LAST"]["used"] == 1

    other_id, other_token = await new_cart(world, ("p1", 1))
    with pytest.raises(Unprocessable, match="used up"):
        await world.service.apply_coupon(other_id, other_token, "LAST")


# -- VAT on the cart, the checkout, OrderPlaced and the order view ------------------------------------
# A German, an Austrian and a US order. Worked example (hand-computed, the kit's rules): 2 x 19.99
# (standard) + 1 x 15.00 book (reduced) = 54.98; 10 % coupon = 5.49, spread 3998:1500 by largest remainder
# -> 3.99 / 1.50; shipping 4.95 split by the discounted goods 3599:1350 -> 3.60 / 1.35. Per rate, VAT on
# the rate's gross total, rounded half up.

TOTAL = 3998 + 1500 - 549 + 495
EXPECTED = {
    # country: {rate: (gross, net, vat)}
    "DE": {1900: (3959, 3327, 632), 700: (1485, 1388, 97)},
    "AT": {2000: (3959, 3299, 660), 1000: (1485, 1350, 135)},
    "US": {0: (TOTAL, TOTAL, 0)},
}


async def _order(w: World, country: str) -> tuple[Any, Any, dict[str, Any]]:
    await w.products.upsert(
        ProductInfo("book", "SKU-BOOK", "A Book", "books", 1500, "EUR", 10, True, 1, TaxClass.REDUCED)
    )
    await w.rates.upsert(
        "default",
        RateTable(
            revision=2,
            origin_timezone="Europe/Berlin",
            cutoff_local_time="14:00",
            holidays=(date(2026, 11, 19),),
            methods=(
                {"method_id": "standard", "name": "Standard", "carrier": "SimPost", "rates": [
                    {"countries": ["DE", "AT", "US"], "currency": "EUR", "free_shipping_threshold": None,
                     "price_bands": [{"min_subtotal": 0, "price": 495}], "min_business_days": 1,
                     "max_business_days": 2}]},
            ),
        ),
    )  # fmt: skip
    await w.admin.create_coupon(
        code="TEN", kind=CouponKind.PERCENT, value=10, currency="EUR", min_subtotal=0, valid_from=None,
        valid_until=None, usage_limit=None, per_customer_limit=None,
    )  # fmt: skip
    cart_id, token = await new_cart(w, ("p1", 2), ("book", 1))
    await w.service.apply_coupon(cart_id, token, "TEN")
    address = dict(ADDRESS, country=country, postal_code="10115" if country != "US" else "10001")
    if country == "AT":
        address["postal_code"] = "1010"
    checkout = await w.service.begin_checkout(
        cart_id, token, email="e@example.com", address=address, shipping_method_id="standard", billing_country=None
    )
    placed = await w.service.place_order(cart_id, token, f"key-{country}", None)
    (event,) = w.events(w.orders, "OrderPlaced")
    return checkout, placed, event


def _by_rate(vat: dict[str, Any]) -> dict[int, tuple[int, int, int]]:
    return {
        r["rate_basis_points"]: (r["gross"]["amount"], r["net"]["amount"], r["vat"]["amount"]) for r in vat["rates"]
    }


@pytest.mark.parametrize("country", ["DE", "AT", "US"])
async def test_the_right_vat_on_cart_checkout_event_and_order_view(world: World, country: str) -> None:
    checkout, placed, event = await _order(world, country)
    expected = EXPECTED[country]

    # The checkout (cart) view, as the HTTP API shows it.
    shown = json.loads(cart_out(checkout).model_dump_json())
    assert _by_rate(shown["totals"]["vat"]) == expected
    assert shown["totals"]["total"]["amount"] == TOTAL == shown["totals"]["vat"]["gross_total"]["amount"]
    assert [(li["discount"]["amount"], li["discounted_total"]["amount"]) for li in shown["lines"]] == [
        (399, 3599), (150, 1350)
    ]  # fmt: skip
    assert shown["totals"]["vat"]["export"] is (country == "US")
    assert shown["totals"]["price_note"].startswith("inkl. MwSt." if country != "US" else "steuerfreie Ausfuhr")

    # OrderPlaced carries each line's discounted amount and the breakdown, valid against the contract.
    OrderPlaced.model_validate(event)
    assert _by_rate(event["vat"]) == expected and event["vat"]["country"] == country
    assert [li["discounted_total"]["amount"] for li in event["lines"]] == [3599, 1350]
    assert [li["tax_class"] for li in event["lines"]] == ["standard", "reduced"]
    rates = [li["vat_rate_basis_points"] for li in event["lines"]]
    assert rates == {"DE": [1900, 700], "AT": [2000, 1000], "US": [0, 0]}[country]
    assert sum(r["shipping"]["amount"] for r in event["vat"]["rates"]) == 495

    # The order view.
    view = await world.life.view(placed.order.order_id, placed.order_token)
    order = json.loads(order_out(view).model_dump_json())
    assert _by_rate(order["vat"]) == expected and order["total"]["amount"] == TOTAL
    assert order["lines"][0]["discounted_total"]["amount"] == 3599


async def test_before_checkout_the_cart_shows_the_shops_german_vat(world: World) -> None:
    cart_id, token = await new_cart(world, ("p1", 1))
    view = await world.service.get_cart(cart_id, token)
    shown = json.loads(cart_out(view).model_dump_json())
    assert shown["totals"]["vat"]["country"] == "DE"
    assert _by_rate(shown["totals"]["vat"]) == {1900: (1999, 1680, 319)}
    assert shown["totals"]["price_note"] == "inkl. MwSt., zzgl. Versand"
    (update,) = world.events(world.carts, "CartUpdated")
    assert update["items"][0]["vat_rate_basis_points"] == 1900


async def test_a_tax_class_change_in_the_catalog_reaches_the_price_at_checkout(world: World) -> None:
    cart_id, token = await new_cart(world, ("p1", 1))
    p1 = await world.products.get("p1")
    assert p1 is not None
    await world.products.upsert(replace(p1, revision=2, tax_class=TaxClass.REDUCED))
    view = await world.service.begin_checkout(
        cart_id, token, email="e@example.com", address=dict(ADDRESS), shipping_method_id="standard",
        billing_country=None,
    )  # fmt: skip
    assert [r.basis_points for r in view.vat.rates] == [700]


async def test_the_invoice_is_downloaded_with_the_order_token_only(world: World) -> None:
    cart_id, token = await new_cart(world, ("p1", 1))
    await checkout(world, cart_id, token)
    placed = await world.service.place_order(cart_id, token, "key-inv", None)
    order_id = placed.order.order_id
    world.payments.pdfs[order_id] = {"RE-2026-000001": b"%PDF-1.4 invoice"}
    listed = await world.life.invoices(order_id, placed.order_token)
    assert [d["number"] for d in listed] == ["RE-2026-000001"]
    assert await world.life.invoice_pdf(order_id, placed.order_token, "RE-2026-000001") == b"%PDF-1.4 invoice"
    for wrong in (None, "guess"):
        with pytest.raises(NotFound):
            await world.life.invoice_pdf(order_id, wrong, "RE-2026-000001")
    with pytest.raises(NotFound, match="no invoice"):
        await world.life.invoice_pdf(order_id, placed.order_token, "RE-2026-000002")


def deadline_job(world: World, payments: FixedPaymentLookup | None = None) -> PaymentDeadlineJob:
    return PaymentDeadlineJob(
        orders=world.orders,
        life=world.life,
        payments=payments or FixedPaymentLookup(status="requires_action"),
        clock=world.clock,
        review_timeout=timedelta(hours=24),
        recheck_after=timedelta(minutes=1),
    )


async def placed_order(world: World, key: str) -> Any:
    cart_id, token = await new_cart(world, ("p1", 1))
    await checkout(world, cart_id, token)
    return await world.service.place_order(cart_id, token, key, None)


async def test_an_unpaid_order_expires_once_at_its_deadline_even_with_two_jobs(world: World) -> None:
    unpaid = await placed_order(world, "key-unpaid")
    paid = await placed_order(world, "key-paid")
    await world.life.apply(paid.order.order_id, "cap", lambda o: o.payment_captured(world.clock.now, "pi_1"))
    assert unpaid.order.payment_due_at == world.clock.now + timedelta(minutes=30)  # the default
    jobs = [deadline_job(world), deadline_job(world)]
    world.clock.now += timedelta(minutes=29)
    assert [await j.run_once() for j in jobs] == [0, 0]
    world.clock.now += timedelta(minutes=2)
    assert [await j.run_once() for j in jobs] == [1, 0]
    (cancelled,) = world.events(world.orders, "OrderCancelled")
    assert (cancelled["order_id"], cancelled["reason"], cancelled["was_paid"]) == (
        unpaid.order.order_id,
        "payment_timeout",
        False,
    )
    view = await world.life.view(unpaid.order.order_id, unpaid.order_token)
    assert view.order.status is OrderStatus.CANCELLED

    # Stripe's success arrives after the expiry: the order stays cancelled, and payment is told (was_paid) once.
    oid = unpaid.order.order_id
    await world.life.apply(oid, "late", lambda o: o.payment_captured(world.clock.now, "pi_2"))
    await world.life.apply(oid, "refund", lambda o: o.payment_refunded(world.clock.now, unpaid.order.total, True))
    again = world.events(world.orders, "OrderCancelled")
    assert [(c["reason"], c["was_paid"]) for c in again] == [("payment_timeout", False), ("payment_timeout", True)]
    after = await world.life.view(oid, unpaid.order_token)
    assert after.order.status is OrderStatus.CANCELLED and after.order.refunded_amount == unpaid.order.total


async def test_a_backlog_of_overdue_orders_expires_in_small_rounds(world: World) -> None:
    """A round reads all its candidates before expiring the first: with a slow store a round of 100 read for
    minutes, hit the round time limit and started over. Small rounds expire steadily, the next takes the rest."""
    for n in range(25):
        await placed_order(world, f"key-{n}")
    world.clock.now += timedelta(minutes=31)
    job = deadline_job(world)
    assert [await job.run_once() for _ in range(3)] == [20, 5, 0]
    assert len(world.events(world.orders, "OrderCancelled")) == 25


async def test_a_payment_held_for_review_moves_the_deadline_to_the_reviews(world: World) -> None:
    held = await placed_order(world, "key-held")
    job = deadline_job(world, FixedPaymentLookup(status="held_for_review"))
    world.clock.now += timedelta(minutes=31)
    assert await job.run_once() == 0
    order = await world.orders.get(held.order.order_id)
    assert order is not None and order.payment_due_at == order.placed_at + timedelta(hours=24, minutes=1)
    assert world.events(world.orders, "OrderCancelled") == []
    # Payment rejects a review nobody decided: the order is cancelled as not paid in time.
    await world.life.apply(
        held.order.order_id, "f", lambda o: o.payment_failed(world.clock.now, "review_timeout", "not decided")
    )
    (cancelled,) = world.events(world.orders, "OrderCancelled")
    assert cancelled["reason"] == "payment_timeout"


async def test_a_cancellation_shipping_refused_leaves_the_order_shipped(world: World) -> None:
    placed = await placed_order(world, "key-ship")
    oid = placed.order.order_id
    await world.life.apply(oid, "cap", lambda o: o.payment_captured(world.clock.now, "pi_1"))
    await world.life.cancel_by_customer(oid, placed.order_token)
    await world.life.apply(oid, "refused", lambda o: o.cancellation_refused(world.clock.now, "already_dispatched"))
    view = await world.life.view(oid, placed.order_token)
    assert view.order.status is OrderStatus.SHIPPED and not view.order.is_cancelled
    with pytest.raises(Conflict):
        await world.life.cancel_by_customer(oid, placed.order_token)  # return it instead


async def test_a_cart_keeps_the_answers_of_its_last_keyed_adds_only(world: World) -> None:
    view, token = await world.service.create_cart("s-1", None, None)
    cart_id = view.cart.cart_id

    def render(v: Any) -> str:
        return cart_out(v).model_dump_json()

    first = await world.service.add_item_once(cart_id, token, "p1", 1, "key-first", render)
    assert not first.replayed
    for i in range(REPLIES_KEPT - 1):
        replied = await world.service.add_item_once(cart_id, token, "p2", 1, f"key-{i}", render)
        assert not replied.replayed
        await world.service.remove_item(cart_id, token, "p2")
    again = await world.service.add_item_once(cart_id, token, "p1", 1, "key-first", render)
    assert again.replayed and again.answer == first.answer
    with pytest.raises(Unprocessable, match="Idempotency-Key"):
        await world.service.add_item_once(cart_id, token, "p2", 1, "key-first", render)
    # One more key pushes the first out: its repeat is a new add (the window is documented).
    await world.service.add_item_once(cart_id, token, "p2", 1, "key-last", render)
    late = await world.service.add_item_once(cart_id, token, "p1", 1, "key-first", render)
    assert not late.replayed
    cart = (await world.service.get_cart(cart_id, token)).cart
    assert {line.product_id: line.quantity for line in cart.lines} == {"p1": 2, "p2": 1}
    assert len(cart.replies) == REPLIES_KEPT
