"""Back-office use cases: coupons and finding orders."""

from __future__ import annotations

from datetime import datetime

from kasse_cart.application.ports import CouponRepository, OrderRepository
from kasse_cart.domain.order import Order, OrderStatus
from kasse_cart.domain.promotions import Coupon, CouponKind, normalise_code
from kasse_common.errors import Unprocessable


class Admin:
    def __init__(self, *, coupons: CouponRepository, orders: OrderRepository) -> None:
        self.coupons = coupons
        self.orders = orders

    async def create_coupon(
        self,
        *,
        code: str,
        kind: CouponKind,
        value: int,
        currency: str,
        min_subtotal: int,
        valid_from: datetime | None,
        valid_until: datetime | None,
        usage_limit: int | None,
        per_customer_limit: int | None,
    ) -> Coupon:
        if kind is CouponKind.PERCENT and not 1 <= value <= 100:
            raise Unprocessable("a percentage coupon's value is 1 to 100")
        for name, moment in (("valid_from", valid_from), ("valid_until", valid_until)):
            if moment is not None and moment.tzinfo is None:
                raise Unprocessable(f"{name} needs a time zone (e.g. 2026-12-24T00:00:00Z)")
        if valid_from and valid_until and valid_until <= valid_from:
            raise Unprocessable("valid_until must be after valid_from")
        coupon = Coupon(
            code=normalise_code(code),
            kind=kind,
            value=value,
            currency=currency,
            min_subtotal=min_subtotal,
            valid_from=valid_from,
            valid_until=valid_until,
            usage_limit=usage_limit,
            per_customer_limit=per_customer_limit,
        )
        await self.coupons.add(coupon)
        return coupon

    async def list_coupons(self) -> list[Coupon]:
        return await self.coupons.all()

    async def search_orders(
        self, *, status: OrderStatus | None, email: str | None, text: str | None, limit: int, offset: int
    ) -> list[Order]:
        return await self.orders.search(status=status, email=email, text=text, limit=limit, offset=offset)
