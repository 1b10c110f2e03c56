"""MongoDB through PyMongo's async API. Only features FerretDB v1 has too (no transactions,
change streams, TTL indexes, $lookup/$facet)."""

from __future__ import annotations

from typing import Any

from pymongo import AsyncMongoClient

from kasse_common.settings import ServiceSettings


def create_mongo_client(settings: ServiceSettings) -> AsyncMongoClient[Any]:
    # No I/O here: the client connects on first use.
    return AsyncMongoClient(
        settings.mongo_uri.get_secret_value(),
        tz_aware=True,
        serverSelectionTimeoutMS=5000,
        appname=f"kasse-{settings.service_name}",
    )
