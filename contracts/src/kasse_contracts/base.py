"""Shared building blocks of every Kasse event payload.

Contracts are data, not behaviour: pydantic models, enums and constants only, so that a
subscriber can install this package alone (it depends on pydantic and nothing else).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, ClassVar, TypeVar

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    StringConstraints,
    WithJsonSchema,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

CurrencyCode = Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$", min_length=3, max_length=3)]
"""ISO 4217 alphabetic code, upper case (EUR, USD, SEK…)."""

MinorUnits = Annotated[
    int,
    Field(ge=0, strict=True, description="Amount in the currency's minor unit (cents for EUR)"),
]
"""Strict: 10.0, True or "10" are rejected, so a float can never sneak into an amount."""
CountryCode = Annotated[str, StringConstraints(pattern=r"^[A-Z]{2}$")]
"""ISO 3166-1 alpha-2 country code."""

Identifier = Annotated[str, StringConstraints(min_length=1, max_length=200)]


class ContractModel(BaseModel):
    """Frozen and tolerant: readers ignore fields they do not know yet (additive evolution)."""

    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)


X_KNOWN_VALUES = "x-kasse-known-values"
"""JSON Schema keyword of an open enum: the values this release of the contracts knows."""
X_OPEN_ENUM = "x-kasse-open-enum"
"""JSON Schema keyword: `true` on an open enum (any string is valid; readers keep unknown values)."""


class OpenEnum(StrEnum):
    """An enum that readers keep open, so a new value is an additive change (contracts/README.md).

    A value this release does not know is *kept*, not rejected: validation returns a pseudo member
    named `UNKNOWN` whose value is the string received (`reason.is_known` is False, `str(reason)`
    and the JSON it dumps to are the original value). A reader that must decide something maps it
    to its own "other" case. The JSON Schema says the same: any string, the known values listed
    under `x-kasse-known-values` (and in the description), `x-kasse-open-enum: true`.
    """

    @classmethod
    def _missing_(cls, value: object) -> OpenEnum | None:
        if not isinstance(value, str):
            return None
        member = str.__new__(cls, value)
        member._name_ = "UNKNOWN"
        member._value_ = value
        return member

    @property
    def is_known(self) -> bool:
        return type(self)._value2member_map_.get(self._value_) is self

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        schema = handler.resolve_ref_schema(handler(core_schema))
        known = [member.value for member in cls]
        schema.pop("enum", None)
        schema["type"] = "string"
        schema[X_KNOWN_VALUES] = known
        schema[X_OPEN_ENUM] = True
        schema["description"] = (
            f"Known values: {', '.join(known)}. Open enum: a later release may add values; "
            "readers must accept a value they do not know (keep it or treat it as 'other')."
        )
        return schema


_E = TypeVar("_E", bound=OpenEnum)


def known_value(value: _E) -> _E:
    """A producer's validator (`Annotated[Channel, AfterValidator(known_value)]`): readers keep unknown
    values, but what Kasse itself publishes must be a value of this release."""
    if not value.is_known:
        raise ValueError(f"unknown value {str(value)!r}; expected one of: {', '.join(m.value for m in type(value))}")
    return value


def closed_enum(enum: type[OpenEnum]) -> WithJsonSchema:
    """JSON Schema of an API input that takes only this release's values of an open enum:
    `Annotated[Channel, AfterValidator(known_value), closed_enum(Channel)]`, so the OpenAPI document says
    exactly what is accepted (the open enum's schema says any string)."""
    return WithJsonSchema({"type": "string", "enum": [member.value for member in enum]})


class Money(ContractModel):
    """Money is integer minor units plus a currency, never a float."""

    amount: MinorUnits
    currency: CurrencyCode


class Channel(OpenEnum):
    """How the shopper arrived (GA4's acquisition grouping, reduced)."""

    SEARCH = "search"
    RECOMMENDATION = "recommendation"
    CAMPAIGN = "campaign"
    SOCIAL = "social"
    EMAIL = "email"
    DIRECT = "direct"


class Event(ContractModel):
    """Base of every event payload (the CloudEvents `data`).

    Class-level metadata says where the event travels:
    - `event_type`: the CloudEvents `type` (`ce_type` header), versioned;
    - `topic`: the Kafka topic name (see `kasse_contracts.topics`);
    - `key_field`: the payload field whose value is the Kafka message key and the CloudEvents
      `subject` (the aggregate id: order, cart, session or product);
    - `ga4_event`: the GA4 e-commerce event it corresponds to, where there is one.
    """

    event_type: ClassVar[str]
    topic: ClassVar[str]
    key_field: ClassVar[str]
    ga4_event: ClassVar[str | None] = None

    occurred_at: Annotated[
        AwareDatetime,
        Field(description="When the fact happened (event time, RFC 3339); ce_time is when it was published"),
    ]

    def message_key(self) -> str:
        return str(getattr(self, self.key_field))


class FunnelEvent(Event):
    """An event on the shopper's path; it carries the session and, when known, the customer."""

    session_id: Identifier
    customer_id: Identifier | None = None
