"""The shipping service: wires the kit's runtime, the repositories, the carrier and the routes."""

from __future__ import annotations

import logging
from datetime import timedelta
from importlib import resources

from fastapi import FastAPI

from kasse_common.envelope import OutgoingRecord
from kasse_common.runtime import ServiceRuntime, serve
from kasse_contracts.base import Event
from kasse_contracts.events import (
    CancellationRefused,
    ReturnReceived,
    ReturnRequested,
    ShipmentCancelled,
    ShipmentCreated,
    ShipmentDelivered,
    ShipmentDispatched,
    ShippingMethodsPublished,
)
from kasse_shipping.adapters.carrier import SimulatedCarrier
from kasse_shipping.adapters.mongo import MongoFulfilmentRepository, MongoRateTableRepository
from kasse_shipping.application.fulfilment import FulfilmentService
from kasse_shipping.application.rates import RateTableService
from kasse_shipping.domain.fulfilment import ReturnPolicy
from kasse_shipping.domain.rates import RateTable
from kasse_shipping.entrypoints.consumers import register_consumers
from kasse_shipping.entrypoints.http import build_router
from kasse_shipping.settings import ShippingSettings

log = logging.getLogger(__name__)

RETURN_CONDITIONS = [
    "Items must be unused, complete and in their original packaging.",
    "Only delivered items can be returned, up to the quantity delivered.",
    "Print the return label reference you receive and attach it to the parcel.",
    "The refund of the items' price goes to the original payment method once the return arrives at our warehouse.",
]


def load_rate_table(settings: ShippingSettings) -> RateTable:
    if settings.rate_table_path is not None:
        text = settings.rate_table_path.read_text(encoding="utf-8")
    else:
        text = resources.files("kasse_shipping").joinpath("data/rate_table.json").read_text(encoding="utf-8")
    return RateTable.model_validate_json(text)


def create_app(settings: ShippingSettings | None = None) -> FastAPI:
    settings = settings or ShippingSettings()
    runtime = ServiceRuntime(settings)

    def encode(event: Event, event_id: str) -> OutgoingRecord:
        return runtime.encode(event, event_id=event_id)

    fulfilments = MongoFulfilmentRepository(runtime.document_store("fulfilments", trace_per_document=True), encode)
    rate_tables = MongoRateTableRepository(runtime.document_store("rate_tables"), encode)
    rates = RateTableService(load_rate_table(settings), rate_tables)
    carrier = SimulatedCarrier(
        dispatch_after=timedelta(seconds=settings.carrier_dispatch_after_s),
        deliver_after=timedelta(seconds=settings.carrier_deliver_after_s),
        tracking_url_template=settings.carrier_tracking_url_template,
    )
    policy = ReturnPolicy(
        window_days=settings.return_window_days,
        conditions=RETURN_CONDITIONS,
        refund_shipping=settings.return_refund_shipping,
    )
    fulfilment = FulfilmentService(fulfilments, carrier, rates, policy)

    runtime.produces(
        ShippingMethodsPublished,
        ShipmentCreated,
        ShipmentDispatched,
        ShipmentDelivered,
        ReturnRequested,
        ReturnReceived,
        ShipmentCancelled,
        CancellationRefused,
    )
    runtime.on_startup(fulfilments.ensure_indexes)

    async def publish_rate_table() -> None:
        await rates.publish()

    runtime.on_startup(publish_rate_table)
    register_consumers(runtime.consumer, fulfilment)

    async def carrier_scans() -> None:
        """Apply due carrier scans; progress lives in Mongo, so a restart resumes."""
        await fulfilment.advance_due_shipments()

    runtime.every(settings.carrier_scan_interval_s, carrier_scans, name="carrier-scans")
    return runtime.create_app(
        title="Kasse shipping",
        description="Shipping methods, rates and delivery promises; shipments and tracking; returns.",
        routers=[build_router(rates, fulfilment, settings.admin_token, carrier)],
    )


def run() -> None:
    settings = ShippingSettings()
    serve(create_app(settings), settings)
