"""The envelope: CloudEvents 1.0, Kafka protocol binding, binary content mode.

On the wire a Kasse event is a Kafka record whose
- value is the event payload as JSON (the CloudEvents `data`, see `kasse_contracts.events`),
- key is the aggregate id (the payload field named by the event's `key_field`), UTF-8,
- headers carry the CloudEvents attributes as `ce_<name>` (UTF-8 strings) plus `content-type`,
  and W3C trace context in `traceparent` (and `tracestate` when present).

Any CloudEvents SDK, or a plain Kafka client with this table, can read Kasse events.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import AwareDatetime, Field

from kasse_contracts.base import ContractModel

SPEC_VERSION = "1.0"
CONTENT_TYPE = "application/json"
SOURCE_PREFIX = "urn:kasse:service:"

H_ID = "ce_id"
H_TYPE = "ce_type"
H_SOURCE = "ce_source"
H_TIME = "ce_time"
H_SPECVERSION = "ce_specversion"
H_SUBJECT = "ce_subject"
H_CONTENT_TYPE = "content-type"
H_TRACEPARENT = "traceparent"
H_TRACESTATE = "tracestate"

REQUIRED_HEADERS = (H_ID, H_TYPE, H_SOURCE, H_TIME, H_SPECVERSION, H_SUBJECT, H_CONTENT_TYPE)


class CloudEventAttributes(ContractModel):
    """The attributes Kasse puts in headers. `id` is unique per event: readers dedupe on it."""

    id: Annotated[str, Field(min_length=1)]
    type: Annotated[str, Field(min_length=1)]
    source: Annotated[str, Field(min_length=1)]
    time: AwareDatetime
    subject: Annotated[str, Field(min_length=1)]
    specversion: str = SPEC_VERSION
    datacontenttype: str = CONTENT_TYPE
    traceparent: str | None = None
    tracestate: str | None = None

    def to_headers(self) -> dict[str, str]:
        headers = {
            H_ID: self.id,
            H_TYPE: self.type,
            H_SOURCE: self.source,
            H_TIME: self.time.isoformat(),
            H_SPECVERSION: self.specversion,
            H_SUBJECT: self.subject,
            H_CONTENT_TYPE: self.datacontenttype,
        }
        if self.traceparent:
            headers[H_TRACEPARENT] = self.traceparent
        if self.tracestate:
            headers[H_TRACESTATE] = self.tracestate
        return headers

    @classmethod
    def from_headers(cls, headers: dict[str, str]) -> CloudEventAttributes:
        """Raises KeyError naming the first missing attribute, ValueError on a bad value."""
        missing = [h for h in REQUIRED_HEADERS if h not in headers]
        if missing:
            raise KeyError(f"missing CloudEvents header(s): {', '.join(missing)}")
        return cls(
            id=headers[H_ID],
            type=headers[H_TYPE],
            source=headers[H_SOURCE],
            time=datetime.fromisoformat(headers[H_TIME]),
            subject=headers[H_SUBJECT],
            specversion=headers[H_SPECVERSION],
            datacontenttype=headers[H_CONTENT_TYPE],
            traceparent=headers.get(H_TRACEPARENT),
            tracestate=headers.get(H_TRACESTATE),
        )


def source_for(service: str) -> str:
    return f"{SOURCE_PREFIX}{service}"
