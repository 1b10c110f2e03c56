"""Experiments in every service: the one assignment rule, and the read model of running experiments.

Assignment is a pure function: SHA-256 of experiment id and session id → a point in [0, total weight)
→ the variant whose cumulative weight range holds it. Every service (cart, catalog, storefront)
computes the same variant for a session without asking anyone, the same one every time (sticky), and
sessions are spread by the weights. Changing the weights of a running experiment would move sessions
between variants; the metrics service refuses it.

The definitions come from `ExperimentChanged` (compacted topic `kasse.experiments.v1`, owned by
metrics). `ExperimentBook` folds them into the service's own `experiments` collection (highest
revision wins) and serves the running ones from a copy refreshed every second, so every replica sees a
change within a second although only one of them consumed it. The first time a service shows a
session a variant it records `ExperimentExposed` with an event id derived from experiment and
session: a repeat (another request, another service, a restart) is the same event and collapses.

Wiring in a service's `main.py`:

    book = ExperimentBook(runtime.db["experiments"], runtime.encode, runtime.standalone_events.add)
    runtime.consumer.on(ExperimentChanged, book.apply)
    runtime.produces(ExperimentExposed)
    ...
    assignment = await book.assign(ExperimentParameter.FREE_SHIPPING_THRESHOLD, session_id)
    if assignment is not None: threshold = int(assignment.value) ...
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pymongo.errors import DuplicateKeyError

from kasse_common.envelope import OutgoingRecord, derived_event_id
from kasse_contracts.base import Event
from kasse_contracts.events import ExperimentChanged, ExperimentExposed, ExperimentParameter, ExperimentStatus


def assign_variant(experiment_id: str, session_id: str, weights: Sequence[tuple[str, int]]) -> str:
    """The variant of a session: deterministic, sticky, spread by the weights (a weight of 0 gets none)."""
    total = sum(w for _, w in weights)
    if total <= 0:
        raise ValueError("an experiment needs a variant with a positive weight")
    digest = hashlib.sha256(f"{experiment_id}\x1f{session_id}".encode()).digest()
    point = int.from_bytes(digest[:8], "big") * total >> 64  # uniform integer in [0, total)
    for name, weight in weights:
        if point < weight:
            return name
        point -= weight
    raise AssertionError("unreachable: point < total")


def exposure_event_id(experiment_id: str, session_id: str) -> str:
    """One ExperimentExposed per session and experiment: repeats carry the same CloudEvents id."""
    return derived_event_id("experiment-exposed", experiment_id, session_id)


@dataclass(frozen=True)
class Assignment:
    experiment_id: str
    revision: int
    parameter: ExperimentParameter
    variant: str
    value: str
    control: bool  # the first variant is the control


def assignment_for(experiment: ExperimentChanged, session_id: str) -> Assignment:
    name = assign_variant(experiment.experiment_id, session_id, [(v.name, v.weight) for v in experiment.variants])
    variant = next(v for v in experiment.variants if v.name == name)
    return Assignment(
        experiment_id=experiment.experiment_id,
        revision=experiment.revision,
        parameter=experiment.parameter,
        variant=name,
        value=variant.value,
        control=name == experiment.variants[0].name,
    )


Encode = Callable[..., OutgoingRecord]
Record = Callable[[OutgoingRecord], Awaitable[None]]


class ExperimentBook:
    """The running experiments a service honours (read model of ExperimentChanged), and exposures."""

    def __init__(
        self,
        collection: Any,
        encode: Encode,
        record: Record,
        *,
        refresh_s: float = 1.0,
        remember_exposures: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.collection = collection
        self.encode = encode
        self.record = record
        self.refresh_s = refresh_s
        self.clock = clock
        self._running: list[ExperimentChanged] = []
        self._loaded_at: float | None = None
        # Exposures this process recorded lately: saves outbox writes; a forgotten one is only recorded
        # again, with the same event id, and collapses downstream.
        self._recorded: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._remember = remember_exposures

    async def apply(self, event: ExperimentChanged, *_: Any) -> None:
        """Consumer handler: keep the highest revision (late or repeated events change nothing)."""
        doc = {"revision": event.revision, "definition": event.model_dump(mode="json")}
        result = await self.collection.update_one(
            {"_id": event.experiment_id, "revision": {"$lt": event.revision}}, {"$set": doc}
        )
        if not result.matched_count:
            try:
                await self.collection.insert_one({"_id": event.experiment_id, **doc})
            except DuplicateKeyError:
                return  # the stored revision is as new or newer
        self._loaded_at = None  # this replica sees its own change at once

    async def running(self) -> list[ExperimentChanged]:
        now = self.clock()
        if self._loaded_at is None or now - self._loaded_at >= self.refresh_s:
            docs = [d async for d in self.collection.find({"definition.status": ExperimentStatus.RUNNING.value})]
            experiments = [ExperimentChanged.model_validate(d["definition"]) for d in docs]
            self._running = sorted(experiments, key=lambda e: e.started_at or datetime.min.replace(tzinfo=UTC))
            self._loaded_at = now
        return self._running

    async def assign(
        self, parameter: ExperimentParameter, session_id: str | None, customer_id: str | None = None
    ) -> Assignment | None:
        """The session's variant of the running experiment on `parameter` (the earliest started, when
        several), recording the exposure once; None when none runs or there is no session."""
        if not session_id:
            return None
        experiment = next((e for e in await self.running() if e.parameter == parameter), None)
        if experiment is None:
            return None
        assignment = assignment_for(experiment, session_id)
        key = (experiment.experiment_id, session_id)
        if key not in self._recorded:
            event: Event = ExperimentExposed(
                occurred_at=datetime.now(UTC),
                session_id=session_id,
                customer_id=customer_id,
                experiment_id=experiment.experiment_id,
                revision=experiment.revision,
                variant=assignment.variant,
                parameter=parameter,
            )
            await self.record(self.encode(event, event_id=exposure_event_id(experiment.experiment_id, session_id)))
            self._recorded[key] = None
            if len(self._recorded) > self._remember:
                self._recorded.popitem(last=False)
        return assignment
