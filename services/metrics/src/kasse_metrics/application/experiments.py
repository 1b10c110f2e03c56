"""Use cases of experiments: define, revise, start and stop (metrics owns the definitions), and the
per-variant analysis every instance keeps current.

Each accepted change is one write of the definition together with its `ExperimentChanged` (outbox),
so the services that honour the parameter learn it from the compacted topic, never by calling
metrics. The analysis takes its definitions from the same collection (every instance re-reads it
every second; the instance that wrote re-reads at once).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from kasse_common.envelope import OutgoingRecord, derived_event_id
from kasse_common.errors import Conflict, NotFound
from kasse_common.persistence import ConcurrencyError, DocumentStore
from kasse_contracts.events import ExperimentChanged
from kasse_metrics.application.experiment_feed import observations
from kasse_metrics.domain import experiment_definitions as rules
from kasse_metrics.domain.experiment_analysis import ExperimentAnalysis, merge_aggregates, report_of, variant_stats
from kasse_metrics.domain.facts import Fact

Encode = Callable[..., OutgoingRecord]
SAVE_ATTEMPTS = 5


class ExperimentDefinitions:
    def __init__(
        self, store: DocumentStore, encode: Encode, clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    ) -> None:
        self.store = store
        self.encode = encode
        self.clock = clock
        self.changed: list[Callable[[], Any]] = []

    async def create(self, spec: rules.ExperimentSpec, experiment_id: str | None = None) -> ExperimentChanged:
        definition = rules.new_definition(experiment_id or "exp_" + uuid.uuid4().hex[:12], spec, self.clock())
        try:
            await self.store.commit(
                definition.experiment_id,
                expected_version=None,
                state=_state(definition),
                events=[self._event(definition)],
            )
        except ConcurrencyError:
            raise Conflict(f"experiment {definition.experiment_id} exists already") from None
        await self._changed()
        return definition

    async def get(self, experiment_id: str) -> ExperimentChanged:
        doc = await self.store.load(experiment_id)
        if doc is None:
            raise NotFound(f"no experiment {experiment_id}")
        return ExperimentChanged.model_validate(doc["definition"])

    async def all(self) -> list[ExperimentChanged]:
        docs = [d async for d in self.store.collection.find({}, {"definition": 1})]
        return sorted((ExperimentChanged.model_validate(d["definition"]) for d in docs), key=lambda e: e.experiment_id)

    async def revise(self, experiment_id: str, spec: rules.ExperimentSpec) -> ExperimentChanged:
        return await self._change(experiment_id, lambda current, now: rules.revise(current, spec, now))

    async def start(self, experiment_id: str) -> ExperimentChanged:
        return await self._change(experiment_id, rules.start)

    async def stop(self, experiment_id: str) -> ExperimentChanged:
        return await self._change(experiment_id, rules.stop)

    async def _change(
        self, experiment_id: str, change: Callable[[ExperimentChanged, datetime], ExperimentChanged | None]
    ) -> ExperimentChanged:
        for _ in range(SAVE_ATTEMPTS):
            doc = await self.store.load(experiment_id)
            if doc is None:
                raise NotFound(f"no experiment {experiment_id}")
            current = ExperimentChanged.model_validate(doc["definition"])
            new = change(current, self.clock())
            if new is None:
                return current
            try:
                await self.store.commit(
                    experiment_id, expected_version=doc["_version"], state=_state(new), events=[self._event(new)]
                )
            except ConcurrencyError:
                continue  # changed meanwhile: decide again on the fresh definition
            await self._changed()
            return new
        raise ConcurrencyError(f"experiment {experiment_id} kept changing")

    def _event(self, definition: ExperimentChanged) -> OutgoingRecord:
        event_id = derived_event_id("experiment-changed", definition.experiment_id, str(definition.revision))
        return self.encode(definition, event_id=event_id)

    async def _changed(self) -> None:
        for listener in self.changed:
            maybe = listener()
            if asyncio.iscoroutine(maybe):
                await maybe


def _state(definition: ExperimentChanged) -> dict[str, Any]:
    return {"revision": definition.revision, "definition": definition.model_dump(mode="json")}


class ExperimentReports:
    """The per-variant reports of the whole group: definitions from the store, and the per-variant sums
    of every internal partition (this instance's analyses and the others' published sums), merged by
    addition (`sources`)."""

    def __init__(
        self,
        definitions: ExperimentDefinitions,
        stream_min_interval_s: float = 0.25,
        sources: Callable[[], list[dict[str, dict[str, Any]]]] = list,
        sources_version: Callable[[], int] = lambda: 0,
    ) -> None:
        self.definitions = definitions
        self.sources = sources
        self.sources_version = sources_version
        self.current: dict[str, ExperimentChanged] = {}
        self._definitions_version = 0
        self.stream_min_interval_s = stream_min_interval_s
        self._changed = asyncio.Condition()
        self._cache: dict[str, tuple[int, dict[str, Any]]] = {}

    @property
    def version(self) -> int:
        return self._definitions_version + self.sources_version()

    async def refresh_definitions(self) -> None:
        new = {d.experiment_id: d for d in await self.definitions.all()}
        if {k: v.revision for k, v in new.items()} != {k: v.revision for k, v in self.current.items()}:
            self.current = new
            self._definitions_version += 1
            await self.notify_changed()

    async def notify_changed(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def wait_for_change(self, seen_version: int, timeout: float) -> int | None:
        if self.version != seen_version:
            return self.version
        try:
            async with self._changed:
                await asyncio.wait_for(self._changed.wait_for(lambda: self.version != seen_version), timeout)
        except TimeoutError:
            return None
        return self.version

    def reports(self) -> list[dict[str, Any]]:
        return [self.report(e) for e in sorted(self.current)]

    def report(self, experiment_id: str) -> dict[str, Any]:
        definition = self.current.get(experiment_id)
        if definition is None:
            raise NotFound(f"no experiment {experiment_id}")
        version = self.version
        cached = self._cache.get(experiment_id)
        if cached is not None and cached[0] == version:
            return cached[1]
        merged = merge_aggregates(part.get(experiment_id, {}) for part in self.sources())
        report = report_of(definition, variant_stats(definition, merged))
        self._cache[experiment_id] = (version, report)
        return report


def partition_analysis(conversion_window: timedelta) -> ExperimentAnalysis:
    """One internal partition's analysis (its sessions only); sessions idle for the KPI engine's
    conversion window are folded into per-variant sums."""
    return ExperimentAnalysis(conversion_window // timedelta(milliseconds=1))


def observe(analysis: ExperimentAnalysis) -> Callable[[Sequence[Fact]], object]:
    return lambda facts: analysis.observe_all(observations(facts))


def snapshot_part(analysis: ExperimentAnalysis) -> tuple[Callable[[], bytes], Callable[[bytes], None]]:
    """Saved in the partition's snapshot with its projection (same facts), so a restart resumes both."""
    return (
        lambda: msgspec.msgpack.encode(analysis.state()),
        lambda blob: analysis.restore(msgspec.msgpack.decode(blob)),
    )
