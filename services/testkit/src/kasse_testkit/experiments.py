"""What a service's experiment test on the stack needs: the running experiment to publish, the sessions
and the variant the kit assigns each, and the check that each session was exposed exactly once."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from kasse_common.experiments import assign_variant, exposure_event_id
from kasse_contracts.events import (
    ExperimentChanged,
    ExperimentExposed,
    ExperimentMetric,
    ExperimentParameter,
    ExperimentStatus,
    Variant,
)
from kasse_testkit.kafka import TopicReader
from kasse_testkit.samples import now


def experiment_changed(
    experiment_id: str,
    parameter: ExperimentParameter,
    variants: Sequence[tuple[str, int, str]],
    **kw: Any,
) -> ExperimentChanged:
    """A running experiment (revision 1, conversion rate) on `parameter`; variants as (name, weight, value)."""
    values: dict[str, Any] = {
        "occurred_at": now(),
        "experiment_id": experiment_id,
        "revision": 1,
        "name": experiment_id,
        "parameter": parameter,
        "variants": [Variant(name=name, weight=weight, value=value) for name, weight, value in variants],
        "primary_metric": ExperimentMetric.CONVERSION_RATE,
        "status": ExperimentStatus.RUNNING,
        "baseline": 0.1,
        "minimum_detectable_effect": 0.2,
        "started_at": now(),
    }
    values.update(kw)
    return ExperimentChanged(**values)


def sessions_by_variant(
    experiment_id: str, weights: Sequence[tuple[str, int]], prefix: str, count: int
) -> dict[str, str]:
    """`count` session ids and the variant the kit assigns each; every variant is among them (else the test
    would not see the variants differ)."""
    variant_of = {s: assign_variant(experiment_id, s, list(weights)) for s in (f"{prefix}-{i}" for i in range(count))}
    assert set(variant_of.values()) == {name for name, _ in weights}, variant_of
    return variant_of


async def exposed_once_each(
    exposures: TopicReader, experiment_id: str, variant_of: Mapping[str, str]
) -> list[ExperimentExposed]:
    """Wait for the exposures of the sessions in `variant_of`; each session has exactly one (the kit's event
    id of experiment and session), none other has one, and each names the session's variant."""
    records = await exposures.wait_for(lambda r: r.event_type == ExperimentExposed.event_type, count=len(variant_of))
    seen = Counter(r.headers["ce_id"] for r in records)
    expected = Counter({exposure_event_id(experiment_id, s): 1 for s in variant_of})
    assert seen == expected, f"exposure ids seen {dict(seen)}, expected one each of {dict(expected)}"
    events = [e for e in exposures.events(ExperimentExposed) if isinstance(e, ExperimentExposed)]
    for event in events:
        assert event.experiment_id == experiment_id and event.variant == variant_of[event.session_id], event
    return events
