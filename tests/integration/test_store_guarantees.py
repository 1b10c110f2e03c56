"""What Kasse relies on from the Mongo-protocol store, checked on the store the tests run against.

MongoDB applies every single-document write atomically, so a conditional update (`$inc` guarded by
`$gte`) cannot oversell and a lease claimed with `find_one_and_update` has one holder. FerretDB v1's
SQLite handler does not guarantee this by itself; the local stack's build restores it
(deploy/local/stack.py, FERRETDB_PATCH). These tests fail if a store without the guarantee is used.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from kasse_testkit import Namespace
from kasse_testkit.infrastructure import Infrastructure

pytestmark = pytest.mark.integration


async def test_concurrent_guarded_decrements_never_oversell(kasse_infra: Infrastructure, namespace: Namespace) -> None:
    client: AsyncMongoClient[Any] = AsyncMongoClient(kasse_infra.mongo_uri, maxPoolSize=60)
    try:
        stock = client[namespace.database("store")]["stock"]
        await stock.insert_one({"_id": "last-units", "available": 10})
        results = await asyncio.gather(
            *(
                stock.update_one({"_id": "last-units", "available": {"$gte": 1}}, {"$inc": {"available": -1}})
                for _ in range(50)
            )
        )
        assert sum(r.modified_count for r in results) == 10
        assert (await stock.find_one({"_id": "last-units"}))["available"] == 0
    finally:
        await client.close()


async def test_a_claim_by_find_one_and_update_has_exactly_one_winner(
    kasse_infra: Infrastructure, namespace: Namespace
) -> None:
    client: AsyncMongoClient[Any] = AsyncMongoClient(kasse_infra.mongo_uri, maxPoolSize=30)
    try:
        leases = client[namespace.database("store")]["leases"]
        await leases.insert_one({"_id": "doc", "holder": None})
        claims = await asyncio.gather(
            *(leases.find_one_and_update({"_id": "doc", "holder": None}, {"$set": {"holder": i}}) for i in range(25))
        )
        assert sum(1 for c in claims if c is not None) == 1
    finally:
        await client.close()


async def test_a_document_is_found_by_its_id_through_the_id_index(
    kasse_infra: Infrastructure, namespace: Namespace
) -> None:
    """Every read, update and delete by `_id` looks up one document, not every document of the collection.

    On MongoDB that is the _id index. FerretDB v1's SQLite backend compared a different expression than its
    _id index holds and read the whole table (SCAN) for each; the local build's patch makes it use the
    index (deploy/local/stack.py, FERRETDB_ID_INDEX). Update and delete use the same expression as find."""
    client: AsyncMongoClient[Any] = AsyncMongoClient(kasse_infra.mongo_uri)
    try:
        db = client[namespace.database("store")]
        await db["docs"].insert_many([{"_id": f"doc-{i}", "n": i} for i in range(50)])
        for query in ({"_id": "doc-7"}, {"_id": "doc-7", "n": 7}):
            explained = await db.command("explain", {"find": "docs", "filter": query})
            planner = explained["queryPlanner"]
            if "Plan" in planner:  # FerretDB: SQLite's EXPLAIN QUERY PLAN, one line per step
                assert any("USING INDEX" in step for step in planner["Plan"]), (query, planner["Plan"])
                assert not any(" SCAN " in f" {step.split('detail=')[-1]} " for step in planner["Plan"]), planner
            else:  # MongoDB
                assert "COLLSCAN" not in str(planner["winningPlan"]), (query, planner["winningPlan"])
        assert (await db["docs"].find_one({"_id": "doc-7", "n": 7})) == {"_id": "doc-7", "n": 7}
    finally:
        await client.close()
