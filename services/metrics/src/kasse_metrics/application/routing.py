"""The router stage: contract records → facts re-keyed by session onto the internal topic.

Each instance's router consumes its share of the contract topics (group `kasse-metrics`), decodes a
polled batch (fast path; malformed records to the dead-letter topic), and sends the facts to
`kasse.metrics.facts-by-session.v1`, partitioned by a stable hash of the fact's session (its event id
when it has none). A session's facts from every topic (views keyed by session, orders and payments by
order, carts by cart) so meet in one internal partition, whose owner holds that session's state alone.
A re-publication of an event (same id, same session) lands in the same partition as the original, so
the owner's dedupe window still catches it.

The facts of one batch bound for one partition go as ONE record (a MessagePack list, like a segment),
not one record per fact: the broker and both clients see a few records per batch instead of
thousands. The source offsets are committed (to Kafka) only after every record of the batch was
acknowledged: a crash re-reads and re-sends the batch, whose facts the state stage skips by id.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import msgspec

from kasse_common.envelope import headers_to_dict
from kasse_metrics.application.decoding import FastDecoder
from kasse_metrics.application.ingest import DeadLetters, Decoded, RawRecord, decode_batch, default_decoder
from kasse_metrics.domain.facts import AnyFact, Fact, encode_facts

log = logging.getLogger(__name__)
_routed = msgspec.msgpack.Decoder(list[AnyFact])


def partition_of(key: str, partitions: int) -> int:
    """Stable across processes and versions (CRC-32, not Python's salted `hash`)."""
    return zlib.crc32(key.encode()) % partitions


def route_key(f: Fact) -> str:
    return f.session or f.event_id


class RoutedFactsSender(Protocol):
    partitions: int

    async def send(self, partition: int, value: bytes) -> Awaitable[object]:
        """Enqueue one record for `partition`; the returned awaitable completes when it is acknowledged."""


class SourceRecord(Protocol):
    """A consumed contract record as the Kafka client hands it (`confluent_kafka.Message`'s accessors):
    read as it comes, with no record object of our own per event."""

    def topic(self) -> str | None: ...
    def partition(self) -> int | None: ...
    def offset(self) -> int | None: ...
    def key(self) -> bytes | None: ...
    def value(self) -> bytes | None: ...
    def headers(self) -> Any:
        """A list of (name, value as bytes) pairs, or None."""


@dataclass
class RouteResult:
    records: int = 0
    facts: int = 0
    routed_records: int = 0
    dead_lettered: int = 0
    skipped: int = 0
    # (topic, partition, offset, traceparent) of the records that carry a trace context
    traced: list[tuple[str, int, int, str]] = field(default_factory=list)


class Router:
    def __init__(
        self,
        dead_letters: DeadLetters,
        sender: RoutedFactsSender,
        max_facts_per_record: int = 1000,
        decoder: FastDecoder | None = None,
    ) -> None:
        self.dead_letters = dead_letters
        self.sender = sender
        # A record stays far below Kafka's 1 MB default message size (a fact packs to ~50-150 bytes).
        self.max_facts_per_record = max_facts_per_record
        self.decoder = decoder or default_decoder()

    async def __call__(self, records: Sequence[SourceRecord]) -> RouteResult:
        """Decode and send the batch; returns once every record sent was acknowledged.

        Per record, the fast path reads the client's header list as it is (`FastDecoder.raw`: no
        decoded header dict, no record object); whatever it does not accept goes through
        `decode_batch` (the kit's pydantic decode decides; malformed → dead-letter topic), so the
        outcome is the same as decoding every record that way."""
        out = RouteResult(records=len(records))
        facts: list[Fact] = []
        fast = self.decoder.raw
        for m in records:
            raw = m.headers()
            headers = dict(raw) if raw else {}
            value = m.value()
            fact = fast(value, headers, m.offset())  # type: ignore[arg-type]
            if fact is not None:
                facts.append(fact)
            else:
                await self._slow(m, raw, value, facts, out)
            traceparent = headers.get("traceparent")
            if traceparent:
                out.traced.append((m.topic(), m.partition(), m.offset(), traceparent.decode(errors="replace")))  # type: ignore[arg-type]
        out.facts = len(facts)
        out.routed_records = await self.send(facts)
        return out

    async def _slow(self, m: SourceRecord, raw: Any, value: bytes | None, facts: list[Fact], out: RouteResult) -> None:
        record = RawRecord(m.topic(), m.partition(), m.offset(), m.key(), value, headers_to_dict(raw or ()))  # type: ignore[arg-type]
        decoded = await decode_batch([record], self.dead_letters, self.decoder)
        facts.extend(decoded.facts)
        out.dead_lettered += decoded.dead_lettered
        out.skipped += decoded.skipped

    async def send(self, facts: Sequence[Fact]) -> int:
        """Send the facts, packed per partition of their session; returns the records sent, once every
        one was acknowledged."""
        n = self.sender.partitions
        by_partition: dict[int, list[Fact]] = {}
        for f in facts:
            p = partition_of(f.session or f.event_id, n)
            same = by_partition.get(p)
            if same is None:
                by_partition[p] = [f]
            else:
                same.append(f)
        acks = []
        step = self.max_facts_per_record
        for p, packed in sorted(by_partition.items()):
            for i in range(0, len(packed), step):
                acks.append(await self.sender.send(p, encode_facts(packed[i : i + step])))
        for ack in acks:
            await ack
        return len(acks)


class MalformedRoutedRecord(ValueError):
    pass


def unpack_routed(value: bytes | None) -> list[Fact]:
    """The facts of one internal record (their `offset` is that of the contract record each came from)."""
    if not value:
        return []
    try:
        return _routed.decode(value)  # type: ignore[return-value]
    except msgspec.DecodeError as exc:
        raise MalformedRoutedRecord(str(exc)) from exc


async def decode_routed(records: Sequence[RawRecord]) -> Decoded:
    """The state stage's decode: internal records → their facts, per internal partition.

    A record that does not decode (only a writer of another format could make one) is logged and
    skipped: its offset still moves, so it cannot stall the partition."""
    out = Decoded(records=len(records))
    facts = out.facts
    for r in records:
        tp_facts = out.facts_of(r)
        try:
            unpacked = unpack_routed(r.value)
        except MalformedRoutedRecord:
            log.error("an internal record does not decode; skipped", extra={"partition": r.partition, "at": r.offset})
            out.skipped += 1
            out.record(r, 0)
            continue
        facts.extend(unpacked)
        tp_facts.extend(unpacked)
        # Stored in the segment as it came (the same MessagePack list of facts a segment holds).
        out.record(r, len(unpacked), r.value if unpacked else None)
    return out
