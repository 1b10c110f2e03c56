"""The compatibility check: breaking changes within a version are caught, additive ones pass.

The real gate is `test_current_models_are_compatible_with_the_committed_schemas`; the others prove
the check catches each kind of breaking change, on modified copies of real models.
"""

from __future__ import annotations

import copy
import subprocess
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import pytest
from pydantic import Field, create_model

from kasse_contracts import compat
from kasse_contracts.base import Event, Identifier, OpenEnum
from kasse_contracts.codegen import event_schema, render_json, topics_document
from kasse_contracts.events import OrderCancelled, PaymentFailed, ProductChanged

pytestmark = pytest.mark.unit

CONTRACTS = Path(__file__).resolve().parents[1]


def variant(
    model: type[Event],
    *,
    drop: tuple[str, ...] = (),
    fields: dict[str, Any] | None = None,
    classvars: dict[str, str] | None = None,
) -> type[Event]:
    """A copy of `model` with fields dropped, replaced or added, as a developer would edit it."""
    definitions: dict[str, Any] = {n: (f.annotation, f) for n, f in model.model_fields.items() if n not in drop}
    definitions.update(fields or {})
    new = create_model(model.__name__, __base__=Event, __doc__=model.__doc__, **definitions)
    for name in ("event_type", "topic", "key_field", "ga4_event"):
        setattr(new, name, (classvars or {}).get(name, getattr(model, name)))
    return new


def breaking(old: type[Event], new: type[Event]) -> list[tuple[str, str]]:
    findings = compat.compare_schemas(event_schema(old), event_schema(new))
    return [(f.path, f.kind) for f in findings if f.breaking]


class NarrowReason(OpenEnum):
    STOCK_REJECTED = "stock_rejected"
    PAYMENT_FAILED = "payment_failed"
    CUSTOMER_REQUEST = "customer_request"
    PAYMENT_TIMEOUT = "payment_timeout"


class WiderReason(OpenEnum):
    STOCK_REJECTED = "stock_rejected"
    PAYMENT_FAILED = "payment_failed"
    FRAUD_SUSPECTED = "fraud_suspected"
    CUSTOMER_REQUEST = "customer_request"
    PAYMENT_TIMEOUT = "payment_timeout"
    DUPLICATE = "duplicate"


def test_the_unchanged_model_has_no_findings() -> None:
    assert compat.compare_schemas(event_schema(OrderCancelled), event_schema(variant(OrderCancelled))) == []


def test_removed_field_is_breaking() -> None:
    assert breaking(OrderCancelled, variant(OrderCancelled, drop=("detail",))) == [("detail", compat.REMOVED_FIELD)]


def test_new_required_field_is_breaking() -> None:
    new = variant(PaymentFailed, fields={"risk_score": (int, ...)})
    assert breaking(PaymentFailed, new) == [("risk_score", compat.NEWLY_REQUIRED)]


def test_optional_field_made_required_is_breaking() -> None:
    new = variant(PaymentFailed, fields={"message": (str, ...)})
    assert breaking(PaymentFailed, new) == [("message", compat.MADE_REQUIRED)]


def test_required_field_made_optional_is_breaking() -> None:
    new = variant(PaymentFailed, fields={"reason": (str, "card_declined")})
    assert breaking(PaymentFailed, new) == [("reason", compat.MADE_OPTIONAL)]


def test_changed_type_is_breaking() -> None:
    new = variant(OrderCancelled, fields={"was_paid": (str, "no")})
    findings = compat.compare_schemas(event_schema(OrderCancelled), event_schema(new))
    assert [(f.path, f.kind, f.message) for f in findings if f.breaking] == [
        ("was_paid", compat.TYPE_CHANGED, "type changed from boolean to string")
    ]


def test_nullable_made_non_nullable_is_breaking() -> None:
    new = variant(PaymentFailed, fields={"decline_code": (str, "")})
    assert breaking(PaymentFailed, new) == [("decline_code", compat.TYPE_CHANGED)]


def test_changed_type_inside_a_nested_model_is_breaking() -> None:
    """Money.amount becoming a float is found through the $ref; loosened constraints are not breaking."""
    from kasse_contracts.base import ContractModel

    class Money(ContractModel):
        amount: float
        currency: str

    new = variant(OrderCancelled, fields={"total": (Money, ...)})
    assert breaking(OrderCancelled, new) == [("total.amount", compat.TYPE_CHANGED)]


def test_removed_enum_value_is_breaking() -> None:
    new = variant(OrderCancelled, fields={"reason": (NarrowReason, ...)})
    findings = compat.compare_schemas(event_schema(OrderCancelled), event_schema(new))
    assert [(f.path, f.kind, f.message) for f in findings if f.breaking] == [
        ("reason", compat.ENUM_NARROWED, "enum value(s) removed: fraud_suspected")
    ]


class ClosedReason(StrEnum):
    STOCK_REJECTED = "stock_rejected"
    PAYMENT_FAILED = "payment_failed"
    FRAUD_SUSPECTED = "fraud_suspected"
    CUSTOMER_REQUEST = "customer_request"
    PAYMENT_TIMEOUT = "payment_timeout"


class WiderClosedReason(StrEnum):
    STOCK_REJECTED = "stock_rejected"
    PAYMENT_FAILED = "payment_failed"
    FRAUD_SUSPECTED = "fraud_suspected"
    PAYMENT_TIMEOUT = "payment_timeout"
    CUSTOMER_REQUEST = "customer_request"
    DUPLICATE = "duplicate"


def test_value_added_to_a_closed_enum_is_breaking() -> None:
    """Readers of a closed enum reject the new value (a strict model would dead-letter it)."""
    old = variant(OrderCancelled, fields={"reason": (ClosedReason, ...)})
    new = variant(OrderCancelled, fields={"reason": (WiderClosedReason, ...)})
    assert breaking(old, new) == [("reason", compat.ENUM_WIDENED_CLOSED)]


def test_opening_a_closed_enum_passes_and_closing_an_open_one_breaks() -> None:
    closed = variant(OrderCancelled, fields={"reason": (ClosedReason, ...)})
    opened = compat.compare_schemas(event_schema(closed), event_schema(OrderCancelled))
    assert [(f.path, f.kind, f.breaking) for f in opened] == [("reason", compat.ENUM_OPENED, False)]
    assert breaking(OrderCancelled, closed) == [("reason", compat.ENUM_NARROWED)]


def test_a_value_added_after_opening_is_still_breaking_for_readers_of_the_closed_version() -> None:
    """Rolling deploy: readers built on the closed version still run, so a value may only be added once
    the previous version was already open."""
    closed = variant(OrderCancelled, fields={"reason": (ClosedReason, ...)})
    opened_and_wider = variant(OrderCancelled, fields={"reason": (WiderReason, ...)})
    assert breaking(closed, opened_and_wider) == [("reason", compat.ENUM_WIDENED_CLOSED)]


def test_open_enum_schema_accepts_any_string_and_lists_the_known_values() -> None:
    schema = event_schema(OrderCancelled)
    reason = schema["$defs"]["CancellationReason"]
    assert "enum" not in reason and reason["type"] == "string" and reason[compat.X_OPEN_ENUM] is True
    assert reason[compat.X_KNOWN_VALUES] == [
        "stock_rejected",
        "payment_failed",
        "fraud_suspected",
        "customer_request",
        "payment_timeout",
    ]


def test_tighter_constraint_is_breaking() -> None:
    new = variant(ProductChanged, fields={"revision": (Annotated[int, Field(ge=2)], ...)})
    findings = [f for f in compat.compare_schemas(event_schema(ProductChanged), event_schema(new)) if f.breaking]
    assert [(f.path, f.kind, f.message) for f in findings] == [
        ("revision", compat.CONSTRAINT_NARROWED, "minimum 1 -> 2")
    ]


@pytest.mark.parametrize(
    ("classvar", "value", "keyword"),
    [
        ("event_type", "io.kasse.cart.OrderCancelled.v2", "x-kasse-ce-type"),
        ("topic", "kasse.carts.v1", "x-kasse-topic"),
        ("key_field", "session_id", "x-kasse-key"),
    ],
)
def test_changed_routing_metadata_is_breaking(classvar: str, value: str, keyword: str) -> None:
    new = variant(OrderCancelled, classvars={classvar: value})
    findings = [f for f in compat.compare_schemas(event_schema(OrderCancelled), event_schema(new)) if f.breaking]
    assert len(findings) == 1
    assert (findings[0].kind, findings[0].path) == (compat.METADATA_CHANGED, "")
    assert findings[0].message.startswith(keyword) and value in findings[0].message


def test_additive_changes_pass() -> None:
    new = variant(
        OrderCancelled,
        fields={
            "reason": (WiderReason, ...),
            "refund_id": (Identifier | None, None),
            "note": (str, ""),
        },
    )
    findings = compat.compare_schemas(event_schema(OrderCancelled), event_schema(new))
    assert [f for f in findings if f.breaking] == []
    assert sorted((f.path, f.kind) for f in findings) == [
        ("note", compat.NEW_OPTIONAL),
        ("reason", compat.ENUM_WIDENED),
        ("refund_id", compat.NEW_OPTIONAL),
    ]


# --------------------------------------------------------------------------------- artefact sets


@pytest.fixture
def committed() -> dict[str, dict[str, Any]]:
    return compat.load_artefacts(CONTRACTS)


def test_current_models_are_compatible_with_the_committed_schemas(committed: dict[str, dict[str, Any]]) -> None:
    assert len(committed) >= 22, "no committed schemas: run `make contracts`"
    findings = compat.compare_artefacts(committed, compat.current_artefacts())
    broken = [str(f) for f in findings if f.breaking]
    assert not broken, (
        "breaking change(s) to published contracts; add a .v2 event type and topic instead:\n" + "\n".join(broken)
    )


def test_removed_event_type_and_topic_changes_are_breaking(committed: dict[str, dict[str, Any]]) -> None:
    current = copy.deepcopy(committed)
    del current["schemas/PaymentFailed.v1.json"]
    topics = current["schemas/topics.json"]["topics"]
    topics["kasse.payments.v1"]["event_types"].remove("io.kasse.payment.PaymentFailed.v1")
    topics["kasse.orders.v1"]["partitions"] = 3
    topics["kasse.carts.v1"]["key"] = "session_id"
    topics["kasse.shipping-methods.v1"]["cleanup_policy"] = "delete"
    del topics["kasse.stock.v1"]
    found = {(f.subject, f.path, f.kind) for f in compat.compare_artefacts(committed, current) if f.breaking}
    assert found == {
        ("PaymentFailed.v1.json", "", compat.EVENT_REMOVED),
        ("kasse.payments.v1", "event_types", compat.TOPIC_EVENT_REMOVED),
        ("kasse.orders.v1", "partitions", compat.PARTITIONS_DECREASED),
        ("kasse.carts.v1", "key", compat.TOPIC_KEY_CHANGED),
        ("kasse.shipping-methods.v1", "cleanup_policy", compat.CLEANUP_CHANGED),
        ("kasse.stock.v1", "", compat.TOPIC_REMOVED),
    }


def test_new_event_type_topic_and_partitions_pass(committed: dict[str, dict[str, Any]]) -> None:
    current = copy.deepcopy(committed)
    current["schemas/OrderAmended.v1.json"] = {**current["schemas/OrderCancelled.v1.json"], "title": "OrderAmended"}
    topics = current["schemas/topics.json"]["topics"]
    topics["kasse.orders.v1"]["event_types"].append("io.kasse.cart.OrderAmended.v1")
    topics["kasse.orders.v1"]["partitions"] = 12
    topics["kasse.orders.v2"] = {**topics["kasse.orders.v1"], "event_types": ["io.kasse.cart.OrderPlaced.v2"]}
    findings = compat.compare_artefacts(committed, current)
    assert [f for f in findings if f.breaking] == []
    assert {f.kind for f in findings} == {
        compat.EVENT_ADDED,
        compat.TOPIC_EVENT_ADDED,
        compat.PARTITIONS_INCREASED,
        compat.TOPIC_ADDED,
    }


def test_topics_document_matches_committed(committed: dict[str, dict[str, Any]]) -> None:
    assert compat.compare_topics(committed["schemas/topics.json"], topics_document()) == []


def test_cli_exits_1_on_a_breaking_change(tmp_path: Path, committed: dict[str, dict[str, Any]]) -> None:
    """Against a baseline that still has a field the models no longer have (a removed field)."""
    schemas = tmp_path / "schemas"
    schemas.mkdir()
    for path, doc in committed.items():
        if path == "schemas/OrderCancelled.v1.json":
            doc = copy.deepcopy(doc)
            doc["properties"]["legacy_code"] = {"type": "string"}
        (tmp_path / path).write_text(render_json(doc), encoding="utf-8")
    run = subprocess.run(
        [sys.executable, "-m", "kasse_contracts.compat", "--against", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 1, run.stdout + run.stderr
    assert "BREAKING removed-field OrderCancelled.v1.json:legacy_code: field removed" in run.stdout
    ok = subprocess.run(
        [sys.executable, "-m", "kasse_contracts.compat", "--against", str(CONTRACTS)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr


def test_baseline_can_come_from_a_git_revision(tmp_path: Path, committed: dict[str, dict[str, Any]]) -> None:
    """`--git-ref` reads the schemas as committed, not as they are in the working tree."""
    repo = tmp_path / "repo"
    contracts = repo / "contracts"
    (contracts / "schemas").mkdir(parents=True)
    for path, doc in committed.items():
        (contracts / path).write_text(render_json(doc), encoding="utf-8")

    def git(*args: str) -> None:
        subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
            cwd=repo,
            check=True,
            capture_output=True,
        )

    git("init", "-q")
    git("add", "contracts")
    git("commit", "-q", "-m", "baseline")
    (contracts / "schemas" / "PaymentFailed.v1.json").unlink()  # working tree only
    assert "schemas/PaymentFailed.v1.json" not in compat.load_artefacts(contracts)
    assert compat.load_artefacts_at_git_ref("HEAD", contracts) == committed


def test_history_compares_against_each_committed_version(tmp_path: Path, committed: dict[str, dict[str, Any]]) -> None:
    """`--history N` checks the models against the last N committed versions, so a breaking change
    that was committed (and regenerated) is still caught after the fact, as in CI on main."""
    repo = tmp_path / "repo"
    contracts = repo / "contracts"
    (contracts / "schemas").mkdir(parents=True)

    def git(*args: str) -> None:
        subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
            cwd=repo,
            check=True,
            capture_output=True,
        )

    def commit(docs: dict[str, dict[str, Any]], message: str) -> None:
        for path, doc in docs.items():
            (contracts / path).write_text(render_json(doc), encoding="utf-8")
        git("add", "contracts")
        git("commit", "-q", "-m", message)

    git("init", "-q")
    older = copy.deepcopy(committed)
    older["schemas/OrderCancelled.v1.json"]["properties"]["legacy_code"] = {"type": "string"}
    commit(older, "a version with a field the models dropped since")
    commit(committed, "the current version, regenerated")
    assert len(compat.schema_revisions(contracts, 5)) == 2

    def run(count: int) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "kasse_contracts.compat", "--against", str(contracts), "--history", str(count)],
            capture_output=True,
            text=True,
            check=False,
        )

    only_latest = run(1)
    assert only_latest.returncode == 0, only_latest.stdout + only_latest.stderr
    both = run(2)
    assert both.returncode == 1, both.stdout + both.stderr
    assert "BREAKING removed-field OrderCancelled.v1.json:legacy_code" in both.stdout
