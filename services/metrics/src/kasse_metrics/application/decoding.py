"""The fast decode path: msgspec structs generated from the contracts' JSON Schemas.

Decoding every record through the pydantic contract models cost as much as the whole raw consumer
loop. Here each event type's payload is decoded by a msgspec struct generated at start-up from the
same JSON Schema the contracts publish (`Model.model_json_schema()`, which is what
`contracts/schemas/*.json` hold). The outcome must be the same as the kit's `decode`:

- the generated structs are at least as strict as the pydantic models (every type, length, pattern,
  bound, enum and required field of the schema; anchors end at the end of text as pydantic's regex
  does), so whatever the fast path accepts pydantic accepts too;
- whatever the fast path rejects goes through the kit's `decode` (pydantic), which decides: a
  payload pydantic accepts (lax coercions such as "5" for an int) is counted from the pydantic
  event, one it refuses raises `MalformedEvent` and is dead-lettered. Malformed records are rare,
  so the slow path costs nothing in the steady state.

`tests/unit/test_fast_decode.py` compares both paths on valid payloads of every event type and on
thousands of mutated ones.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from typing import Annotated, Any, Literal, Union

import msgspec

from kasse_common.envelope import MalformedEvent, decode
from kasse_contracts.base import Event
from kasse_contracts.envelope import (
    H_CONTENT_TYPE,
    H_ID,
    H_SOURCE,
    H_SPECVERSION,
    H_SUBJECT,
    H_TIME,
    H_TYPE,
    REQUIRED_HEADERS,
)
from kasse_contracts.events import EVENTS_BY_TYPE
from kasse_metrics.domain import facts as F

FRAUD_REASON = F.FRAUD_REASON


class UnsupportedSchema(Exception):
    """The generator met a JSON Schema construct it cannot express exactly (a test catches it)."""


def _pattern(p: str) -> str:
    # pydantic (Rust regex): `$` is the end of the text; Python's `$` also matches before a final
    # newline. `\Z` is Python's end of text.
    if p.endswith("$") and not p.endswith("\\$"):
        return p[:-1] + r"\Z"
    return p


class _Generator:
    def __init__(self, schema: Mapping[str, Any], name: str) -> None:
        self.defs: Mapping[str, Any] = schema.get("$defs", {})
        self.name = name
        self.structs: dict[str, Any] = {}

    def type_of(self, s: Mapping[str, Any]) -> Any:
        if "$ref" in s:
            ref = s["$ref"].rsplit("/", 1)[-1]
            if ref not in self.structs:
                self.structs[ref] = self.type_of(self.defs[ref]) if "properties" not in self.defs[ref] else None
                if self.structs[ref] is None:
                    self.structs[ref] = self.struct(f"{self.name}_{ref}", self.defs[ref])
            return self.structs[ref]
        if "anyOf" in s:
            return Union[tuple(self.type_of(x) for x in s["anyOf"])]  # noqa: UP007 (built at run time)
        if "enum" in s:
            return Literal[tuple(s["enum"])]
        t = s.get("type")
        meta: dict[str, Any] = {}
        if t == "string":
            fmt = s.get("format")
            if fmt == "date-time":
                return Annotated[dt.datetime, msgspec.Meta(tz=True)]
            if fmt == "date":
                return dt.date
            if fmt is not None:
                raise UnsupportedSchema(f"string format {fmt!r}")
            for key, arg in (("minLength", "min_length"), ("maxLength", "max_length")):
                if key in s:
                    meta[arg] = s[key]
            if "pattern" in s:
                meta["pattern"] = _pattern(s["pattern"])
            return Annotated[str, msgspec.Meta(**meta)] if meta else str
        if t in ("integer", "number"):
            for key, arg in (("minimum", "ge"), ("maximum", "le")):
                if key in s:
                    meta[arg] = s[key]
            base = int if t == "integer" else float
            return Annotated[base, msgspec.Meta(**meta)] if meta else base
        if t == "boolean":
            return bool
        if t == "null":
            return None
        if t == "array":
            item = self.type_of(s.get("items", {"type": "__any__"}))
            if "minItems" in s:
                return Annotated[list[item], msgspec.Meta(min_length=s["minItems"])]  # type: ignore[valid-type]
            return list[item]  # type: ignore[valid-type]
        if t == "object" and "properties" in s:
            return self.struct(f"{self.name}_{s.get('title', 'obj')}", s)
        raise UnsupportedSchema(f"{self.name}: {dict(s)}")

    def struct(self, name: str, s: Mapping[str, Any]) -> Any:
        required = set(s.get("required", ()))
        fields: list[tuple[str, Any] | tuple[str, Any, Any]] = []
        for prop, sub in s["properties"].items():
            typ = self.type_of(sub)
            if prop in required:
                fields.append((prop, typ))
            else:
                default = sub.get("default")
                if isinstance(default, dict | list):
                    default = msgspec.field(default_factory=lambda d=default: type(d)(d))  # type: ignore[misc]
                fields.append((prop, typ, default))
        fields.sort(key=lambda f: len(f) == 3)  # required fields first
        return msgspec.defstruct(name, fields, frozen=True, forbid_unknown_fields=False)


def struct_for(model: type[Event]) -> Any:
    """A msgspec struct type equivalent to (at least as strict as) the model's JSON Schema."""
    schema = model.model_json_schema()
    return _Generator(schema, model.__name__).struct(model.__name__, schema)


# -- facts from a decoded payload (a msgspec struct or, from the slow path, a pydantic event) --------


def _viewed(e: Any, i: str, ms: int, o: int) -> F.Fact:
    return F.Viewed(i, ms, o, e.session_id, e.product_id, e.category, str(e.channel))


def _searched(e: Any, i: str, ms: int, o: int) -> F.Fact:
    return F.Searched(i, ms, o, e.session_id, str(e.channel))


def _cart_updated(e: Any, i: str, ms: int, o: int) -> F.Fact:
    add = e.action == "added" or (e.action == "quantity_changed" and e.quantity_delta > 0)
    if not add:
        return F.CartChanged(i, ms, o, e.session_id, e.cart_id)
    line = e.line
    if line is None:
        return F.CartAdded(i, ms, o, e.session_id, e.cart_id)
    return F.CartAdded(i, ms, o, e.session_id, e.cart_id, line.product_id, line.category, line.name)


def _cart_abandoned(e: Any, i: str, ms: int, o: int) -> F.Fact:
    return F.CartLeft(i, ms, o, e.session_id, e.cart_id)


def _checkout(e: Any, i: str, ms: int, o: int) -> F.Fact:
    return F.CheckoutBegan(i, ms, o, e.session_id, e.cart_id)


def _placed(e: Any, i: str, ms: int, o: int) -> F.Fact:
    lines = tuple(F.Line(li.product_id, li.category, li.quantity, li.name) for li in e.lines)
    return F.Placed(i, ms, o, e.session_id, e.order_id, e.cart_id, e.total.amount, e.total.currency, lines)


def _cancelled(e: Any, i: str, ms: int, o: int) -> F.Fact:
    return F.Cancelled(i, ms, o, getattr(e, "session_id", None), e.order_id, str(e.reason))


def _captured(e: Any, i: str, ms: int, o: int) -> F.Fact:
    return F.Captured(i, ms, o, e.session_id, e.order_id, e.amount.amount, e.amount.currency)


def _failed(e: Any, i: str, ms: int, o: int) -> F.Fact:
    return F.PayFailed(i, ms, o, e.session_id, e.order_id, e.reason == FRAUD_REASON)


def _refunded(e: Any, i: str, ms: int, o: int) -> F.Fact:
    return F.Refunded(i, ms, o, e.session_id, e.order_id, e.amount.amount, e.amount.currency)


def _dispatched(e: Any, i: str, ms: int, o: int) -> F.Fact:
    return F.Dispatched(i, ms, o, e.session_id, e.order_id)


def _delivered(e: Any, i: str, ms: int, o: int) -> F.Fact:
    return F.Delivered(i, ms, o, e.session_id, e.order_id)


def _reviewed(e: Any, i: str, ms: int, o: int) -> F.Fact:
    return F.Reviewed(i, ms, o, getattr(e, "session_id", None), e.product_id, e.rating)


def _product_changed(e: Any, i: str, ms: int, o: int) -> F.Fact:
    return F.Named(i, ms, o, None, e.product_id, e.name)


def _exposed(e: Any, i: str, ms: int, o: int) -> F.Fact:
    return F.Exposed(i, ms, o, e.session_id, e.experiment_id, e.variant)


FACT_BUILDERS: dict[str, Callable[[Any, str, int, int], F.Fact]] = {
    "ProductViewed": _viewed,
    "ProductSearched": _searched,
    "ProductChanged": _product_changed,
    "CartUpdated": _cart_updated,
    "CartAbandoned": _cart_abandoned,
    "CheckoutStarted": _checkout,
    "OrderPlaced": _placed,
    "OrderCancelled": _cancelled,
    "PaymentCaptured": _captured,
    "PaymentFailed": _failed,
    "PaymentRefunded": _refunded,
    "ShipmentDispatched": _dispatched,
    "ShipmentDelivered": _delivered,
    "ReviewSubmitted": _reviewed,
    "ExperimentExposed": _exposed,
}


def _builder(model: type[Event]) -> Callable[[Any, str, int, int], F.Fact]:
    build = FACT_BUILDERS.get(model.__name__)
    if build is not None:
        return build
    name = model.__name__

    def other(e: Any, i: str, ms: int, o: int) -> F.Fact:
        return F.Other(i, ms, o, getattr(e, "session_id", None), name)

    return other


class _Decoder:
    __slots__ = ("build", "json", "model")

    def __init__(self, model: type[Event]) -> None:
        self.model = model
        self.json = msgspec.json.Decoder(struct_for(model))
        self.build = _builder(model)


class FastDecoder:
    """Record value + headers → a fact (None: a type this service does not know); raises
    MalformedEvent exactly when the kit's `decode` does."""

    def __init__(self, events: Mapping[str, type[Event]] | None = None) -> None:
        self.events = events if events is not None else EVENTS_BY_TYPE
        self.decoders = {ce_type: _Decoder(model) for ce_type, model in self.events.items()}
        # The same decoders keyed by the type header's bytes, as a Kafka client hands it (`raw`).
        self._by_raw_type = {ce_type.encode(): d for ce_type, d in self.decoders.items()}
        self.slow_path = 0  # records the fast path handed to pydantic (the malformed, the lax)

    def __call__(self, value: bytes | None, headers: Mapping[str, str], offset: int) -> F.Fact | None:
        ce_type = headers.get(H_TYPE)
        d = self.decoders.get(ce_type) if ce_type is not None else None
        if d is not None and value is not None and _headers_ok(headers):
            try:
                payload = d.json.decode(value)
            except (msgspec.ValidationError, msgspec.DecodeError):
                pass
            else:
                return d.build(payload, headers[H_ID], F.to_ms(payload.occurred_at), offset)
        return self.slow(value, headers, offset)

    def raw(self, value: bytes | None, headers: Mapping[str, bytes | None], offset: int) -> F.Fact | None:
        """The fast path alone, on a Kafka client's headers as they come (values are bytes, not decoded):
        the fact when the record passes every check, None when `__call__` must decide (on the decoded
        headers: a type it may not know, a header missing, empty or not UTF-8, a payload msgspec
        refuses). Whatever this returns is what `__call__` returns for the same record."""
        d = self._by_raw_type.get(headers.get(H_TYPE))  # type: ignore[arg-type]
        if d is None or value is None or not headers.keys() >= _REQUIRED:
            return None
        event_id = headers[H_ID]
        # Every required header non-empty (stricter than `_headers_ok`, which lets an empty spec version
        # or content type through to pydantic): a None value (a null header) never passes here.
        if not (
            event_id and headers[H_SOURCE] and headers[H_SUBJECT] and headers[H_SPECVERSION] and headers[H_CONTENT_TYPE]
        ):
            return None
        try:
            if dt.datetime.fromisoformat(headers[H_TIME].decode()).tzinfo is None:  # type: ignore[union-attr]
                return None
            payload = d.json.decode(value)
            return d.build(payload, event_id.decode(), F.to_ms(payload.occurred_at), offset)
        except (ValueError, AttributeError, msgspec.ValidationError, msgspec.DecodeError):
            # ValueError covers a time that does not parse and bytes that are not UTF-8.
            return None

    def slow(self, value: bytes | None, headers: Mapping[str, str], offset: int) -> F.Fact | None:
        """The kit's pydantic decode decides (raises MalformedEvent for the dead-letter topic)."""
        self.slow_path += 1
        incoming = decode(value, dict(headers), self.events)
        if incoming.event is None:
            return None
        build = self.decoders[incoming.type].build
        return build(incoming.event, incoming.id, F.to_ms(incoming.event.occurred_at), offset)


_REQUIRED = frozenset(REQUIRED_HEADERS)


def _headers_ok(headers: Mapping[str, str]) -> bool:
    """The CloudEvents checks of `CloudEventAttributes.from_headers`, without building the model.
    (Set comparison and one expression, not Python loops: this runs on every record.)"""
    if not headers.keys() >= _REQUIRED:
        return False
    if not (headers[H_ID] and headers[H_TYPE] and headers[H_SOURCE] and headers[H_SUBJECT]):
        return False
    try:
        return dt.datetime.fromisoformat(headers[H_TIME]).tzinfo is not None
    except ValueError:
        return False


__all__ = ["FastDecoder", "MalformedEvent", "UnsupportedSchema", "struct_for"]
