"""20,000 orders for one product: the product document's size with the kit's bounded dedupe window.

Each order consumes one event on the product document (catalog's stock-take marker) through
`DocumentStore.commit`, on the real store; every 10th order is also redelivered (must be absorbed).
Prints the document's BSON size every 1,000 orders and fails if it outgrows the bound
(2 x dedupe_window ids) or if a redelivery inside the window was applied again.

    uv run python services/common/bench/dedupe_bench.py --orders 20000
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from typing import Any, ClassVar

import bson
from pydantic_settings import SettingsConfigDict

from kasse_common.mongo import create_mongo_client
from kasse_common.persistence import DEDUPE_WINDOW, CommitOutcome, DocumentStore, processed_ids
from kasse_common.settings import ServiceSettings


class BenchSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="KASSE_BENCH_", extra="ignore", frozen=True)
    service_name: ClassVar[str] = "bench"


async def main(orders: int, window: int) -> dict[str, Any]:
    settings = BenchSettings(profile="development", mongo_database=f"kasse_bench_dedupe_{uuid.uuid4().hex[:8]}")
    mongo = create_mongo_client(settings)
    store = DocumentStore(mongo[settings.database_name]["products"], dedupe_window=window)
    product = "prod_hot"
    await store.commit(product, expected_version=None, state={"stock_reserved": 0, "name": "Hot seller"})
    version, recent, sizes, duplicates = 1, [], {}, 0
    started = time.monotonic()
    for order in range(1, orders + 1):
        marker = f"stock-take:{uuid.uuid4()}"
        await store.commit(product, expected_version=version, state={"stock_reserved": order}, consumed_event_id=marker)
        version += 1
        recent = [*recent[-(window - 1) :], marker]
        if order % 10 == 0:
            again = await store.commit(product, expected_version=version, state={}, consumed_event_id=recent[0])
            assert again is CommitOutcome.DUPLICATE, f"order {order}: a redelivery inside the window was applied"
            duplicates += 1
        if order % 1000 == 0:
            doc = await store.collection.find_one({"_id": product})
            assert doc is not None and doc["stock_reserved"] == order
            ids = len(processed_ids(doc))
            assert ids <= 2 * window, ids
            sizes[order] = (len(bson.encode(doc)), ids)
            print(f"{order:>6} orders: {sizes[order][0]:>8} bytes, {ids} ids, {time.monotonic() - started:.0f} s")
    await store.collection.delete_many({})  # emptied, not dropped (FerretDB v1 and live connections)
    await mongo.close()
    return {
        "orders": orders,
        "dedupe_window": window,
        "redeliveries_absorbed": duplicates,
        "max_bytes": max(s for s, _ in sizes.values()),
        "bytes_at_end": sizes[max(sizes)][0],
        "seconds": round(time.monotonic() - started, 1),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--orders", type=int, default=20_000)
    parser.add_argument("--window", type=int, default=DEDUPE_WINDOW)
    args = parser.parse_args()
    print(asyncio.run(main(args.orders, args.window)))
