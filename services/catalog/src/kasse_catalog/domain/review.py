"""Reviews: what a shopper may submit, and the order in which they are listed."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from kasse_common.errors import Unprocessable


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
