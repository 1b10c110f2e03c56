"""The store-command metrics' filter shapes do not grow with the data."""

from __future__ import annotations

import pytest

from kasse_common.mongo import filter_shape

pytestmark = pytest.mark.unit


def test_a_commits_consumed_ids_make_one_shape_whatever_the_ids() -> None:
    def commit_filter(event_id: str) -> dict[str, object]:
        return {
            "_id": "prd_1",
            "_version": 3,
            "stock_available": {"$gte": 2},
            **{f"_dedupe.g{k}.{event_id}": {"$exists": False} for k in range(3)},
            f"_processed.{event_id}": {"$exists": False},
        }

    shapes = {filter_shape(commit_filter(f"evt-{n}")) for n in range(20)}
    assert shapes == {"{_dedupe.*,_id,_processed.*,_version,stock_available}"}
    assert filter_shape({"_id": 1}) == "{_id}"
    assert filter_shape({"product_ids": "p", "delivered": True}) == "{delivered,product_ids}"
    assert filter_shape({"interest_seen.400": {"$exists": True}, "_id": "p"}) == "{_id,interest_seen.400}"
    assert filter_shape({}) == "{}"
