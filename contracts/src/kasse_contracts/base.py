"""Shared building blocks of every Kasse event payload.

Contracts are data, not behaviour: pydantic models, enums and constants only, so that a
subscriber can install this package alone (it depends on pydantic and nothing else).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, ClassVar

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

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


class Money(ContractModel):
    """Money is integer minor units plus a currency, never a float."""

    amount: MinorUnits
    currency: CurrencyCode


class Channel(StrEnum):
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
