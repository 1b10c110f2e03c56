"""Load the sample catalogue: `python -m kasse_catalog.seed [path.json]`.

Idempotent (upsert by sku through the same use case as the admin bulk import): a second run changes
nothing. It writes to the database only; the ProductChanged events wait in the products' outbox and
the service's relay publishes them — at once if the service is running, else when it starts.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from importlib import resources
from pathlib import Path
from typing import Any

from kasse_catalog import wiring
from kasse_catalog.application.products import ImportResult
from kasse_catalog.entrypoints.schemas import BulkImport
from kasse_catalog.settings import CatalogSettings
from kasse_common.persistence import ensure_outbox_indexes
from kasse_common.runtime import ServiceRuntime

log = logging.getLogger("kasse_catalog.seed")


def sample_catalog() -> dict[str, Any]:
    text = resources.files("kasse_catalog.data").joinpath("sample_catalog.json").read_text(encoding="utf-8")
    return json.loads(text)  # type: ignore[no-any-return]


async def seed(settings: CatalogSettings, data: dict[str, Any] | None = None) -> ImportResult:
    bulk = BulkImport.model_validate(data if data is not None else sample_catalog())
    runtime = ServiceRuntime(settings)  # nothing starts: only its Mongo client and encoder are used
    try:
        catalog = wiring.build(runtime, settings)
        await catalog.ensure_indexes()
        await ensure_outbox_indexes(catalog.products.collection)
        return await catalog.catalog.import_products([p.to_details() for p in bulk.products])
    finally:
        await runtime.mongo.close()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    data = json.loads(Path(args[0]).read_text(encoding="utf-8")) if args else None
    result = asyncio.run(seed(CatalogSettings(), data))
    print(
        f"catalogue loaded: {len(result.created)} created, {len(result.updated)} updated, "
        f"{len(result.unchanged)} unchanged"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
