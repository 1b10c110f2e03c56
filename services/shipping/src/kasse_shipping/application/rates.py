"""Publishing the rate table and quoting from it."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from kasse_common.envelope import derived_event_id
from kasse_common.retry import retry_on_conflict
from kasse_contracts.events import ShippingMethodsPublished
from kasse_shipping.application.ports import PendingEvent, RateTableRepository
from kasse_shipping.domain.rates import Basket, MethodQuote, RateTable, quote

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Quote:
    revision: int
    ordered_at: datetime
    methods: list[MethodQuote]


class RateTableService:
    def __init__(
        self,
        table: RateTable,
        repository: RateTableRepository,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.table = table
        self._repository = repository
        self._clock = clock
        self.revision: int | None = None

    async def publish(self, attempts: int = 5) -> int:
        """Publish the table: a new revision only when its content changed since the last one.

        An unchanged table is published again under its revision and event id (a restart heals a lost
        topic; readers keep the highest revision, so a repeat changes nothing for them).
        """
        fingerprint = self.table.fingerprint()

        async def attempt() -> int:
            current = await self._repository.current(self.table.rate_table_id)
            if current is None:
                revision, expected = 1, None
            elif current.fingerprint == fingerprint:
                revision, expected = current.revision, current.version
            else:
                revision, expected = current.revision + 1, current.version
            event = self.published_event(revision)
            event_id = derived_event_id(
                "ShippingMethodsPublished", self.table.rate_table_id, str(revision), fingerprint
            )
            # Another instance publishing at the same moment wins the write: the helper looks again.
            await self._repository.save(self.table, revision, fingerprint, expected, [PendingEvent(event, event_id)])
            return revision

        revision = await retry_on_conflict(attempt, f"publish rate table {self.table.rate_table_id}", attempts=attempts)
        self.revision = revision
        log.info("rate table published", extra={"rate_table_id": self.table.rate_table_id, "revision": revision})
        return revision

    def published_event(self, revision: int) -> ShippingMethodsPublished:
        t = self.table
        return ShippingMethodsPublished(
            occurred_at=self._clock(),
            rate_table_id=t.rate_table_id,
            revision=revision,
            origin_country=t.origin_country,
            origin_timezone=t.origin_timezone,
            cutoff_local_time=t.cutoff_local_time,
            holidays=t.holidays,
            methods=t.methods,
        )

    def quote(
        self,
        *,
        country: str,
        postal_code: str | None,
        basket: Basket,
        ordered_at: datetime | None,
        method_id: str | None = None,
    ) -> Quote:
        at = ordered_at or self._clock()
        methods = quote(
            self.table, country=country, postal_code=postal_code, basket=basket, ordered_at=at, method_id=method_id
        )
        return Quote(revision=self.revision or 0, ordered_at=at, methods=methods)
