"""The experiments the storefront honours (issue 17: "the storefront for layout"): the checkout layout
and storefront template variants.

The definitions and the exposures work as in the cart: the kit's `ExperimentBook` keeps the running
experiments (read model of `ExperimentChanged`, in the storefront's own `experiments` collection) and
records `ExperimentExposed` once per session (event id derived from experiment and session, through
the outbox); the variant is the kit's `assign_variant` of the session id — the same id the storefront
sends the services as X-Session-Id, so every service computes the same variant without a call.

A page never fails for an experiment: when the book cannot answer in time, the session sees the
control layout and nothing is recorded (a later page records the exposure).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from kasse_common.experiments import Assignment
from kasse_contracts.events import ExperimentParameter

log = logging.getLogger(__name__)


class Assigner(Protocol):
    async def assign(
        self, parameter: ExperimentParameter, session_id: str | None, customer_id: str | None = None
    ) -> Assignment | None: ...


class Layouts:
    def __init__(self, book: Assigner | None, timeout_s: float) -> None:
        self.book = book
        self.timeout_s = timeout_s

    async def variant(self, parameter: ExperimentParameter, session_id: str) -> Assignment | None:
        """The session's variant of the running experiment on `parameter` (exposure recorded once), or
        None: no experiment, or the book did not answer (the control layout then)."""
        if self.book is None:
            return None
        try:
            return await asyncio.wait_for(self.book.assign(parameter, session_id), self.timeout_s)
        except Exception as exc:  # a page never fails for an experiment
            log.warning("experiment assignment skipped", extra={"parameter": parameter.value, "reason": repr(exc)})
            return None

    async def value(self, parameter: ExperimentParameter, session_id: str, default: str) -> str:
        assignment = await self.variant(parameter, session_id)
        return assignment.value if assignment is not None and assignment.value else default
