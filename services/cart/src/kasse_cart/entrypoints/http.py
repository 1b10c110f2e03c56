"""HTTP routes: translate the request, call a use case, translate the answer. Nothing else."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request, Response, status

from kasse_cart.application.admin import Admin
from kasse_cart.application.carts import CartService
from kasse_cart.application.orders import OrderLife, OrderView
from kasse_cart.domain.cart import REPLIES_KEPT
from kasse_cart.domain.order import OrderStatus
from kasse_cart.entrypoints import schemas as s
from kasse_cart.settings import CartSettings
from kasse_common.errors import Forbidden
from kasse_common.http import bearer_guard
from kasse_common.ratelimit import RateLimiter, path_param

CartToken = Annotated[
    str | None, Header(alias="X-Cart-Token", description="The token returned when the cart was created")
]
OrderToken = Annotated[
    str | None, Header(alias="X-Order-Token", description="The token returned when the order was placed")
]
SessionHeader = Annotated[str | None, Header(alias="X-Session-Id", max_length=200)]

CART_ERRORS = s.problems(404, 409, 422)
LIMITED = s.problems(429)


async def guest() -> str | None:
    return None


def storefront_router(
    carts: CartService,
    orders: OrderLife,
    customer: Callable[..., Awaitable[str | None]] = guest,
    settings: CartSettings | None = None,
) -> APIRouter:
    """`customer`: the dependency naming the proven customer (kasse_common.identity), None for a guest.
    `settings`: the abuse limits (cart creation, coupon attempts, order placement); None: no limits."""
    router = APIRouter(prefix="/v1", tags=["storefront"])
    limiter = RateLimiter(enabled=settings is not None and settings.rate_limits_enabled)
    cart_id = path_param("cart_id")

    def limit(setting: str, per_cart: bool = False) -> Any:
        """The dependency for the rate in CartSettings.<setting>, per client IP or per cart id."""
        rate: str | None = getattr(settings, setting) if settings is not None else None
        return Depends(limiter.limit(setting, rate, key=cart_id) if per_cart else limiter.limit(setting, rate))

    create_limit = [limit("rate_limit_cart_creation")]
    coupon_limits = [limit("rate_limit_coupon_per_client"), limit("rate_limit_coupon_per_cart", per_cart=True)]
    order_limits = [limit("rate_limit_order_per_client"), limit("rate_limit_order_per_cart", per_cart=True)]
    # A default rather than Annotated[...]: annotations are strings here and `customer` is a local.
    proven = Depends(customer)

    @router.post(
        "/carts",
        status_code=status.HTTP_201_CREATED,
        summary="Create a cart; its token is returned once",
        description=(
            "A customer is named only by a verified customer token (`Authorization: Bearer <OIDC JWT>`); "
            "without one the cart is a guest's. A `customer_id` in the body must be the token's subject."
        ),
        responses=s.problems(401, 403, 422, 429),
        dependencies=create_limit,
    )
    async def create_cart(
        response: Response,
        body: s.CreateCart | None = None,
        session_id: SessionHeader = None,
        customer_id: str | None = proven,
    ) -> s.CreatedCart:
        session = session_id or uuid.uuid4().hex
        response.headers["X-Session-Id"] = session
        body = body or s.CreateCart()
        if body.customer_id is not None and body.customer_id != customer_id:
            raise Forbidden("customer_id is taken only from a verified customer token (Authorization: Bearer)")
        view, token = await carts.create_cart(session, customer_id, body.email)
        return s.CreatedCart(cart_id=view.cart.cart_id, cart_token=token, cart=s.cart_out(view))

    @router.get("/carts/{cart_id}", summary="The cart with current prices, flags and totals", responses=s.problems(404))
    async def get_cart(cart_id: str, token: CartToken = None) -> s.CartOut:
        return s.cart_out(await carts.get_cart(cart_id, token))

    @router.post(
        "/carts/{cart_id}/items",
        summary="Add a product (merges into its line); with an Idempotency-Key a retry adds nothing",
        description=(
            "With `Idempotency-Key`, a repeat of the same request (same key, same body) is answered with the "
            "first answer (header `Idempotent-Replayed: true`) and adds nothing; the key with another body is "
            f"refused (422). A cart remembers its last {REPLIES_KEPT} keys."
        ),
        response_model=s.CartOut,
        responses=CART_ERRORS,
    )
    async def add_item(
        cart_id: str,
        body: s.AddItem,
        token: CartToken = None,
        # Optional, yet published as a plain string of 8-200 characters (not "string or null"), so a client
        # generated from the OpenAPI document (the fuzzer did) knows a short key is refused.
        idempotency_key: Annotated[str, Header(alias="Idempotency-Key", min_length=8, max_length=200)] = "",
    ) -> Any:
        if not idempotency_key:
            return s.cart_out(await carts.add_item(cart_id, token, body.product_id, body.quantity))
        replied = await carts.add_item_once(
            cart_id,
            token,
            body.product_id,
            body.quantity,
            idempotency_key,
            lambda view: s.cart_out(view).model_dump_json(),
        )
        headers = {"Idempotent-Replayed": "true"} if replied.replayed else {}
        return Response(replied.answer, media_type="application/json", headers=headers)

    @router.put("/carts/{cart_id}/items/{product_id}", summary="Set a line's quantity", responses=CART_ERRORS)
    async def set_quantity(cart_id: str, product_id: str, body: s.SetQuantity, token: CartToken = None) -> s.CartOut:
        return s.cart_out(await carts.set_quantity(cart_id, token, product_id, body.quantity))

    @router.delete("/carts/{cart_id}/items/{product_id}", summary="Remove a line", responses=CART_ERRORS)
    async def remove_item(cart_id: str, product_id: str, token: CartToken = None) -> s.CartOut:
        return s.cart_out(await carts.remove_item(cart_id, token, product_id))

    @router.delete("/carts/{cart_id}/items", summary="Empty the cart (and drop its coupon)", responses=CART_ERRORS)
    async def clear(cart_id: str, token: CartToken = None) -> s.CartOut:
        return s.cart_out(await carts.clear(cart_id, token))

    @router.put(
        "/carts/{cart_id}/coupon",
        summary="Apply a coupon code (refused with its reason)",
        responses={**CART_ERRORS, **LIMITED},
        dependencies=coupon_limits,
    )
    async def apply_coupon(cart_id: str, body: s.ApplyCoupon, token: CartToken = None) -> s.CartOut:
        return s.cart_out(await carts.apply_coupon(cart_id, token, body.code))

    @router.delete("/carts/{cart_id}/coupon", summary="Remove the coupon", responses=CART_ERRORS)
    async def remove_coupon(cart_id: str, token: CartToken = None) -> s.CartOut:
        return s.cart_out(await carts.remove_coupon(cart_id, token))

    @router.get(
        "/carts/{cart_id}/shipping-options",
        summary="Shipping methods to a country, with price and delivery promise",
        responses=s.problems(404, 422),
    )
    async def shipping_options(
        cart_id: str,
        country: Annotated[str, Query(pattern=r"^[A-Z]{2}$", description="ISO 3166-1 alpha-2")],
        token: CartToken = None,
    ) -> list[s.ShippingOptionOut]:
        quotes = await carts.shipping_options(cart_id, token, country)
        return [s.ShippingOptionOut(**s.shipping_out(q).model_dump()) for q in quotes]

    @router.post(
        "/carts/{cart_id}/checkout",
        summary="Begin checkout: e-mail, address, shipping method; returns the final total and promise",
        responses=CART_ERRORS,
    )
    async def begin_checkout(cart_id: str, body: s.BeginCheckout, token: CartToken = None) -> s.CartOut:
        view = await carts.begin_checkout(
            cart_id,
            token,
            email=body.email,
            address=body.shipping_address.model_dump(mode="json"),
            shipping_method_id=body.shipping_method_id,
            billing_country=body.billing_country,
        )
        return s.cart_out(view)

    @router.post(
        "/carts/{cart_id}/order",
        status_code=status.HTTP_201_CREATED,
        summary="Place the order (idempotent on Idempotency-Key: a retry returns the same order)",
        responses={
            200: {"model": s.PlacedOrderOut, "description": "Replayed: the order already placed"},
            **CART_ERRORS,
            **LIMITED,
        },
        dependencies=order_limits,
    )
    async def place_order(
        cart_id: str,
        request: Request,
        response: Response,
        idempotency_key: Annotated[str, Header(alias="Idempotency-Key", min_length=8, max_length=200)],
        token: CartToken = None,
    ) -> s.PlacedOrderOut:
        client_ip = request.client.host if request.client else None
        placed = await carts.place_order(cart_id, token, idempotency_key, client_ip)
        if not placed.created:
            response.status_code = status.HTTP_200_OK
        order = placed.order
        return s.PlacedOrderOut(
            order_id=order.order_id,
            order_token=placed.order_token,
            status=order.status,
            total=s.money(order.total, order.currency),
            replayed=not placed.created,
        )

    @router.get(
        "/orders/{order_id}",
        summary="The order: status, timeline, tracking, the payment's client secret when needed",
        responses=s.problems(404),
    )
    async def get_order(order_id: str, token: OrderToken = None) -> s.OrderOut:
        return s.order_out(await orders.view(order_id, token))

    @router.get(
        "/orders/{order_id}/invoices",
        summary="The order's invoice and credit notes (numbers and totals)",
        responses=s.problems(404, 503),
    )
    async def list_invoices(order_id: str, token: OrderToken = None) -> list[dict[str, Any]]:
        return await orders.invoices(order_id, token)

    @router.get(
        "/orders/{order_id}/invoices/{number}.pdf",
        summary="Download an invoice or credit note (PDF)",
        response_class=Response,
        responses={200: {"content": {"application/pdf": {}}}, **s.problems(404)},
    )
    async def invoice_pdf(order_id: str, number: str, token: OrderToken = None) -> Response:
        pdf = await orders.invoice_pdf(order_id, token, number)
        return Response(
            pdf, media_type="application/pdf", headers={"Content-Disposition": f'attachment; filename="{number}.pdf"'}
        )

    @router.post(
        "/orders/{order_id}/cancel",
        summary="Cancel the order (only before it ships)",
        responses=s.problems(404, 409),
    )
    async def cancel_order(order_id: str, token: OrderToken = None) -> s.OrderOut:
        order = await orders.cancel_by_customer(order_id, token)
        return s.order_out(OrderView(order, None))

    return router


def admin_router(settings: CartSettings, admin: Admin, orders: OrderLife) -> APIRouter:
    guard = bearer_guard(settings.admin_token, setting="KASSE_CART_ADMIN_TOKEN")
    router = APIRouter(
        prefix="/v1/admin",
        tags=["admin"],
        dependencies=[Depends(guard)],
        responses=s.problems(401, 403),
    )

    @router.get("/orders", summary="List and search orders, newest first", responses=s.problems(422))
    async def list_orders(
        status_filter: Annotated[OrderStatus | None, Query(alias="status")] = None,
        email: Annotated[str | None, Query(max_length=254)] = None,
        q: Annotated[str | None, Query(max_length=200, description="Part of the order id, cart id or e-mail")] = None,
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
        offset: Annotated[int, Query(ge=0, le=100_000)] = 0,
    ) -> list[s.AdminOrderOut]:
        found = await admin.search_orders(status=status_filter, email=email, text=q, limit=limit, offset=offset)
        return [s.admin_order_out(o) for o in found]

    @router.get("/orders/{order_id}", summary="One order with everything known about it", responses=s.problems(404))
    async def get_order(order_id: str) -> s.AdminOrderOut:
        return s.admin_order_out(await orders.admin_get(order_id))

    @router.post(
        "/coupons", status_code=status.HTTP_201_CREATED, summary="Create a coupon code", responses=s.problems(409, 422)
    )
    async def create_coupon(body: s.NewCoupon) -> s.CouponOut:
        coupon = await admin.create_coupon(**body.model_dump())
        return s.coupon_out(coupon)

    @router.get("/coupons", summary="All coupons with their use counts")
    async def list_coupons() -> list[s.CouponOut]:
        return [s.coupon_out(c) for c in await admin.list_coupons()]

    return router
