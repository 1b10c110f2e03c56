"""Read use cases: the KPIs for a window, from the whole group's merged aggregates."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol

from kasse_metrics.domain.kpis import Window, minute_of


class KpiSource(Protocol):
    """The read side of a projection (`Projection`, or `MergedKpis` over every partition)."""

    @property
    def version(self) -> int: ...

    def report(self, window: Window) -> dict[str, Any]: ...

    def funnel(self, window: Window, channel: str | None = None) -> dict[str, Any]: ...

    def breakdown(self, dimension: str, window: Window, limit: int = 50) -> list[dict[str, Any]]: ...

    def timeseries(self, last_minute: int, minutes: int) -> list[dict[str, Any]]: ...

    def event_counts(self, window: Window) -> dict[str, int]: ...


class KpiQueries:
    def __init__(
        self, projection: KpiSource, stream_min_interval_s: float = 0.25, lag: Callable[[], int] = lambda: 0
    ) -> None:
        self.projection = projection
        self.lag = lag
        self.stream_min_interval_s = stream_min_interval_s
        self._changed = asyncio.Condition()

    async def notify_changed(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def wait_for_change(self, seen_version: int, timeout: float) -> int | None:
        """The projection's version once it differs from `seen_version`; None after `timeout`."""
        if self.projection.version != seen_version:
            return self.projection.version
        try:
            async with self._changed:
                await asyncio.wait_for(self._changed.wait_for(lambda: self.projection.version != seen_version), timeout)
        except TimeoutError:
            return None
        return self.projection.version

    def report(self, window: str, at: datetime | None) -> dict[str, Any]:
        # Records committed by the group but not yet read into this instance's projection (a
        # restarted instance rebuilds from the store): 0 means the numbers are the group's whole.
        return {**self.projection.report(Window.named(window, at)), "projection_lag_records": self.lag()}

    def funnel(self, window: str, at: datetime | None, channel: str | None) -> dict[str, Any]:
        f = self.projection.funnel(Window.named(window, at), channel=channel)
        return {"window": window, "channel": channel, **f}

    def breakdown(self, dimension: str, window: str, at: datetime | None, limit: int) -> list[dict[str, Any]]:
        return self.projection.breakdown(dimension, Window.named(window, at), limit)

    def timeseries(self, minutes: int, at: datetime | None) -> list[dict[str, Any]]:
        return self.projection.timeseries(minute_of(at or datetime.now(UTC)), minutes)

    def event_counts(self, window: str, at: datetime | None) -> dict[str, int]:
        return self.projection.event_counts(Window.named(window, at))
