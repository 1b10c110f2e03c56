"""Generate the published artefacts from the models: JSON Schemas and the AsyncAPI document.

Dev tooling only: no subscriber needs this module at runtime, nothing in the package imports it,
and it uses the standard library and pydantic only (it writes its YAML itself, deterministically).

    uv run python -m kasse_contracts.codegen            # write contracts/schemas/ and contracts/asyncapi.yaml
    uv run python -m kasse_contracts.codegen --check    # exit 1 when the committed files are stale

Writing refuses a breaking change to the committed schemas (see `kasse_contracts.compat`) unless
`--allow-breaking` is given: a breaking change belongs in a new `.v2` event type and topic.

Artefacts (paths relative to `contracts/`, all in sorted-key, stable formatting, with a trailing newline):
- `schemas/<EventClass>.<version>.json`: JSON Schema draft 2020-12 of each event payload (the Kafka
  record value), in pydantic's *validation* mode, i.e. what a reader accepts;
- `schemas/envelope.json`: JSON Schema of the Kafka record headers (the CloudEvents attributes);
- `schemas/topics.json`: the topic registry (key, partitions, retention, event types);
- `asyncapi.yaml`: one AsyncAPI 3.0.0 document for the whole system.
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import sys
import uuid
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

import kasse_contracts
from kasse_contracts import envelope
from kasse_contracts.base import Event
from kasse_contracts.events import ALL_EVENTS
from kasse_contracts.topics import TOPICS, Topic

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
SCHEMAS_DIR = "schemas"
ASYNCAPI_FILE = "asyncapi.yaml"
ENVELOPE_FILE = f"{SCHEMAS_DIR}/envelope.json"
TOPICS_FILE = f"{SCHEMAS_DIR}/topics.json"
KAFKA_BINDING_VERSION = "0.5.0"
ID_PREFIX = "urn:kasse:schema:"

X_CE_TYPE = "x-kasse-ce-type"
X_TOPIC = "x-kasse-topic"
X_KEY = "x-kasse-key"
X_GA4 = "x-kasse-ga4-event"
X_PRODUCER = "x-kasse-producer"

_EXAMPLE_NS = uuid.UUID("0b7e3a0e-5f44-4c55-9d0a-8c2f4f1d6b21")


# --------------------------------------------------------------------------------------------
# naming


def producer_of(event: type[Event]) -> str:
    """The service that publishes the event: the third segment of `io.kasse.<service>.<Name>.<vN>`."""
    return event.event_type.split(".")[2]


def version_of(event: type[Event]) -> str:
    return event.event_type.rsplit(".", 1)[1]


def schema_path(event: type[Event]) -> str:
    return f"{SCHEMAS_DIR}/{event.__name__}.{version_of(event)}.json"


def _doc(event: type[Event]) -> str:
    doc = event.__dict__.get("__doc__") or ""
    return " ".join(doc.split())


def _summary(event: type[Event]) -> str:
    return _doc(event).split(". ")[0].rstrip(".") + "."


# --------------------------------------------------------------------------------------------
# JSON Schemas


def event_schema(event: type[Event], example: Event | None = None) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of one event's payload, with Kasse's `x-kasse-*` keywords.

    Validation mode: the schema says what a reader accepts, which is the contract. Fields with a
    default are optional there, so a message from a producer built before an additive change
    (a new optional field) stays valid for a reader built after it.
    """
    schema = event.model_json_schema(mode="validation")
    schema.update(
        {
            "$schema": JSON_SCHEMA_DIALECT,
            "$id": f"{ID_PREFIX}{event.event_type}",
            "title": event.__name__,
            "description": _doc(event),
            X_CE_TYPE: event.event_type,
            X_TOPIC: event.topic,
            X_KEY: event.key_field,
            X_GA4: event.ga4_event,
            X_PRODUCER: producer_of(event),
        }
    )
    if example is not None:
        schema["examples"] = [example.model_dump(mode="json")]
    return schema


def envelope_schema() -> dict[str, Any]:
    """JSON Schema of the Kafka record headers: CloudEvents 1.0, Kafka binding, binary mode."""
    props: dict[str, Any] = {
        envelope.H_ID: {
            "type": "string",
            "minLength": 1,
            "description": "CloudEvents id: unique per event; readers deduplicate on it",
        },
        envelope.H_TYPE: {
            "type": "string",
            "minLength": 1,
            "description": "CloudEvents type, versioned (io.kasse.<service>.<Event>.v<N>): selects the payload schema",
        },
        envelope.H_SOURCE: {
            "type": "string",
            "minLength": 1,
            "description": f"CloudEvents source: the producing service, {envelope.SOURCE_PREFIX}<service>",
        },
        envelope.H_TIME: {
            "type": "string",
            "format": "date-time",
            "description": "CloudEvents time (RFC 3339): when the event was published; "
            "the payload's occurred_at is when the fact happened",
        },
        envelope.H_SPECVERSION: {"type": "string", "const": envelope.SPEC_VERSION},
        envelope.H_SUBJECT: {
            "type": "string",
            "minLength": 1,
            "description": "CloudEvents subject: the aggregate id, equal to the record key",
        },
        envelope.H_CONTENT_TYPE: {
            "type": "string",
            "const": envelope.CONTENT_TYPE,
            "description": "CloudEvents datacontenttype: the record value is JSON",
        },
        envelope.H_TRACEPARENT: {
            "type": "string",
            "pattern": "^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$",
            "description": "W3C trace context, when the producer was traced",
        },
        envelope.H_TRACESTATE: {"type": "string", "description": "W3C trace state, when present"},
    }
    return {
        "$schema": JSON_SCHEMA_DIALECT,
        "$id": f"{ID_PREFIX}envelope.v1",
        "title": "CloudEventHeaders",
        "description": "Kafka record headers of every Kasse event (UTF-8 strings): the CloudEvents 1.0 "
        "attributes in binary content mode as ce_<attribute>, plus content-type and W3C trace context. "
        "Readers ignore headers they do not know.",
        "type": "object",
        "properties": props,
        "required": list(envelope.REQUIRED_HEADERS),
    }


def _topic_entry(topic: Topic) -> dict[str, Any]:
    return {
        "key": topic.key,
        "description": topic.description,
        "partitions": topic.partitions,
        "retention_ms": topic.retention_ms,
        "cleanup_policy": topic.cleanup_policy,
        "event_types": list(topic.event_types),
    }


def topics_document() -> dict[str, Any]:
    return {
        "$comment": "Generated from kasse_contracts.topics by `make contracts`; do not edit.",
        "version": kasse_contracts.__version__,
        "topics": {name: _topic_entry(topic) for name, topic in TOPICS.items()},
    }


# --------------------------------------------------------------------------------------------
# AsyncAPI


def _channel_id(topic: str) -> str:
    return topic.removeprefix("kasse.")


def _hoist_defs(schema: dict[str, Any], into: dict[str, Any], name: str) -> dict[str, Any]:
    """Move `$defs` into AsyncAPI `components.schemas`, rewriting the references."""
    schema = copy.deepcopy(schema)
    defs = schema.pop("$defs", {})
    for key in ("$schema", "$id", "examples"):
        schema.pop(key, None)

    def rewrite(node: Any) -> Any:
        if isinstance(node, dict):
            return {
                k: (v.replace("#/$defs/", "#/components/schemas/") if k == "$ref" else rewrite(v))
                for k, v in node.items()
            }
        if isinstance(node, list):
            return [rewrite(v) for v in node]
        return node

    for def_name, definition in defs.items():
        definition = rewrite(definition)
        if def_name in into and into[def_name] != definition:
            raise ValueError(f"two different schemas are both named {def_name!r}; rename one model")
        into[def_name] = definition
    if name in into:
        raise ValueError(f"schema name {name!r} is used twice")
    into[name] = rewrite(schema)
    return {"$ref": f"#/components/schemas/{name}"}


def _key_schema(schema: dict[str, Any], key_field: str) -> dict[str, Any]:
    prop = schema["properties"][key_field]
    key = {k: v for k, v in prop.items() if k in ("type", "minLength", "maxLength", "pattern", "format")}
    key["description"] = f"The record key: the payload's {key_field} (UTF-8), also the ce_subject header"
    return key


def _example_headers(event: Event) -> dict[str, str]:
    cls = type(event)
    attributes = envelope.CloudEventAttributes(
        id=str(uuid.uuid5(_EXAMPLE_NS, cls.event_type)),
        type=cls.event_type,
        source=envelope.source_for(producer_of(cls)),
        time=event.occurred_at + timedelta(milliseconds=120),
        subject=event.message_key(),
        traceparent="00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    )
    return attributes.to_headers()


def asyncapi_document(examples: Mapping[type[Event], Event] | None = None) -> dict[str, Any]:
    if examples is None:
        from kasse_contracts.examples import EXAMPLES

        examples = EXAMPLES
    schemas: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    channels: dict[str, Any] = {}

    envelope_doc = {k: v for k, v in envelope_schema().items() if k not in ("$schema", "$id")}
    schemas["CloudEventHeaders"] = envelope_doc

    for topic in TOPICS.values():
        channels[_channel_id(topic.name)] = {
            "address": topic.name,
            "title": topic.name,
            "description": topic.description,
            "messages": {},
            "bindings": {
                "kafka": {
                    "topic": topic.name,
                    "partitions": topic.partitions,
                    "topicConfiguration": {
                        "cleanup.policy": [topic.cleanup_policy],
                        "retention.ms": topic.retention_ms,
                    },
                    "bindingVersion": KAFKA_BINDING_VERSION,
                }
            },
            X_KEY: topic.key,
        }

    for event in ALL_EVENTS:
        name = event.__name__
        schema = event_schema(event)
        payload_ref = _hoist_defs(schema, schemas, name)
        message: dict[str, Any] = {
            "name": name,
            "title": name,
            "summary": _summary(event),
            "description": _doc(event),
            "contentType": envelope.CONTENT_TYPE,
            "headers": {
                "allOf": [
                    {"$ref": "#/components/schemas/CloudEventHeaders"},
                    {
                        "type": "object",
                        "properties": {
                            envelope.H_TYPE: {"type": "string", "const": event.event_type},
                            envelope.H_SUBJECT: {
                                "type": "string",
                                "description": f"The payload's {event.key_field}",
                            },
                        },
                    },
                ]
            },
            "payload": payload_ref,
            "bindings": {
                "kafka": {"key": _key_schema(schema, event.key_field), "bindingVersion": KAFKA_BINDING_VERSION}
            },
            X_CE_TYPE: event.event_type,
            X_TOPIC: event.topic,
            X_KEY: event.key_field,
            X_GA4: event.ga4_event,
            X_PRODUCER: producer_of(event),
        }
        sample = examples.get(event)
        if sample is not None:
            message["examples"] = [
                {
                    "name": f"{name}Example",
                    "summary": f"A typical {name}",
                    "headers": _example_headers(sample),
                    "payload": sample.model_dump(mode="json"),
                }
            ]
        messages[name] = message
        channel_id = _channel_id(event.topic)
        channels[channel_id]["messages"][name] = {"$ref": f"#/components/messages/{name}"}
        producer = producer_of(event)
        operations[f"send{name}"] = {
            "action": "send",
            "title": f"{producer} publishes {name}",
            "summary": f"The {producer} service publishes {name} to {event.topic}.",
            "channel": {"$ref": f"#/channels/{channel_id}"},
            "messages": [{"$ref": f"#/channels/{channel_id}/messages/{name}"}],
            "tags": [{"name": producer}],
            X_PRODUCER: producer,
        }

    return {
        "asyncapi": "3.0.0",
        "id": "urn:kasse:events",
        "info": {
            "title": "Kasse events",
            "version": kasse_contracts.__version__,
            "description": "Every event the Kasse services publish to Kafka. Each record: key = the aggregate "
            "id, headers = CloudEvents 1.0 attributes (binary content mode), value = the JSON payload. "
            "Generated from the kasse-contracts models by `make contracts`; do not edit by hand.",
            "license": {"name": "Apache-2.0", "url": "https://www.apache.org/licenses/LICENSE-2.0"},
            "tags": [{"name": service} for service in sorted({producer_of(e) for e in ALL_EVENTS})],
        },
        "defaultContentType": envelope.CONTENT_TYPE,
        "servers": {
            "kafka": {
                "host": "{bootstrap}",
                "protocol": "kafka",
                "description": "The Kafka cluster of a Kasse deployment (topic names may carry the "
                "deployment's prefix, see KASSE_TOPIC_PREFIX in the services' settings)",
                "variables": {
                    "bootstrap": {
                        "default": "localhost:9092",
                        "description": "A bootstrap broker, host:port",
                    }
                },
            }
        },
        "channels": channels,
        "operations": operations,
        "components": {"schemas": schemas, "messages": messages},
    }


# --------------------------------------------------------------------------------------------
# rendering


def render_json(doc: Any) -> str:
    return json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


_PLAIN = re.compile(r"^[A-Za-z_$][A-Za-z0-9_./ ,()'+-]*$")
_YAML_WORDS = {"true", "false", "yes", "no", "on", "off", "y", "n", "null", "~"}


def _yaml_scalar(value: Any) -> str:
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        text = repr(value)
        if "e" in text or "n" in text:  # exponent, nan, inf: outside the YAML 1.1 float forms
            raise ValueError(f"cannot render float {value!r} portably")
        return text
    if isinstance(value, str):
        if _PLAIN.match(value) and not value.endswith(" ") and value.lower() not in _YAML_WORDS:
            return value
        return json.dumps(value, ensure_ascii=False)  # a JSON string is a YAML double-quoted scalar
    raise TypeError(f"cannot render {type(value).__name__} as YAML")


def _yaml_lines(value: Any, indent: int) -> list[str]:
    pad = " " * indent
    lines: list[str] = []
    if isinstance(value, dict):
        for key in sorted(value):
            item = value[key]
            if isinstance(item, dict | list) and item:
                lines.append(f"{pad}{_yaml_scalar(key)}:")
                lines.extend(_yaml_lines(item, indent + 2))
            else:
                lines.append(f"{pad}{_yaml_scalar(key)}: {_yaml_inline(item)}")
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, dict | list) and item:
                sub = _yaml_lines(item, indent + 2)
                sub[0] = f"{pad}- {sub[0][indent + 2 :]}"
                lines.extend(sub)
            else:
                lines.append(f"{pad}- {_yaml_inline(item)}")
    else:
        lines.append(f"{pad}{_yaml_scalar(value)}")
    return lines


def _yaml_inline(value: Any) -> str:
    if isinstance(value, dict):
        return "{}"
    if isinstance(value, list):
        return "[]"
    return _yaml_scalar(value)


def render_yaml(doc: Mapping[str, Any]) -> str:
    """Block-style YAML with sorted keys; strings that are not plainly safe are JSON-quoted."""
    header = "# Generated by `make contracts` (python -m kasse_contracts.codegen). Do not edit.\n"
    return header + "\n".join(_yaml_lines(dict(doc), 0)) + "\n"


# --------------------------------------------------------------------------------------------
# the artefact set


def generate_artefacts() -> dict[str, str]:
    """Every generated file: path relative to `contracts/` -> exact text."""
    from kasse_contracts.examples import EXAMPLES

    out: dict[str, str] = {}
    for event in ALL_EVENTS:
        out[schema_path(event)] = render_json(event_schema(event, EXAMPLES.get(event)))
    out[ENVELOPE_FILE] = render_json(envelope_schema())
    out[TOPICS_FILE] = render_json(topics_document())
    out[ASYNCAPI_FILE] = render_yaml(asyncapi_document(EXAMPLES))
    return dict(sorted(out.items()))


def source_root() -> Path | None:
    """`contracts/` of a source checkout, or None when running from an installed wheel."""
    root = Path(__file__).resolve().parents[2]
    pyproject = root / "pyproject.toml"
    if pyproject.is_file() and 'name = "kasse-contracts"' in pyproject.read_text(encoding="utf-8"):
        return root
    return None


def read_artefacts(root: Path) -> dict[str, str]:
    """The artefact files present under `root` (generated names and any stray schema file)."""
    found: dict[str, str] = {}
    for path in sorted((root / SCHEMAS_DIR).glob("*.json")):
        found[f"{SCHEMAS_DIR}/{path.name}"] = path.read_text(encoding="utf-8")
    asyncapi = root / ASYNCAPI_FILE
    if asyncapi.is_file():
        found[ASYNCAPI_FILE] = asyncapi.read_text(encoding="utf-8")
    return found


def stale_files(root: Path, generated: Mapping[str, str] | None = None) -> list[str]:
    """Paths that differ from what the generator writes: changed, missing or no longer generated."""
    generated = generated if generated is not None else generate_artefacts()
    committed = read_artefacts(root)
    return sorted(p for p in set(generated) | set(committed) if generated.get(p) != committed.get(p))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kasse_contracts.codegen", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, help="the contracts/ directory (default: this source checkout's)")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if the files are stale")
    parser.add_argument(
        "--allow-breaking", action="store_true", help="write even if the change is breaking (see compat)"
    )
    args = parser.parse_args(argv)
    root = args.out or source_root()
    if root is None:
        parser.error("not a source checkout of kasse-contracts: pass --out DIR")

    generated = generate_artefacts()
    stale = stale_files(root, generated)
    if args.check:
        if stale:
            print("stale contract artefacts (run `make contracts`):", *stale, sep="\n  ", file=sys.stderr)
            return 1
        print("contract artefacts are up to date")
        return 0
    if not stale:
        print("contract artefacts are up to date")
        return 0

    from kasse_contracts import compat

    findings = compat.compare_artefacts(compat.load_artefacts(root), compat.parse_artefacts(generated))
    breaking = [f for f in findings if f.breaking]
    if breaking and not args.allow_breaking:
        print("refusing to write: breaking changes within a version (make a .v2 event and topic):", file=sys.stderr)
        for finding in breaking:
            print(f"  {finding}", file=sys.stderr)
        return 1
    for finding in findings:
        print(f"  {finding}")
    for rel in stale:
        path = root / rel
        if rel in generated:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(generated[rel], encoding="utf-8")
            print(f"wrote {rel}")
        else:
            path.unlink()
            print(f"removed {rel}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
