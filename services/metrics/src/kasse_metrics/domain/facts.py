"""Facts: the compact, typed form of one consumed event that every KPI is computed from.

One small struct per kind of fact, holding only what the KPIs read. The projection dispatches on
the fact's type. Every fact keeps its CloudEvents id (the dedupe key), its event time in epoch
milliseconds (whole milliseconds: what the old BSON form kept, so the numbers do not change) and
the offset it was read at in its partition (a segment covers an offset range).

The structs are msgspec structs tagged for storage: a checkpoint segment is one MessagePack blob
of its facts (far cheaper to encode and decode than one BSON sub-document per fact).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import ClassVar

import msgspec

FRAUD_REASON = "fraud_suspected"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
ONE_MS = timedelta(milliseconds=1)


def to_ms(t: datetime) -> int:
    """Epoch milliseconds of an aware datetime, exactly (integer arithmetic, sub-ms truncated)."""
    return (t - EPOCH) // ONE_MS


def from_ms(ms: int) -> datetime:
    return EPOCH + timedelta(milliseconds=ms)


class Fact(msgspec.Struct, frozen=True, tag_field="k", array_like=True, omit_defaults=True):
    """Base of every fact. `event` names the contract event it came from (the per-type counts)."""

    event_id: str
    ms: int  # event time (occurred_at), epoch milliseconds: the minute a fact counts in
    offset: int  # where it was read in its partition
    session: str | None = None

    event: ClassVar[str] = ""


class Viewed(Fact, frozen=True, tag="v"):
    event: ClassVar[str] = "ProductViewed"
    product: str = ""
    category: str = ""
    channel: str = ""


class Searched(Fact, frozen=True, tag="s"):
    event: ClassVar[str] = "ProductSearched"
    channel: str = ""


class CartAdded(Fact, frozen=True, tag="a"):
    """CartUpdated that adds to the cart (`added`, or `quantity_changed` with a positive delta)."""

    event: ClassVar[str] = "CartUpdated"
    cart: str = ""
    product: str | None = None
    category: str | None = None
    name: str | None = None  # the product's name on the cart line (the dashboard shows names)


class CartChanged(Fact, frozen=True, tag="c"):
    """Any other CartUpdated (removals, decreases): traffic only."""

    event: ClassVar[str] = "CartUpdated"
    cart: str = ""


class CartLeft(Fact, frozen=True, tag="x"):
    event: ClassVar[str] = "CartAbandoned"
    cart: str = ""


class CheckoutBegan(Fact, frozen=True, tag="b"):
    event: ClassVar[str] = "CheckoutStarted"
    cart: str = ""


class Line(msgspec.Struct, frozen=True, array_like=True):
    product: str
    category: str
    quantity: int
    name: str = ""  # last, with a default: segments stored before it still decode


class Placed(Fact, frozen=True, tag="o"):
    event: ClassVar[str] = "OrderPlaced"
    order: str = ""
    cart: str = ""
    amount: int = 0
    currency: str = ""
    lines: tuple[Line, ...] = ()


class Cancelled(Fact, frozen=True, tag="n"):
    event: ClassVar[str] = "OrderCancelled"
    order: str = ""
    reason: str = ""


class Captured(Fact, frozen=True, tag="p"):
    event: ClassVar[str] = "PaymentCaptured"
    order: str = ""
    amount: int = 0
    currency: str = ""


class PayFailed(Fact, frozen=True, tag="f"):
    event: ClassVar[str] = "PaymentFailed"
    order: str = ""
    fraud: bool = False


class Refunded(Fact, frozen=True, tag="r"):
    event: ClassVar[str] = "PaymentRefunded"
    order: str = ""
    amount: int = 0
    currency: str = ""


class Dispatched(Fact, frozen=True, tag="d"):
    event: ClassVar[str] = "ShipmentDispatched"
    order: str = ""


class Delivered(Fact, frozen=True, tag="l"):
    event: ClassVar[str] = "ShipmentDelivered"
    order: str = ""


class Named(Fact, frozen=True, tag="m"):
    """ProductChanged: the catalog's name of a product (the dashboard names products, not ids)."""

    event: ClassVar[str] = "ProductChanged"
    product: str = ""
    name: str = ""


class Reviewed(Fact, frozen=True, tag="w"):
    event: ClassVar[str] = "ReviewSubmitted"
    product: str = ""
    rating: int = 0


class Exposed(Fact, frozen=True, tag="e"):
    """ExperimentExposed: the session was shown this variant (read by the experiment analysis)."""

    event: ClassVar[str] = "ExperimentExposed"
    experiment: str = ""
    variant: str = ""


class Other(Fact, frozen=True, tag="z"):
    """An event no KPI reads beyond counting it (ProductChanged, StockReserved, …): `name` is its type."""

    name: str = ""


AnyFact = (
    Viewed
    | Searched
    | CartAdded
    | CartChanged
    | CartLeft
    | CheckoutBegan
    | Placed
    | Cancelled
    | Captured
    | PayFailed
    | Refunded
    | Dispatched
    | Delivered
    | Reviewed
    | Named
    | Exposed
    | Other
)


def event_name(f: Fact) -> str:
    """The contract event type's class name a fact came from (`events` counts by it)."""
    return f.name if isinstance(f, Other) else f.event


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(list[AnyFact])


def encode_facts(facts: list[Fact] | tuple[Fact, ...]) -> bytes:
    return _encoder.encode(facts)


def join_packed(packed: Sequence[bytes]) -> bytes:
    """Several `encode_facts` blobs as one: the same bytes as `encode_facts` of all their facts, in order, without
    decoding and encoding them again (a MessagePack list is its length, then its items one after another)."""
    total = 0
    items = []
    for blob in packed:
        n, header = _list_header(blob)
        total += n
        items.append(memoryview(blob)[header:])
    if total < 16:
        head = bytes([0x90 | total])
    elif total < 1 << 16:
        head = b"\xdc" + total.to_bytes(2, "big")
    else:
        head = b"\xdd" + total.to_bytes(4, "big")
    return head + b"".join(items)


def _list_header(blob: bytes) -> tuple[int, int]:
    """(items, header bytes) of a MessagePack list."""
    first = blob[0]
    if 0x90 <= first <= 0x9F:
        return first & 0x0F, 1
    if first == 0xDC:
        return int.from_bytes(blob[1:3], "big"), 3
    if first == 0xDD:
        return int.from_bytes(blob[1:5], "big"), 5
    raise ValueError(f"not a MessagePack list (first byte {first:#x})")


def decode_facts(blob: bytes) -> list[AnyFact]:
    return _decoder.decode(blob)
