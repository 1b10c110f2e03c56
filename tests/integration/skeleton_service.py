"""The walking skeleton's consumer: the kit's smallest real service, run as its own process.

It consumes OrderPlaced and keeps a ledger document per order in the Mongo-protocol store. The
effect and the consumed event id are one atomic write (DocumentStore.commit), so a redelivery changes
nothing. `SKELETON_CRASH_ON_EVENT_ID` makes the process die right after applying that event and
before its offset is committed: the crash the idempotency exists for.
"""

from __future__ import annotations

import os
from typing import ClassVar

import uvicorn
from fastapi import FastAPI
from pydantic_settings import SettingsConfigDict

from kasse_common.messaging import EventContext
from kasse_common.persistence import CommitOutcome
from kasse_common.runtime import ServiceRuntime
from kasse_common.settings import ServiceSettings
from kasse_contracts.events import OrderPlaced


class SkeletonSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="KASSE_SKELETON_", extra="ignore", frozen=True)
    service_name: ClassVar[str] = "skeleton"


def create_app() -> FastAPI:
    runtime = ServiceRuntime(SkeletonSettings())
    ledger = runtime.document_store("ledger")
    crash_on = os.environ.get("SKELETON_CRASH_ON_EVENT_ID")

    async def on_order_placed(event: OrderPlaced, ctx: EventContext) -> None:
        existing = await ledger.load(event.order_id)
        outcome = await ledger.commit(
            event.order_id,
            expected_version=existing["_version"] if existing else None,
            state={"total": event.total.amount, "currency": event.total.currency, "last_event": ctx.event_id},
            inc={"applied": 1},
            consumed_event_id=ctx.event_id,
        )
        if outcome is CommitOutcome.APPLIED and ctx.event_id == crash_on:
            os._exit(137)  # applied, offset not committed

    runtime.consumer.on(OrderPlaced, on_order_placed)
    return runtime.create_app(title="Kasse walking skeleton")


if __name__ == "__main__":
    settings = SkeletonSettings()
    uvicorn.run(create_app(), host="127.0.0.1", port=settings.http_port, log_config=None)
