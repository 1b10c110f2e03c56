"""Exact refunds: a return pays back what the customer paid for those units, never more.

What a customer paid for a line is its `discounted_total` (its share of the item discounts already
taken off, see `basket`). Units of a line are refunded by cumulative share: after k of its n units
have come back, `floor(paid * k / n)` has been refunded for it in total, so any sequence of partial
returns of a line adds up to exactly `paid` once all n are back, and never more before.

Shipping is refunded only where the policy says: `when_all_returned` (the default, as German
withdrawal law asks for the standard delivery costs when the whole order is withdrawn) refunds the
shipping charged with the return that brings the last unit back; `never` keeps it. Whatever is
asked, payment caps every refund at what is left of the capture.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from kasse_common.money.allocation import cumulative_share


class ShippingRefundPolicy(StrEnum):
    NEVER = "never"
    WHEN_ALL_RETURNED = "when_all_returned"


@dataclass(frozen=True)
class PaidLine:
    product_id: str
    quantity: int
    paid: int  # what the customer paid for the whole line (after its discount share)


@dataclass(frozen=True)
class UnitsRefund:
    product_id: str
    quantity: int
    amount: int


@dataclass(frozen=True)
class ReturnRefund:
    lines: tuple[UnitsRefund, ...]
    shipping: int

    @property
    def total(self) -> int:
        return sum(line.amount for line in self.lines) + self.shipping


def units_refund(line: PaidLine, returned_before: int, returning: int) -> int:
    """What `returning` more units of `line` are worth after `returned_before` came back already."""
    if returning < 0 or returned_before < 0 or returned_before + returning > line.quantity:
        raise ValueError(f"{returning} more of {line.quantity} units after {returned_before}")
    return cumulative_share(line.paid, returned_before + returning, line.quantity) - cumulative_share(
        line.paid, returned_before, line.quantity
    )


def return_refund(
    lines: Sequence[PaidLine],
    returned_before: Mapping[str, int],
    returning: Mapping[str, int],
    *,
    shipping_charged: int,
    policy: ShippingRefundPolicy,
) -> ReturnRefund:
    """The refund of one return (`returning`: units per product) given the units already returned."""
    by_product = {line.product_id: line for line in lines}
    unknown = set(returning) - set(by_product)
    if unknown:
        raise ValueError(f"not in the order: {', '.join(sorted(unknown))}")
    refunds = tuple(
        UnitsRefund(pid, qty, units_refund(by_product[pid], returned_before.get(pid, 0), qty))
        for pid, qty in returning.items()
        if qty > 0
    )
    everything_back = all(
        returned_before.get(line.product_id, 0) + returning.get(line.product_id, 0) >= line.quantity for line in lines
    )
    shipping = shipping_charged if policy is ShippingRefundPolicy.WHEN_ALL_RETURNED and everything_back else 0
    return ReturnRefund(refunds, shipping)


def remaining_lines(lines: Sequence[PaidLine], returned: Mapping[str, int]) -> tuple[UnitsRefund, ...]:
    """The units not returned yet and what they are worth (what a cancellation gives back for goods)."""
    return tuple(
        UnitsRefund(line.product_id, left, units_refund(line, returned.get(line.product_id, 0), left))
        for line in lines
        if (left := line.quantity - returned.get(line.product_id, 0)) > 0
    )
