"""Fixtures of the metrics service's integration tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from kasse_testkit import Namespace
from kasse_testkit.infrastructure import Infrastructure


@pytest.fixture
async def metrics_db(kasse_infra: Infrastructure, namespace: Namespace) -> AsyncIterator[AsyncDatabase[Any]]:
    """This test's own metrics database on the real store (named by its namespace)."""
    mongo: AsyncMongoClient[Any] = AsyncMongoClient(kasse_infra.mongo_uri)
    try:
        yield mongo[namespace.database("metrics")]
    finally:
        await mongo.close()
