"""The simulated carrier: books parcels with deterministic tracking numbers and scans them on a
schedule from settings (seconds in a demo, hours and days by default)."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta

from kasse_shipping.domain.fulfilment import Booking, ShipmentStatus


class SimulatedCarrier:
    def __init__(
        self,
        *,
        dispatch_after: timedelta,
        deliver_after: timedelta,
        tracking_url_template: str | None = None,
    ) -> None:
        self._dispatch_after = dispatch_after
        self._deliver_after = deliver_after
        self._tracking_url_template = tracking_url_template

    @property
    def timings(self) -> tuple[timedelta, timedelta]:
        return self._dispatch_after, self._deliver_after

    def set_timings(self, *, dispatch_after: timedelta, deliver_after: timedelta) -> None:
        """Run-time change (the demo's slow-carrier switch): applies to scans scheduled from now on."""
        self._dispatch_after = dispatch_after
        self._deliver_after = deliver_after

    async def book(self, *, shipment_id: str, order_id: str, carrier: str, method_id: str) -> Booking:
        # Derived from the shipment id: booking the same shipment twice (a retried handler) is harmless.
        tracking_number = "SIM" + hashlib.sha256(shipment_id.encode()).hexdigest()[:14].upper()
        url = (
            self._tracking_url_template.format(tracking_number=tracking_number) if self._tracking_url_template else None
        )
        return Booking(carrier=carrier, tracking_number=tracking_number, tracking_url=url)

    async def return_label(self, *, return_id: str, order_id: str) -> str:
        return "RL-" + hashlib.sha256(return_id.encode()).hexdigest()[:12].upper()

    def next_scan(self, status: ShipmentStatus, since: datetime) -> datetime | None:
        if status is ShipmentStatus.CREATED:
            return since + self._dispatch_after
        if status is ShipmentStatus.DISPATCHED:
            return since + self._deliver_after
        return None
