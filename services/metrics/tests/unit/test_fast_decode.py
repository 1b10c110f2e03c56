"""The fast decode path decides exactly like the kit's pydantic decode, on valid and mutated payloads.

Corpus: every contract event's example payload (and the scripted scenario's records), then every
mutation of each: each field (at every depth) removed, or replaced by values of the wrong type,
out of its bounds, not matching its pattern, naive datetimes, numbers as strings, …  For each:
- the fast path (msgspec struct generated from the JSON Schema) accepts ⇒ pydantic accepts too;
- the service's decoder (fast path, then pydantic for what it refused) dead-letters exactly what
  pydantic refuses, and makes the same fact as from the pydantic event.
"""

from __future__ import annotations

import copy
import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from kasse_common.envelope import MalformedEvent, decode, encode, headers_to_dict
from kasse_contracts.events import ALL_EVENTS
from kasse_contracts.examples import EXAMPLES
from kasse_metrics.application.decoding import FastDecoder, struct_for

pytestmark = pytest.mark.unit

SCHEMAS = Path(__file__).resolve().parents[4] / "contracts" / "schemas"

ODD_VALUES: list[Any] = [
    None,
    "",
    "x",
    "x" * 201,
    "EUR\n",
    "eur",
    "DE\n",
    -1,
    0,
    6,
    1.5,
    10.0,
    "5",
    True,
    [],
    [{}],
    {},
    "2026-03-02T12:00:00",  # naive
    "2026-03-02T12:00:00+01:00",
    "2026-03-02",
    "not-a-date",
    "fraud_suspected",
    "added",
    "teleported",
    2**70,
]


def _paths(node: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if isinstance(node, dict):
        for k, v in node.items():
            yield (*path, k)
            yield from _paths(v, (*path, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield (*path, i)
            yield from _paths(v, (*path, i))


def _set(doc: Any, path: tuple[Any, ...], value: Any, delete: bool = False) -> Any:
    out = copy.deepcopy(doc)
    node = out
    for p in path[:-1]:
        node = node[p]
    if delete:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return out


def _mutations(payload: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for path in _paths(payload):
        yield _set(payload, path, None, delete=True)
        for value in ODD_VALUES:
            yield _set(payload, path, value)


def _pydantic_outcome(value: bytes, headers: dict[str, str]) -> Any:
    try:
        return decode(value, headers)
    except MalformedEvent:
        return None


def test_generated_structs_come_from_the_published_json_schemas() -> None:
    for model in ALL_EVENTS:
        published = json.loads((SCHEMAS / f"{model.__name__}.v1.json").read_text())
        generated = model.model_json_schema()
        assert published["properties"] == generated["properties"], model.__name__
        assert published.get("required") == generated.get("required"), model.__name__
        assert published.get("$defs") == generated.get("$defs"), model.__name__
        struct_for(model)  # every construct of the schema is expressible (UnsupportedSchema otherwise)


def test_fast_path_accepts_and_rejects_exactly_what_pydantic_does_on_valid_and_mutated_payloads() -> None:
    decoder = FastDecoder()
    checked = accepted = refused = 0
    rng = random.Random(16)
    for model in ALL_EVENTS:
        record = encode(EXAMPLES[model], service="t")
        fast_json = decoder.decoders[record.event_type].json
        raw_headers = {k: v.encode() for k, v in record.headers.items()}
        payload = json.loads(record.value)
        corpus = [payload, *_mutations(payload)]
        rng.shuffle(corpus)
        for doc in corpus:
            value = json.dumps(doc).encode()
            expected = _pydantic_outcome(value, record.headers)
            try:
                fast_json.decode(value)
                fast_ok = True
            except (msgspec.ValidationError, msgspec.DecodeError):
                fast_ok = False
            if fast_ok:
                assert expected is not None, (model.__name__, doc)  # never looser than the contract
            # The router's path on the client's undecoded headers takes exactly what msgspec accepts.
            via_raw = decoder.raw(value, raw_headers, 7)
            assert (via_raw is not None) == fast_ok, (model.__name__, doc)
            try:
                fact = decoder(value, record.headers, 7)
            except MalformedEvent:
                fact = None
                assert expected is None, (model.__name__, doc)
                refused += 1
            else:
                assert expected is not None, (model.__name__, doc)
                assert fact == decoder.slow(value, record.headers, 7), (model.__name__, doc)
                assert via_raw is None or via_raw == fact, (model.__name__, doc)
                accepted += 1
            checked += 1
    assert refused > 1000 and accepted > 1000, (accepted, refused)


def test_bad_headers_and_bodies_are_malformed_both_ways() -> None:
    decoder = FastDecoder()
    record = encode(next(iter(EXAMPLES.values())), service="t")
    for headers in (
        {k: v for k, v in record.headers.items() if k != "ce_id"},
        {**record.headers, "ce_id": ""},
        {**record.headers, "ce_time": "yesterday"},
        {**record.headers, "ce_time": "2026-03-02T12:00:00"},
    ):
        assert _pydantic_outcome(record.value, headers) is None
        with pytest.raises(MalformedEvent):
            decoder(record.value, headers, 0)
    for value in (None, b"", b"{not json", b"[]", b'"x"', b"\xff"):
        assert _pydantic_outcome(value, record.headers) is None  # type: ignore[arg-type]
        with pytest.raises(MalformedEvent):
            decoder(value, record.headers, 0)
    unknown = {**record.headers, "ce_type": "io.kasse.future.Thing.v1"}
    assert decoder(b"{}", unknown, 0) is None  # a newer producer's type: skipped, not dead-lettered


def test_the_scenario_decodes_to_the_same_facts_on_both_paths(scenario_for: Any) -> None:
    decoder = FastDecoder()
    scenario = scenario_for("fast")
    for r in scenario.all_records():
        assert decoder(r.value, r.headers, 3) == decoder.slow(r.value, r.headers, 3)
    assert decoder.slow_path == len(scenario.all_records())  # only the explicit slow calls


def _outcome(decoder: FastDecoder, value: bytes | None, headers: dict[str, str]) -> Any:
    try:
        return decoder(value, headers, 1)
    except MalformedEvent:
        return MalformedEvent


def test_the_raw_header_path_takes_only_records_that_pass_every_check_and_makes_the_same_fact() -> None:
    """`FastDecoder.raw` reads the client's header values as bytes; anything it is not sure of (a header
    missing, empty, None, not UTF-8, a time without zone, a type it does not know) it leaves to the
    decoded path, which then decides as before (fact, skipped or dead-lettered)."""
    decoder = FastDecoder()
    for model in ALL_EVENTS:
        record = encode(EXAMPLES[model], service="t")
        raw = {k: v.encode() for k, v in record.headers.items()}
        fact = decoder.raw(record.value, raw, 1)
        assert fact is not None and fact == decoder(record.value, record.headers, 1), model.__name__
    record = encode(next(iter(EXAMPLES.values())), service="t")
    raw = {k: v.encode() for k, v in record.headers.items()}
    variants: list[dict[str, bytes | None]] = []
    for name in ("ce_id", "ce_type", "ce_source", "ce_subject", "ce_time", "ce_specversion"):
        variants.append({k: v for k, v in raw.items() if k != name})
        variants.append({**raw, name: b""})
        variants.append({**raw, name: None})
    variants += [
        {**raw, "ce_id": b"\xffid"},
        {**raw, "ce_source": b"\xff"},
        {**raw, "ce_time": b"\xff"},
        {**raw, "ce_time": b"yesterday"},
        {**raw, "ce_time": b"2026-03-02T12:00:00"},
        {**raw, "ce_type": b"io.kasse.future.Thing.v1"},
    ]
    for headers in variants:
        fact = decoder.raw(record.value, headers, 1)
        decoded = headers_to_dict(list(headers.items()))
        if fact is None:
            continue  # the router decodes the headers and asks `decoder(...)`, as before
        assert fact == _outcome(decoder, record.value, decoded), headers
    # Where the bytes path refuses, it is because the decoded path might decide otherwise.
    assert decoder.raw(record.value, {**raw, "ce_source": b"\xff"}, 1) is not None  # any non-empty bytes
    assert decoder.raw(record.value, {**raw, "ce_id": b"\xffid"}, 1) is None  # the id must decode
    assert _outcome(decoder, record.value, headers_to_dict([*raw.items(), ("ce_id", b"\xffid")])) is not None
    assert decoder.raw(None, raw, 1) is None
    assert decoder.raw(b"{not json", raw, 1) is None
