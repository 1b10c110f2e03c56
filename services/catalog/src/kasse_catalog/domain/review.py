"""Reviews: what a shopper may submit, and the order in which they are listed."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from kasse_common.errors import Conflict, Forbidden, Unprocessable


class ReviewSort(StrEnum):
    NEWEST = "newest"
    HIGHEST_RATED = "highest_rated"
    LOWEST_RATED = "lowest_rated"


class ReviewStatus(StrEnum):
    PENDING = "pending"  # stored, the product's rating not yet updated
    PUBLISHED = "published"


@dataclass
class Review:
    review_id: str
    product_id: str
    rating: int
    title: str
    text: str
    author_name: str
    verified_purchase: bool
    created_at: datetime
    customer_id: str | None = None
    session_id: str | None = None
    status: ReviewStatus = ReviewStatus.PENDING

    def __post_init__(self) -> None:
        errors = []
        if not 1 <= self.rating <= 5:
            errors.append({"field": "rating", "message": "must be a whole number from 1 to 5"})
        for name, value, limit in (
            ("title", self.title, 150),
            ("text", self.text, 5000),
            ("author_name", self.author_name, 80),
        ):
            if not value.strip():
                errors.append({"field": name, "message": "must not be empty"})
            elif len(value) > limit:
                errors.append({"field": name, "message": f"must be at most {limit} characters"})
        if errors:
            raise Unprocessable("; ".join(f"{e['field']}: {e['message']}" for e in errors), errors=errors)


@dataclass(frozen=True)
class Purchase:
    """What the catalog learned of one order from the events: its products, whether it was delivered,
    and the SHA-256 of the order token the shopper holds (OrderPlaced.order_token_sha256)."""

    order_id: str
    product_ids: list[str] = field(default_factory=list)
    delivered: bool = False
    order_token_sha256: str | None = None


def check_order_proof(purchase: Purchase | None, product_id: str, order_token: str) -> None:
    """A verified-purchase review by order token: the token must be the order's, the order must hold the
    product and be delivered. Forbidden (403) when the token proves nothing, Conflict (409) when the
    order is right but not delivered (yet, as far as the events told)."""
    if purchase is not None and not purchase.product_ids:
        # Only the delivery is known yet (another topic, it may come first): the order itself will follow.
        raise Conflict("that order is not known here yet; try again in a moment")
    expected = purchase.order_token_sha256 if purchase else None
    given = hashlib.sha256(order_token.encode()).hexdigest()
    if purchase is None or expected is None or not hmac.compare_digest(expected, given):
        raise Forbidden("the order token does not prove that order (unknown order or wrong token)")
    if product_id not in purchase.product_ids:
        raise Forbidden("that order does not contain this product")
    if not purchase.delivered:
        raise Conflict("that order is not delivered yet; a verified review can be written once it is")
