"""The kit's assignment rule: deterministic, sticky, spread by the weights."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

import pytest

from kasse_common.experiments import assign_variant, assignment_for, exposure_event_id
from kasse_contracts.events import (
    ExperimentChanged,
    ExperimentMetric,
    ExperimentParameter,
    ExperimentStatus,
    Variant,
)

pytestmark = pytest.mark.unit


def test_the_same_session_always_gets_the_same_variant() -> None:
    weights = [("control", 50), ("low", 50)]
    first = [assign_variant("exp_1", f"sess_{i}", weights) for i in range(500)]
    again = [assign_variant("exp_1", f"sess_{i}", list(weights)) for i in range(500)]
    assert first == again
    assert set(first) == {"control", "low"}


def test_sessions_spread_by_the_weights() -> None:
    counts = Counter(assign_variant("exp_w", f"s{i}", [("a", 70), ("b", 20), ("c", 10)]) for i in range(20_000))
    assert counts["a"] / 20_000 == pytest.approx(0.70, abs=0.015)
    assert counts["b"] / 20_000 == pytest.approx(0.20, abs=0.015)
    assert counts["c"] / 20_000 == pytest.approx(0.10, abs=0.015)


def test_a_zero_weight_variant_gets_nobody_and_no_weight_at_all_is_refused() -> None:
    assert {assign_variant("e", f"s{i}", [("a", 0), ("b", 1)]) for i in range(200)} == {"b"}
    with pytest.raises(ValueError):
        assign_variant("e", "s", [("a", 0), ("b", 0)])


def test_experiments_assign_independently() -> None:
    """Two experiments on the same sessions: the variant in one says nothing about the other."""
    weights = [("control", 1), ("variant", 1)]
    pairs = Counter(
        (assign_variant("exp_a", f"s{i}", weights), assign_variant("exp_b", f"s{i}", weights)) for i in range(8000)
    )
    for n in pairs.values():
        assert n / 8000 == pytest.approx(0.25, abs=0.02)


def test_assignment_carries_the_variant_value_and_the_exposure_id_is_derived() -> None:
    exp = ExperimentChanged(
        occurred_at=datetime(2026, 12, 1, tzinfo=UTC),
        experiment_id="exp_fs",
        revision=3,
        name="free shipping",
        parameter=ExperimentParameter.FREE_SHIPPING_THRESHOLD,
        variants=[Variant(name="control", weight=1, value="5000"), Variant(name="low", weight=1, value="3000")],
        primary_metric=ExperimentMetric.CONVERSION_RATE,
        status=ExperimentStatus.RUNNING,
        baseline=0.1,
        minimum_detectable_effect=0.2,
    )
    seen = {assignment_for(exp, f"s{i}").value for i in range(100)}
    assert seen == {"5000", "3000"}
    a = assignment_for(exp, "s1")
    assert a.control == (a.variant == "control") and a.revision == 3
    assert exposure_event_id("exp_fs", "s1") == exposure_event_id("exp_fs", "s1") != exposure_event_id("exp_fs", "s2")
