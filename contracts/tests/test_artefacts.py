"""The committed artefacts (schemas/, asyncapi.yaml) are exactly what the generator writes."""

from __future__ import annotations

import difflib
import json
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from kasse_contracts import codegen
from kasse_contracts.envelope import REQUIRED_HEADERS
from kasse_contracts.events import ALL_EVENTS
from kasse_contracts.examples import EXAMPLES
from kasse_contracts.topics import TOPICS

pytestmark = pytest.mark.unit

CONTRACTS = Path(__file__).resolve().parents[1]
REGENERATE = "run `make contracts` (uv run python -m kasse_contracts.codegen) and commit the result"


@pytest.fixture(scope="module")
def generated() -> dict[str, str]:
    return codegen.generate_artefacts()


@pytest.fixture(scope="module")
def asyncapi(generated: dict[str, str]) -> dict[str, Any]:
    doc = yaml.safe_load(generated[codegen.ASYNCAPI_FILE])
    assert isinstance(doc, dict)
    return doc


def test_committed_artefacts_are_up_to_date(generated: dict[str, str]) -> None:
    stale = codegen.stale_files(CONTRACTS, generated)
    if not stale:
        return
    committed = codegen.read_artefacts(CONTRACTS)
    report: list[str] = []
    for path in stale:
        if path not in committed:
            report.append(f"--- {path}: missing")
        elif path not in generated:
            report.append(f"--- {path}: no longer generated (delete it)")
        else:
            diff = difflib.unified_diff(
                committed[path].splitlines(),
                generated[path].splitlines(),
                f"committed/{path}",
                f"models/{path}",
                lineterm="",
            )
            report.extend(list(diff)[:60])
    pytest.fail(f"contract artefacts are stale: {REGENERATE}\n" + "\n".join(report), pytrace=False)


def test_generation_is_deterministic(generated: dict[str, str]) -> None:
    assert codegen.generate_artefacts() == generated
    for path, text in generated.items():
        assert text.endswith("\n") and not text.endswith("\n\n"), path
        if path.endswith(".json"):
            assert text == json.dumps(json.loads(text), indent=2, sort_keys=True, ensure_ascii=False) + "\n", path


def test_one_schema_per_event(generated: dict[str, str]) -> None:
    event_files = {p for p in generated if p.endswith(".v1.json")}
    assert event_files == {f"schemas/{e.__name__}.v1.json" for e in ALL_EVENTS}


@pytest.mark.parametrize("event", ALL_EVENTS, ids=[e.__name__ for e in ALL_EVENTS])
def test_event_schema_documents_the_wire_contract(event: Any, generated: dict[str, str]) -> None:
    schema = json.loads(generated[codegen.schema_path(event)])
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] == f"urn:kasse:schema:{event.event_type}"
    assert schema["title"] == event.__name__
    assert schema["description"]
    assert schema["x-kasse-ce-type"] == event.event_type
    assert schema["x-kasse-topic"] == event.topic
    assert schema["x-kasse-key"] == event.key_field
    assert schema["x-kasse-ga4-event"] == event.ga4_event
    assert schema["examples"] == [EXAMPLES[event].model_dump(mode="json")]
    # Tolerant readers: unknown fields must stay allowed for additive evolution.
    assert "additionalProperties" not in schema
    assert "occurred_at" in schema["required"]


def test_schemas_are_validation_mode_so_defaulted_fields_are_optional(generated: dict[str, str]) -> None:
    schema = json.loads(generated["schemas/OrderCancelled.v1.json"])
    assert set(schema["required"]) == {"occurred_at", "session_id", "order_id", "reason", "total"}
    assert schema["properties"]["was_paid"] == {"default": False, "title": "Was Paid", "type": "boolean"}
    money = schema["$defs"]["Money"]["properties"]
    assert money["amount"]["type"] == "integer" and money["amount"]["minimum"] == 0
    assert money["currency"]["pattern"] == "^[A-Z]{3}$"


def test_envelope_schema_lists_the_required_headers(generated: dict[str, str]) -> None:
    schema = json.loads(generated[codegen.ENVELOPE_FILE])
    assert schema["required"] == list(REQUIRED_HEADERS)
    assert schema["properties"]["ce_specversion"]["const"] == "1.0"
    assert schema["properties"]["content-type"]["const"] == "application/json"


def test_topics_document_is_computed_from_the_registry(generated: dict[str, str]) -> None:
    doc = json.loads(generated[codegen.TOPICS_FILE])["topics"]
    assert list(doc) == sorted(TOPICS)
    methods = doc["kasse.shipping-methods.v1"]
    assert methods == {
        "cleanup_policy": "compact",
        "description": TOPICS["kasse.shipping-methods.v1"].description,
        "event_types": ["io.kasse.shipping.ShippingMethodsPublished.v1"],
        "key": "rate_table_id",
        "partitions": 1,
        "retention_ms": -1,
    }


# ---------------------------------------------------------------------------------------- AsyncAPI


def test_asyncapi_yaml_is_the_document(asyncapi: dict[str, Any]) -> None:
    """Our YAML writer's output parses (PyYAML) back to exactly the generated document."""
    assert asyncapi == json.loads(json.dumps(codegen.asyncapi_document()))
    assert asyncapi["asyncapi"] == "3.0.0"
    assert asyncapi["servers"]["kafka"]["protocol"] == "kafka"


def test_asyncapi_channels_are_the_topics(asyncapi: dict[str, Any]) -> None:
    channels = asyncapi["channels"]
    assert sorted(c["address"] for c in channels.values()) == sorted(TOPICS)
    for channel in channels.values():
        topic = TOPICS[channel["address"]]
        kafka = channel["bindings"]["kafka"]
        assert kafka["partitions"] == topic.partitions
        assert kafka["topicConfiguration"] == {
            "cleanup.policy": [topic.cleanup_policy],
            "retention.ms": topic.retention_ms,
        }
        assert channel["x-kasse-key"] == topic.key
        listed = {asyncapi["components"]["messages"][m]["x-kasse-ce-type"] for m in channel["messages"]}
        assert listed == set(topic.event_types)


def test_asyncapi_messages_and_producers(asyncapi: dict[str, Any]) -> None:
    messages = asyncapi["components"]["messages"]
    assert set(messages) == {e.__name__ for e in ALL_EVENTS}
    producers = {
        op["messages"][0]["$ref"].rsplit("/", 1)[1]: op["x-kasse-producer"]
        for op in asyncapi["operations"].values()
        if op["action"] == "send"
    }
    assert producers == {
        "ProductViewed": "catalog",
        "ProductSearched": "catalog",
        "ProductChanged": "catalog",
        "ReviewSubmitted": "catalog",
        "StockReserved": "catalog",
        "StockRejected": "catalog",
        "CartUpdated": "cart",
        "CartAbandoned": "cart",
        "CheckoutStarted": "cart",
        "OrderPlaced": "cart",
        "OrderCancelled": "cart",
        "PaymentCaptured": "payment",
        "PaymentFailed": "payment",
        "PaymentRefunded": "payment",
        "InvoiceIssued": "payment",
        "CreditNoteIssued": "payment",
        "ShippingMethodsPublished": "shipping",
        "ExperimentChanged": "metrics",
        # Any service that honours an experiment's parameter (cart, catalog, storefront), through the
        # kit's helper; ce_source names the one that did.
        "ExperimentExposed": "experiments",
        "ShipmentCreated": "shipping",
        "ShipmentDispatched": "shipping",
        "ShipmentDelivered": "shipping",
        "ReturnRequested": "shipping",
        "ReturnReceived": "shipping",
        "ShipmentCancelled": "shipping",
        "CancellationRefused": "shipping",
        "WebhookEndpointDisabled": "webhooks",
        "WebhookEndpointEnabled": "webhooks",
    }
    for event in ALL_EVENTS:
        message = messages[event.__name__]
        assert message["payload"] == {"$ref": f"#/components/schemas/{event.__name__}"}
        assert message["headers"]["allOf"][0] == {"$ref": "#/components/schemas/CloudEventHeaders"}
        assert message["bindings"]["kafka"]["key"]["type"] == "string"
        example = message["examples"][0]
        assert example["payload"] == EXAMPLES[event].model_dump(mode="json")
        assert example["headers"]["ce_type"] == event.event_type
        assert example["headers"]["ce_subject"] == EXAMPLES[event].message_key()
        assert set(REQUIRED_HEADERS) <= set(example["headers"])


def test_asyncapi_references_all_resolve(asyncapi: dict[str, Any]) -> None:
    def refs(node: Any) -> list[str]:
        if isinstance(node, dict):
            return [node["$ref"]] if "$ref" in node else [r for v in node.values() for r in refs(v)]
        if isinstance(node, list):
            return [r for v in node for r in refs(v)]
        return []

    found = refs(asyncapi)
    assert found
    for ref in found:
        assert ref.startswith("#/"), ref
        target: Any = asyncapi
        for part in ref[2:].split("/"):
            assert part in target, f"dangling reference {ref}"
            target = target[part]


@pytest.mark.parametrize(
    "text",
    [
        "yes",
        "No",
        "null",
        "1.0",
        "3.0.0",
        "0123",
        "- dash",
        "a: b",
        "a #b",
        "#x",
        "",
        " lead",
        "trail ",
        "é ü",
        "x\ny",
        '"quoted"',
        "it's",
        "*star",
        "&anchor",
        "!tag",
        "{a}",
        "[a]",
        "@at",
        "`tick`",
        "%pct",
        "on",
        "~",
    ],
)
def test_yaml_writer_quotes_what_must_be_quoted(text: str) -> None:
    rendered = codegen.render_yaml({"k": text, text or "empty": [text, {"n": 1}], "f": 4.6, "b": False, "z": None})
    assert yaml.safe_load(rendered) == {"k": text, text or "empty": [text, {"n": 1}], "f": 4.6, "b": False, "z": None}


# ------------------------------------------------------------------------------------------- wheel


def test_the_wheel_ships_the_artefacts() -> None:
    config = tomllib.loads((CONTRACTS / "pyproject.toml").read_text(encoding="utf-8"))
    force = config["tool"]["hatch"]["build"]["targets"]["wheel"]["force-include"]
    assert force == {"schemas": "kasse_contracts/schemas", "asyncapi.yaml": "kasse_contracts/asyncapi.yaml"}
    for source in force:
        assert (CONTRACTS / source).exists(), source


def test_readme_documents_every_event_and_topic() -> None:
    readme = (CONTRACTS / "README.md").read_text(encoding="utf-8")
    for event in ALL_EVENTS:
        assert f"`{event.event_type}`" in readme, f"README.md does not document {event.event_type}"
        if event.ga4_event:
            assert f"`{event.ga4_event}`" in readme
    for topic in TOPICS.values():
        row = next((line for line in readme.splitlines() if line.startswith(f"| `{topic.name}` |")), None)
        assert row is not None, f"README.md has no row for topic {topic.name}"
        assert f"| `{topic.key}` | {topic.partitions} |" in row
        for event_type in topic.event_types:
            assert event_type.split(".")[3] in row
