"""Dedupe ids are kept in a bounded window inside the same write: a document that consumes ever more
events stays the same size, and a redelivery inside the window still changes nothing.

On the real store (FerretDB here, MongoDB in production), with a window of 25 commits so that eight
generations pass in a few seconds. The growth law is the same for any window: the ids a document
holds are at most 2 x window, so its size stops growing after two windows. `make bench`
(services/common/bench/dedupe_bench.py) runs the full 20,000 orders for one product with the default
window of 1,000.
"""

from __future__ import annotations

import uuid
from typing import Any, ClassVar

import bson
import pytest
from pydantic_settings import SettingsConfigDict

from kasse_common.mongo import create_mongo_client
from kasse_common.persistence import CommitOutcome, DocumentStore, processed_ids
from kasse_common.settings import ServiceSettings

pytestmark = pytest.mark.integration

WINDOW = 25


class DedupeSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="KASSE_DEDUPE_TEST_", extra="ignore", frozen=True)
    service_name: ClassVar[str] = "dedupe"


async def test_a_product_taking_ever_more_orders_stays_bounded_and_still_absorbs_redeliveries(
    settings_for: Any,
) -> None:
    settings = settings_for(DedupeSettings)
    mongo = create_mongo_client(settings)
    store = DocumentStore(mongo[settings.database_name]["products"], dedupe_window=WINDOW)
    product = "prod_hot"
    await store.commit(product, expected_version=None, state={"stock_reserved": 0, "name": "Hot seller"})
    version = 1
    sizes: list[int] = []
    consumed: list[str] = []
    try:
        for order in range(8 * WINDOW):
            marker = f"stock-take:{uuid.uuid4()}"  # one per order, as catalog's reservation writes it
            outcome = await store.commit(
                product,
                expected_version=version,
                state={"stock_reserved": order + 1},
                consumed_event_id=marker,
            )
            assert outcome is CommitOutcome.APPLIED
            version += 1
            consumed.append(marker)
            if order % 5 == 4:
                # A redelivery of a recent order (inside the window) changes nothing.
                recent = consumed[-min(WINDOW, len(consumed))]
                again = await store.commit(
                    product, expected_version=version, state={"stock_reserved": -1}, consumed_event_id=recent
                )
                assert again is CommitOutcome.DUPLICATE, (order, recent)
            if version % WINDOW == 0:
                doc = await store.collection.find_one({"_id": product})
                assert doc is not None and doc["stock_reserved"] == order + 1
                sizes.append(len(bson.encode(doc)))
                assert len(processed_ids(doc)) <= 2 * WINDOW
        # Every id of the last window is remembered; the earliest orders are forgotten.
        doc = await store.collection.find_one({"_id": product})
        assert doc is not None
        remembered = processed_ids(doc)
        assert set(consumed[-WINDOW:]) <= remembered
        assert not set(consumed[:WINDOW]) & remembered
        assert await store.was_processed(product, consumed[-1])
        assert not await store.was_processed(product, consumed[0])
    finally:
        await mongo.close()
    # Growth law: the size stops growing after two windows (ids of two generations at most).
    steady = sizes[2:]
    assert max(steady) <= sizes[1] * 1.1, sizes
    assert max(steady) < 16 * 1024 * 1024 // 100  # and far below MongoDB's 16 MB document limit


async def test_one_commit_records_several_consumed_ids_and_any_of_them_again_changes_nothing(
    settings_for: Any,
) -> None:
    # Catalog writes several orders' stock changes of one product in one write (consumed_event_ids).
    settings = settings_for(DedupeSettings)
    mongo = create_mongo_client(settings)
    store = DocumentStore(mongo[settings.database_name]["products"], dedupe_window=WINDOW)
    try:
        await store.commit("prod_batch", expected_version=None, state={"stock_reserved": 0})
        first = await store.commit(
            "prod_batch",
            expected_version=1,
            state={"stock_reserved": 3},
            consumed_event_id="take-a",
            consumed_event_ids=["take-b", "take-c"],
        )
        assert first is CommitOutcome.APPLIED
        for event_id in ("take-a", "take-b", "take-c"):
            assert await store.was_processed("prod_batch", event_id)
        # A later batch with one id seen before: nothing of it is written; the caller learns which.
        again = await store.commit(
            "prod_batch", expected_version=2, state={"stock_reserved": 5}, consumed_event_ids=["take-d", "take-b"]
        )
        assert again is CommitOutcome.DUPLICATE
        assert not await store.was_processed("prod_batch", "take-d")
        rest = await store.commit(
            "prod_batch", expected_version=2, state={"stock_reserved": 4}, consumed_event_ids=["take-d"]
        )
        assert rest is CommitOutcome.APPLIED
        doc = await store.collection.find_one({"_id": "prod_batch"})
        assert doc is not None and doc["stock_reserved"] == 4 and doc["_version"] == 3
        assert {"take-a", "take-b", "take-c", "take-d"} <= processed_ids(doc)
        # The insert records them too.
        await store.commit("prod_new", expected_version=None, state={}, consumed_event_ids=["x", "y"])
        assert await store.was_processed("prod_new", "y")
    finally:
        await mongo.close()
