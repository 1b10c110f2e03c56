"""A shipment booked just before the store dies is still dispatched (the chaos run's stuck parcel).

`make chaos` (issue 12): a parcel booked 9 s before FerretDB was killed -9 was never dispatched, the
order stayed `paid` and its stock reserved. The booking's commit landed, but the write of its
carrier-scan marker (kit DueWork, written after the commit) failed; the PaymentCaptured came again
and was recognised as done, so nothing wrote the marker, and shipping was not restarted (only the
start rebuilt markers). The same hole opens when the commit itself raises after the store applied it.

Here the real store plays along until the chosen write, which fails the way FerretDB's death makes
it fail (AutoReconnect) — after the commit, or after the store applied the commit itself.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pymongo.errors import AutoReconnect

from kasse_common.envelope import OutgoingRecord, encode
from kasse_common.mongo import create_mongo_client
from kasse_common.persistence import DocumentStore
from kasse_contracts.base import Event
from kasse_contracts.events import PaymentCaptured
from kasse_shipping.adapters.carrier import SimulatedCarrier
from kasse_shipping.adapters.mongo import MongoFulfilmentRepository
from kasse_shipping.application.fulfilment import FulfilmentService
from kasse_shipping.application.rates import RateTableService
from kasse_shipping.domain.fulfilment import ReturnPolicy, ShipmentStatus
from kasse_shipping.main import load_rate_table
from kasse_shipping.settings import ShippingSettings
from kasse_testkit import wait_until
from kasse_testkit.samples import order_placed

from ..fakes import InMemoryRateTableRepository

pytestmark = pytest.mark.integration


class DiesOnce:
    """A collection whose next write (`update_one`, or `bulk_write`: the DueWork writes its markers in
    batches) fails as when the store is killed: before it is sent (`applied=False`) or after the store
    applied it (`applied=True`). Everything else passes."""

    def __init__(self, real: Any, *, applied: bool) -> None:
        self._real = real
        self._applied = applied
        self.armed = False
        self.fired = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    async def update_one(self, *args: Any, **kwargs: Any) -> Any:
        return await self._write("update_one", *args, **kwargs)

    async def bulk_write(self, *args: Any, **kwargs: Any) -> Any:
        return await self._write("bulk_write", *args, **kwargs)

    async def _write(self, command: str, *args: Any, **kwargs: Any) -> Any:
        if not self.armed:
            return await getattr(self._real, command)(*args, **kwargs)
        self.armed = False
        self.fired += 1
        if self._applied:
            await getattr(self._real, command)(*args, **kwargs)
        raise AutoReconnect("127.0.0.1:37017: connection closed")


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def _encode(event: Event, event_id: str) -> OutgoingRecord:
    return encode(event, service="shipping", event_id=event_id)


@pytest.mark.parametrize("dies", ["marker write after the commit", "commit applied, then the store died"])
async def test_a_shipment_booked_as_the_store_dies_is_still_dispatched_without_a_restart(
    dies: str, shipping_settings: Callable[..., ShippingSettings]
) -> None:
    settings = shipping_settings()
    mongo = create_mongo_client(settings)
    fulfilments = mongo[settings.database_name]["fulfilments"]
    store = DocumentStore(fulfilments)
    repo = MongoFulfilmentRepository(store, _encode)
    clock = Clock()
    carrier = SimulatedCarrier(dispatch_after=timedelta(hours=6), deliver_after=timedelta(hours=48))
    rates = RateTableService(load_rate_table(settings), InMemoryRateTableRepository(), clock)
    service = FulfilmentService(repo, carrier, rates, ReturnPolicy(window_days=30, conditions=["unused"]), clock)
    if dies == "marker write after the commit":
        faulty = DiesOnce(repo.scans.index, applied=False)
        repo.scans.index = faulty  # type: ignore[assignment]
    else:
        faulty = DiesOnce(fulfilments, applied=True)
        store.collection = faulty  # type: ignore[assignment]
    try:
        await repo.ensure_indexes()
        assert await service.advance_due_shipments() == 0  # the process started long ago: markers built
        order = order_placed()
        await service.order_placed(order, "evt-order")
        payment = PaymentCaptured(
            occurred_at=clock(),
            session_id=order.session_id,
            order_id=order.order_id,
            payment_intent_id="pi_" + order.order_id,
            amount=order.total,
        )
        faulty.armed = True
        try:  # the consumer sees a transient failure (or none, once the marker is owed)
            await service.payment_captured(payment, "evt-pay")
        except AutoReconnect:
            pass
        # The marker is written beside the consumer's path (kit DueWork.track_soon): wait for its write to die.
        await wait_until(lambda: faulty.fired == 1, timeout=30)
        await service.payment_captured(payment, "evt-pay")  # the record comes again: already done
        doc = await fulfilments.find_one({"_id": order.order_id})
        assert doc is not None and doc["due_at"] is not None  # booked, its scan ahead

        clock.now += timedelta(hours=7)  # the scan is due; no restart in between
        assert await service.advance_due_shipments() == 1
        loaded = await repo.load(order.order_id)
        assert loaded.fulfilment.shipment is not None
        assert loaded.fulfilment.shipment.status is ShipmentStatus.DISPATCHED
    finally:
        await fulfilments.delete_many({})
        await repo.scans.index.delete_many({})
        await mongo.close()
