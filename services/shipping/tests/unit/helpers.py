"""Builders shared by the shipping unit tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from importlib import resources

from kasse_shipping.adapters.carrier import SimulatedCarrier
from kasse_shipping.application.fulfilment import FulfilmentService
from kasse_shipping.application.rates import RateTableService
from kasse_shipping.domain.fulfilment import ReturnPolicy
from kasse_shipping.domain.rates import RateTable

from ..fakes import InMemoryFulfilmentRepository, InMemoryRateTableRepository


def shipped_table() -> RateTable:
    text = resources.files("kasse_shipping").joinpath("data/rate_table.json").read_text(encoding="utf-8")
    return RateTable.model_validate_json(text)


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, start: datetime = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


class World:
    def __init__(self, window_days: int = 30) -> None:
        self.clock = Clock()
        self.repo = InMemoryFulfilmentRepository()
        self.rates = RateTableService(shipped_table(), InMemoryRateTableRepository(), self.clock)
        self.carrier = SimulatedCarrier(dispatch_after=timedelta(hours=6), deliver_after=timedelta(hours=48))
        self.service = FulfilmentService(
            self.repo,
            self.carrier,
            self.rates,
            ReturnPolicy(window_days=window_days, conditions=["unused"]),
            self.clock,
        )

    def published(self, event_type: type) -> list:  # type: ignore[type-arg]
        return [p.event for p in self.repo.published if isinstance(p.event, event_type)]
