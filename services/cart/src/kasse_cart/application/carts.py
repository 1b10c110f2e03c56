"""Cart use cases: create, change, coupons, checkout and placing the order.

Every change is load → domain → save together with the CartUpdated it caused (outbox). A save that
finds the cart changed meanwhile is retried from a fresh load, so concurrent requests never lose an
update; a refused request raises before anything is written, leaving the cart as it was.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from typing import Any

from kasse_cart.application.ports import (
    CartRepository,
    Clock,
    CouponRepository,
    Encoder,
    ExperimentAssigner,
    OrderRepository,
    ProductReadModel,
    RateTableReadModel,
)
from kasse_cart.domain.cart import (
    Cart,
    CartLimits,
    CartLine,
    CartStatus,
    CheckoutDetails,
    hash_token,
    request_digest,
)
from kasse_cart.domain.order import Order, OrderStatus, TimelineEntry
from kasse_cart.domain.promotions import Coupon, FreeShippingPromotion, Totals, compute_totals, normalise_code
from kasse_cart.domain.shipping import ShippingQuote, validate_address
from kasse_common.envelope import derived_event_id
from kasse_common.errors import ConcurrencyError, Conflict, NotFound, Unprocessable
from kasse_common.money.basket import BasketLine, PricedBasket, PricedLine
from kasse_common.money.vat import Breakdown, default_vat_table
from kasse_contracts.base import Money
from kasse_contracts.events import (
    Address,
    CartAction,
    CartUpdated,
    CheckoutStarted,
    DiscountLine,
    ExperimentParameter,
    LineItem,
    OrderPlaced,
    ShippingSelection,
)
from kasse_contracts.events.common import TaxClass, VatBreakdown, VatRateLine

SAVE_ATTEMPTS = 5


@dataclass(frozen=True)
class CartView:
    cart: Cart
    totals: Totals
    shipping: ShippingQuote | None
    basket: PricedBasket  # the totals per line (discount shares) and per VAT rate
    offered_coupon: str | None = None  # the code the cart page offers this session (experiment on cart_coupon)

    @property
    def vat(self) -> Breakdown:
        return self.basket.vat


def vat_country(cart: Cart) -> str:
    """Whose VAT the cart shows: the delivery country once checkout began, else the shop's (DE)."""
    if cart.checkout is not None:
        return str(cart.checkout.address["country"])
    return default_vat_table().origin_country


def price_cart(cart: Cart, totals: Totals, on: date) -> PricedBasket:
    lines = [BasketLine(line.line_total, TaxClass(line.tax_class)) for line in cart.lines]
    return totals.priced(lines, vat_country(cart), on)


@dataclass(frozen=True)
class Replied:
    answer: str  # as first sent (JSON text)
    replayed: bool  # True: the answer to an earlier request with the same Idempotency-Key


@dataclass(frozen=True)
class PlacedOrder:
    order: Order
    order_token: str
    created: bool  # False: an earlier request with the same Idempotency-Key created it


def order_id_for(cart_id: str) -> str:
    """One cart yields at most one order: the id is derived, so racing requests meet on it."""
    return "ord_" + uuid.uuid5(uuid.NAMESPACE_URL, f"kasse:cart:{cart_id}:order").hex


def order_token_for(cart_token: str, order_id: str) -> str:
    """Derived from the cart token, so a retried place-order can hand the same token out again
    without the service ever storing it (only its hash is kept)."""
    digest = hmac.new(cart_token.encode(), f"order:{order_id}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def customer_key(customer_id: str | None, email: str | None) -> str | None:
    """Who a per-customer coupon limit counts: the proven customer id (from a verified token, never a
    header), else the normalised e-mail address."""
    if customer_id:
        return f"id:{customer_id}"
    if email:
        return f"email:{normalised_email(email)}"
    return None


def normalised_email(email: str) -> str:
    """One mailbox, one key: case and a `+tag` in the local part do not make a new customer."""
    local, _, domain = email.strip().lower().rpartition("@")
    if not local:
        return email.strip().lower()
    return f"{local.split('+', 1)[0] or local}@{domain}"


class CartService:
    def __init__(
        self,
        *,
        carts: CartRepository,
        products: ProductReadModel,
        rate_tables: RateTableReadModel,
        coupons: CouponRepository,
        orders: OrderRepository,
        encode: Encoder,
        clock: Clock,
        limits: CartLimits,
        free_shipping: FreeShippingPromotion | None,
        currency: str,
        payment_timeout: timedelta = timedelta(minutes=30),
        experiments: ExperimentAssigner | None = None,
    ) -> None:
        self.payment_timeout = payment_timeout
        self.carts = carts
        self.products = products
        self.rate_tables = rate_tables
        self.coupons = coupons
        self.orders = orders
        self.encode = encode
        self.clock = clock
        self.limits = limits
        self.free_shipping = free_shipping
        self.currency = currency
        self.experiments = experiments

    # -- carts ------------------------------------------------------------------------------------
    async def create_cart(self, session_id: str, customer_id: str | None, email: str | None) -> tuple[CartView, str]:
        now = self.clock()
        token, token_hash = Cart.new_token()
        cart = Cart(
            cart_id="cart_" + uuid.uuid4().hex,
            token_hash=token_hash,
            session_id=session_id,
            currency=self.currency,
            created_at=now,
            last_activity_at=now,
            customer_id=customer_id,
            email=email,
        )
        await self.carts.add(cart, [])
        return await self.view(cart), token

    async def get_cart(self, cart_id: str, token: str | None) -> CartView:
        return await self.view(await self._authorised(cart_id, token))

    async def add_item(self, cart_id: str, token: str | None, product_id: str, quantity: int) -> CartView:
        product = await self.products.get(product_id)

        def change(cart: Cart, now: datetime) -> tuple[CartAction, CartLine | None, int]:
            line, delta = cart.add(product, quantity, self.limits, now)
            return CartAction.ADDED, line, delta

        return await self._change(cart_id, token, change)

    async def add_item_once(
        self,
        cart_id: str,
        token: str | None,
        product_id: str,
        quantity: int,
        idempotency_key: str,
        render: Callable[[CartView], str],
    ) -> Replied:
        """`add_item` for a client that retries: the first answer to the key (rendered by `render`) is stored
        in the cart's write and replayed to a repeat, which adds nothing; the key with another body is refused."""
        product = await self.products.get(product_id)
        request = request_digest("add_item", product_id, quantity)
        for _ in range(SAVE_ATTEMPTS):
            now = self.clock()
            cart = await self._authorised(cart_id, token)
            earlier = cart.reply_for(idempotency_key, request)
            if earlier is not None:
                return Replied(earlier, replayed=True)
            line, delta = cart.add(product, quantity, self.limits, now)
            view = await self.view(cart)
            answer = render(view)
            cart.remember_reply(idempotency_key, request, answer)
            event = self.cart_updated_event(view, CartAction.ADDED, line, delta, now)
            try:
                await self.carts.save(cart, [self.encode(event)])
            except ConcurrencyError:
                continue
            return Replied(answer, replayed=False)
        raise Conflict("the cart changed concurrently; try again")

    async def set_quantity(self, cart_id: str, token: str | None, product_id: str, quantity: int) -> CartView:
        product = await self.products.get(product_id)

        def change(cart: Cart, now: datetime) -> tuple[CartAction, CartLine | None, int]:
            line, delta = cart.set_quantity(product_id, quantity, product, self.limits, now)
            return CartAction.QUANTITY_CHANGED, line, delta

        return await self._change(cart_id, token, change)

    async def remove_item(self, cart_id: str, token: str | None, product_id: str) -> CartView:
        def change(cart: Cart, now: datetime) -> tuple[CartAction, CartLine | None, int]:
            line = cart.remove(product_id, now)
            return CartAction.REMOVED, line, -line.quantity

        return await self._change(cart_id, token, change)

    async def clear(self, cart_id: str, token: str | None) -> CartView:
        def change(cart: Cart, now: datetime) -> tuple[CartAction, CartLine | None, int]:
            removed = cart.clear(now)
            return CartAction.CLEARED, None, -removed

        return await self._change(cart_id, token, change)

    async def apply_coupon(self, cart_id: str, token: str | None, raw_code: str) -> CartView:
        code = normalise_code(raw_code)
        now = self.clock()
        cart = await self._authorised(cart_id, token)
        if cart.coupon_code == code:
            return await self.view(cart)
        coupon = await self.coupons.get(code, customer_key(cart.customer_id, cart.email))
        if coupon is None:
            raise Unprocessable(f"unknown coupon code {code}", reason="unknown_code")
        refusal = coupon.refusal(cart.subtotal, cart.currency, now)
        if refusal is not None:
            raise Unprocessable(refusal, reason="coupon_not_applicable")

        def change(cart: Cart, now: datetime) -> tuple[CartAction, CartLine | None, int]:
            cart.set_coupon(code, now)
            return CartAction.COUPON_APPLIED, None, 0

        return await self._change(cart_id, token, change)

    async def remove_coupon(self, cart_id: str, token: str | None) -> CartView:
        def change(cart: Cart, now: datetime) -> tuple[CartAction, CartLine | None, int]:
            if cart.coupon_code is None:
                raise Unprocessable("the cart has no coupon")
            cart.set_coupon(None, now)
            return CartAction.COUPON_REMOVED, None, 0

        return await self._change(cart_id, token, change)

    # -- checkout ---------------------------------------------------------------------------------
    async def shipping_options(self, cart_id: str, token: str | None, country: str) -> list[ShippingQuote]:
        cart = await self._authorised(cart_id, token)
        table = await self.rate_tables.current()
        if table is None:
            return []
        totals = await self._totals(cart, shipping_price=None, rate_free_threshold=None)
        return table.options(country, cart.currency, cart.subtotal - totals.item_discount_total, self.clock())

    async def begin_checkout(
        self,
        cart_id: str,
        token: str | None,
        *,
        email: str,
        address: dict[str, Any],
        shipping_method_id: str,
        billing_country: str | None,
    ) -> CartView:
        validate_address(address)
        for _ in range(SAVE_ATTEMPTS):
            now = self.clock()
            cart = await self._authorised(cart_id, token)
            if cart.status is not CartStatus.OPEN:
                raise Conflict(f"cart {cart_id} has been ordered already", order_id=cart.order_id)
            if not cart.lines:
                raise Unprocessable("the cart is empty")
            await self._refresh_prices(cart)
            cart.email = email  # the per-customer coupon limit counts this shopper from now on
            quote, totals = await self._quote(cart, address["country"], shipping_method_id, now)
            cart.checkout = CheckoutDetails(
                email=email,
                address=address,
                shipping_method_id=shipping_method_id,
                billing_country=billing_country,
                quoted_total=totals.total,
                started_at=now,
            )
            cart.last_activity_at = now
            basket = price_cart(cart, totals, now.date())
            event = CheckoutStarted(
                occurred_at=now,
                session_id=cart.session_id,
                customer_id=cart.customer_id,
                cart_id=cart.cart_id,
                items=[_line_item(line, cart.currency, p) for line, p in zip(cart.lines, basket.lines, strict=True)],
                coupon_codes=[cart.coupon_code] if cart.coupon_code else [],
                subtotal=_money(totals.subtotal, cart.currency),
                total=_money(totals.total, cart.currency),
            )
            try:
                await self.carts.save(cart, [self.encode(event)])
            except ConcurrencyError:
                continue
            return CartView(cart, totals, quote, basket)
        raise Conflict("the cart changed while checking out; try again")

    async def place_order(
        self, cart_id: str, token: str | None, idempotency_key: str, client_ip: str | None
    ) -> PlacedOrder:
        cart = await self._authorised(cart_id, token)
        assert token is not None  # _authorised refused a missing token
        order_id = order_id_for(cart.cart_id)
        order_token = order_token_for(token, order_id)
        existing = await self.orders.get(order_id)
        if existing is not None:
            await self._mark_ordered(cart_id, order_id)
            return self._same_order(existing, idempotency_key, order_token)
        if not cart.lines:
            raise Unprocessable("the cart is empty")
        if cart.checkout is None:
            raise Conflict("begin checkout first (the cart changed since, or checkout was never started)")
        checkout = cart.checkout
        now = self.clock()
        await self._refresh_prices(cart)
        # Usage limits are enforced by the atomic redemption below, which also recognises this order's
        # own earlier redemption (a retry after a crash); counting them here would refuse that retry.
        quote, totals = await self._quote(
            cart, str(checkout.address["country"]), checkout.shipping_method_id, now, usage_checked_later=True
        )
        if totals.total != checkout.quoted_total:
            raise Conflict(
                "the total changed since checkout began; review the cart and begin checkout again",
                quoted_total=checkout.quoted_total,
                current_total=totals.total,
            )
        coupon = await self._coupon(cart, ignore_usage=True)
        buyer = customer_key(cart.customer_id, checkout.email)
        if coupon is not None and totals.item_discount_total > 0:
            if not await self.coupons.redeem(coupon, order_id, buyer):
                raise Conflict(f"coupon {coupon.code} has been used up; remove it to continue")
        basket = price_cart(cart, totals, now.date())
        # The token's hash rides along (never the token): catalog checks a verified-purchase review by it.
        event = self._order_placed(cart, checkout, quote, totals, basket, order_id, client_ip, now).model_copy(
            update={"order_token_sha256": hash_token(order_token)}
        )
        order = Order(
            order_id=order_id,
            placed_at=now,
            total=totals.total,
            currency=cart.currency,
            cart_id=cart.cart_id,
            session_id=cart.session_id,
            customer_id=cart.customer_id,
            email=checkout.email,
            token_hash=hash_token(order_token),
            idempotency_key=idempotency_key,
            details=event.model_dump(mode="json", exclude={"occurred_at"}),
            timeline=[TimelineEntry(now, OrderStatus.PLACED, "order placed")],
            payment_due_at=now + self.payment_timeout,
        )
        # The event id is derived from the order: however often this runs, one OrderPlaced.
        record = self.encode(event, event_id=derived_event_id(order_id, "placed"))
        if not await self.orders.add(order, [record]):
            raced = await self.orders.get(order_id)
            if raced is None:  # pragma: no cover - an insert that failed for another reason
                raise Conflict("the order could not be stored; try again")
            await self._mark_ordered(cart_id, order_id)
            return self._same_order(raced, idempotency_key, order_token)
        await self._mark_ordered(cart_id, order_id)
        return PlacedOrder(order, order_token, created=True)

    # -- views ------------------------------------------------------------------------------------
    async def view(self, cart: Cart) -> CartView:
        quote = None
        shipping_price = None
        rate_free = None
        if cart.checkout is not None:
            table = await self.rate_tables.current()
            if table is not None:
                base = await self._totals(cart, shipping_price=None, rate_free_threshold=None)
                try:
                    quote = table.quote(
                        cart.checkout.shipping_method_id,
                        str(cart.checkout.address["country"]),
                        cart.currency,
                        cart.subtotal - base.item_discount_total,
                        cart.checkout.started_at,
                    )
                    shipping_price, rate_free = quote.price, quote.free_shipping_threshold
                except Unprocessable:
                    quote = None  # the method was withdrawn since: checkout must be begun again
        totals = await self._totals(cart, shipping_price=shipping_price, rate_free_threshold=rate_free)
        offered = await self._offered_coupon(cart)
        return CartView(cart, totals, quote, price_cart(cart, totals, self.clock().date()), offered)

    # -- internals --------------------------------------------------------------------------------
    async def _authorised(self, cart_id: str, token: str | None) -> Cart:
        cart = await self.carts.get(cart_id)
        # One answer for "no such cart" and "wrong token": a probe learns nothing.
        if cart is None or not cart.token_matches(token):
            raise NotFound("no cart with this id and token")
        return cart

    async def _change(
        self,
        cart_id: str,
        token: str | None,
        change: Callable[[Cart, datetime], tuple[CartAction, CartLine | None, int]],
    ) -> CartView:
        for _ in range(SAVE_ATTEMPTS):
            now = self.clock()
            cart = await self._authorised(cart_id, token)
            action, line, delta = change(cart, now)
            view = await self.view(cart)
            event = self.cart_updated_event(view, action, line, delta, now)
            try:
                await self.carts.save(cart, [self.encode(event)])
            except ConcurrencyError:
                continue
            return view
        raise Conflict("the cart changed concurrently; try again")

    async def _coupon(self, cart: Cart, *, ignore_usage: bool = False) -> Coupon | None:
        if cart.coupon_code is None:
            return None
        email = cart.checkout.email if cart.checkout else cart.email
        coupon = await self.coupons.get(cart.coupon_code, customer_key(cart.customer_id, email))
        if coupon is not None and ignore_usage:
            coupon = replace(coupon, used=0, used_by_customer=0)
        return coupon

    async def _free_shipping(self, cart: Cart) -> FreeShippingPromotion | None:
        """The configured promotion, or the threshold of the session's variant when an experiment on
        the free-shipping threshold runs (the first time records the session's exposure)."""
        if self.experiments is None:
            return self.free_shipping
        assignment = await self.experiments.assign(
            ExperimentParameter.FREE_SHIPPING_THRESHOLD, cart.session_id, cart.customer_id
        )
        if assignment is None:
            return self.free_shipping
        if not assignment.value:
            return None  # the variant offers no free shipping
        return FreeShippingPromotion(int(assignment.value), self.currency)

    async def _offered_coupon(self, cart: Cart) -> str | None:
        """The coupon the cart page offers: while an experiment on `cart_coupon` runs, the session's
        variant value (`""`: none offered) — the first view records the exposure. A code no coupon
        has (a typo in the definition) is not offered: the shopper would only get a refusal."""
        if self.experiments is None:
            return None
        assignment = await self.experiments.assign(ExperimentParameter.CART_COUPON, cart.session_id, cart.customer_id)
        if assignment is None or not assignment.value:
            return None
        try:
            code = normalise_code(assignment.value)
        except Unprocessable:
            return None
        if await self.coupons.get(code, None) is None:
            return None
        return code

    async def _totals(
        self, cart: Cart, *, shipping_price: int | None, rate_free_threshold: int | None, ignore_usage: bool = False
    ) -> Totals:
        return compute_totals(
            subtotal=cart.subtotal,
            currency=cart.currency,
            coupon=await self._coupon(cart, ignore_usage=ignore_usage),
            free_shipping=await self._free_shipping(cart),
            shipping_price=shipping_price,
            rate_free_threshold=rate_free_threshold,
            now=self.clock(),
        )

    async def _quote(
        self, cart: Cart, country: str, method_id: str, now: datetime, *, usage_checked_later: bool = False
    ) -> tuple[ShippingQuote, Totals]:
        table = await self.rate_tables.current()
        if table is None:
            raise Unprocessable("no shipping methods are known yet; try again shortly")
        base = await self._totals(cart, shipping_price=None, rate_free_threshold=None, ignore_usage=usage_checked_later)
        if base.coupon_notice is not None and cart.coupon_code is not None:
            raise Unprocessable(f"{base.coupon_notice}; remove the coupon to continue", reason="coupon_not_applicable")
        quote = table.quote(method_id, country, cart.currency, cart.subtotal - base.item_discount_total, now)
        totals = await self._totals(
            cart,
            shipping_price=quote.price,
            rate_free_threshold=quote.free_shipping_threshold,
            ignore_usage=usage_checked_later,
        )
        return quote, totals

    async def _refresh_prices(self, cart: Cart) -> None:
        """The price paid is the read model's now, never what the cart or the client last said."""
        for line in cart.lines:
            product = await self.products.get(line.product_id)
            if product is None or not product.active:
                raise Unprocessable(f"product {line.product_id} is no longer available; remove it to continue")
            if line.quantity > product.stock_available:
                raise Unprocessable(
                    f"only {product.stock_available} of product {line.product_id} in stock",
                    available=product.stock_available,
                )
            line.tax_class = product.tax_class
            if product.price != line.unit_price:
                if line.previous_unit_price is None:
                    line.previous_unit_price = line.unit_price
                line.unit_price = product.price

    async def _mark_ordered(self, cart_id: str, order_id: str) -> None:
        for _ in range(SAVE_ATTEMPTS):
            cart = await self.carts.get(cart_id)
            if cart is None or cart.status is CartStatus.ORDERED:
                return
            cart.status = CartStatus.ORDERED
            cart.order_id = order_id
            try:
                await self.carts.save(cart, [])
                return
            except ConcurrencyError:
                continue

    @staticmethod
    def _same_order(order: Order, idempotency_key: str, order_token: str) -> PlacedOrder:
        if order.idempotency_key != idempotency_key:
            raise Conflict(
                f"this cart was already ordered as {order.order_id} (with another Idempotency-Key)",
                order_id=order.order_id,
            )
        return PlacedOrder(order, order_token, created=False)

    def cart_updated_event(
        self, view: CartView, action: CartAction, line: CartLine | None, delta: int, now: datetime
    ) -> CartUpdated:
        cart, totals = view.cart, view.totals
        priced = dict(zip((li.product_id for li in cart.lines), view.basket.lines, strict=True))
        return CartUpdated(
            occurred_at=now,
            session_id=cart.session_id,
            customer_id=cart.customer_id,
            cart_id=cart.cart_id,
            action=action,
            line=_line_item(line, cart.currency, priced.get(line.product_id)) if line is not None else None,
            quantity_delta=delta,
            items=[_line_item(li, cart.currency, priced[li.product_id]) for li in cart.lines],
            coupon_codes=[cart.coupon_code] if cart.coupon_code else [],
            subtotal=_money(totals.subtotal, cart.currency),
            discounts=[_discount_line(d, cart.currency) for d in totals.discounts],
            total=_money(totals.total, cart.currency),
        )

    @staticmethod
    def _order_placed(
        cart: Cart,
        checkout: CheckoutDetails,
        quote: ShippingQuote,
        totals: Totals,
        basket: PricedBasket,
        order_id: str,
        client_ip: str | None,
        now: datetime,
    ) -> OrderPlaced:
        c = cart.currency
        return OrderPlaced(
            occurred_at=now,
            session_id=cart.session_id,
            customer_id=cart.customer_id,
            order_id=order_id,
            cart_id=cart.cart_id,
            email=checkout.email,
            lines=[_line_item(line, c, p) for line, p in zip(cart.lines, basket.lines, strict=True)],
            discounts=[_discount_line(d, c) for d in totals.discounts],
            coupon_codes=[cart.coupon_code] if cart.coupon_code else [],
            shipping=ShippingSelection(
                method_id=quote.method_id,
                name=quote.name,
                carrier=quote.carrier,
                price=_money(quote.price, c),
                promised_from=quote.promised_from,
                promised_to=quote.promised_to,
            ),
            shipping_address=Address.model_validate(checkout.address),
            billing_country=checkout.billing_country,
            subtotal=_money(totals.subtotal, c),
            discount_total=_money(totals.discount_total, c),
            shipping_total=_money(totals.shipping_total or 0, c),
            total=_money(totals.total, c),
            vat=vat_breakdown(basket.vat, c),
            client_ip=client_ip,
        )


def _money(amount: int, currency: str) -> Money:
    return Money(amount=amount, currency=currency)


def _line_item(line: CartLine, currency: str, priced: PricedLine | None) -> LineItem:
    return LineItem(
        product_id=line.product_id,
        sku=line.sku,
        name=line.name,
        category=line.category,
        quantity=line.quantity,
        unit_price=_money(line.unit_price, currency),
        line_total=_money(line.line_total, currency),
        discount=_money(priced.discount, currency) if priced else None,
        discounted_total=_money(priced.discounted_total, currency) if priced else None,
        tax_class=TaxClass(line.tax_class),
        vat_rate_basis_points=priced.basis_points if priced else None,
    )


def vat_breakdown(breakdown: Breakdown, currency: str) -> VatBreakdown:
    """The contract's view of a breakdown (OrderPlaced, and the cart and order views)."""
    return VatBreakdown(
        country=breakdown.country,
        export=breakdown.export,
        rates=[
            VatRateLine(
                rate_basis_points=r.basis_points,
                goods_gross=_money(r.goods_gross, currency),
                discount=_money(r.discount, currency),
                shipping=_money(r.shipping, currency),
                gross=_money(r.gross, currency),
                net=_money(r.net, currency),
                vat=_money(r.vat, currency),
            )
            for r in breakdown.rates
        ],
        net_total=_money(breakdown.net, currency),
        vat_total=_money(breakdown.vat, currency),
        gross_total=_money(breakdown.gross, currency),
    )


def _discount_line(discount: Any, currency: str) -> DiscountLine:
    return DiscountLine(
        code=discount.code,
        description=discount.description,
        amount=_money(discount.amount, currency),
        applies_to=discount.applies_to,
    )
