"""The payload models and the envelope: what producers and readers rely on."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from kasse_contracts import CloudEventAttributes, Money
from kasse_contracts.base import Event, FunnelEvent
from kasse_contracts.envelope import REQUIRED_HEADERS, source_for
from kasse_contracts.events import (
    ALL_EVENTS,
    EVENTS_BY_TYPE,
    CartAbandoned,
    OrderPlaced,
    ProductSearched,
    SearchFilters,
    ShipmentDispatched,
    ShippingMethodsPublished,
)
from kasse_contracts.examples import EXAMPLES
from kasse_contracts.topics import TOPICS

pytestmark = pytest.mark.unit

EVENT_IDS = [e.__name__ for e in ALL_EVENTS]

# The producer of each event, as agreed with the service teams.
PRODUCERS = {
    "catalog": {
        "ProductViewed",
        "ProductSearched",
        "ProductChanged",
        "ReviewSubmitted",
        "StockReserved",
        "StockRejected",
    },
    "cart": {"CartUpdated", "CartAbandoned", "CheckoutStarted", "OrderPlaced", "OrderCancelled"},
    "payment": {"PaymentCaptured", "PaymentFailed", "PaymentRefunded", "InvoiceIssued", "CreditNoteIssued"},
    "shipping": {
        "ShippingMethodsPublished",
        "ShipmentCreated",
        "ShipmentDispatched",
        "ShipmentDelivered",
        "ReturnRequested",
        "ReturnReceived",
        "ShipmentCancelled",
        "CancellationRefused",
    },
    "metrics": {"ExperimentChanged"},
    "experiments": {"ExperimentExposed"},  # any honouring service, through the kit's helper
    "webhooks": {"WebhookEndpointDisabled", "WebhookEndpointEnabled"},
}

# The aggregate id each example's record is keyed by (session, product, cart, order, rate table).
EXPECTED_KEYS = {
    "ProductViewed": "sess_8f3a2c91",
    "ProductSearched": "sess_8f3a2c91",
    "ProductChanged": "prod_teapot_cast_iron",
    "ReviewSubmitted": "prod_mug_stoneware",
    "StockReserved": "ord_2026_000318",
    "StockRejected": "ord_2026_000319",
    "CartUpdated": "cart_5d7e0b",
    "CartAbandoned": "cart_91aa3f",
    "CheckoutStarted": "cart_5d7e0b",
    "OrderPlaced": "ord_2026_000318",
    "OrderCancelled": "ord_2026_000319",
    "PaymentCaptured": "ord_2026_000318",
    "PaymentFailed": "ord_2026_000322",
    "PaymentRefunded": "ord_2026_000318",
    "InvoiceIssued": "ord_2026_000318",
    "CreditNoteIssued": "ord_2026_000318",
    "ShippingMethodsPublished": "default",
    "ShipmentCreated": "ord_2026_000318",
    "ShipmentDispatched": "ord_2026_000318",
    "ShipmentDelivered": "ord_2026_000318",
    "ReturnRequested": "ord_2026_000318",
    "ReturnReceived": "ord_2026_000318",
    "ShipmentCancelled": "ord_7f3a9c5511",
    "CancellationRefused": "ord_2026_000318",
    "ExperimentChanged": "exp_free_shipping_35",
    "ExperimentExposed": "sess_f0a233",
    "WebhookEndpointDisabled": "whe_3c9d1f0a7b",
    "WebhookEndpointEnabled": "whe_3c9d1f0a7b",
}


def test_every_event_has_its_own_type_and_one_example() -> None:
    assert len(ALL_EVENTS) == len(set(ALL_EVENTS)) >= 22
    assert len(EVENTS_BY_TYPE) == len(ALL_EVENTS), "two events share a CloudEvents type"
    assert list(EXAMPLES) == list(ALL_EVENTS)
    assert all(type(sample) is cls for cls, sample in EXAMPLES.items())


@pytest.mark.parametrize("event", ALL_EVENTS, ids=EVENT_IDS)
def test_round_trips_through_json(event: type[Event]) -> None:
    sample = EXAMPLES[event]
    wire = sample.model_dump_json()
    back = event.model_validate_json(wire)
    assert back == sample
    assert back.model_dump_json() == wire
    # The way kasse_common decodes: json.loads then model_validate (python mode).
    assert event.model_validate(json.loads(wire)) == sample


@pytest.mark.parametrize("event", ALL_EVENTS, ids=EVENT_IDS)
def test_metadata_is_consistent(event: type[Event]) -> None:
    producer = next(p for p, names in PRODUCERS.items() if event.__name__ in names)
    assert event.event_type == f"io.kasse.{producer}.{event.__name__}.v1"
    topic = TOPICS[event.topic]
    assert topic.key == event.key_field, f"{event.__name__} is keyed differently from its topic"
    assert event.key_field in event.model_fields
    assert event.event_type in topic.event_types
    assert event.__dict__.get("__doc__"), f"{event.__name__} needs a docstring: it is its schema description"
    assert event.model_config.get("frozen") is True


def test_topics_list_exactly_the_events_published_on_them() -> None:
    listed = [t for topic in TOPICS.values() for t in topic.event_types]
    assert sorted(listed) == sorted(EVENTS_BY_TYPE)
    assert TOPICS["kasse.carts.v1"].event_types == (
        "io.kasse.cart.CartUpdated.v1",
        "io.kasse.cart.CartAbandoned.v1",
        "io.kasse.cart.CheckoutStarted.v1",
    )
    assert all(topic.event_types for topic in TOPICS.values()), "a topic nobody publishes to"


@pytest.mark.parametrize("event", ALL_EVENTS, ids=EVENT_IDS)
def test_message_key_is_the_aggregate_id(event: type[Event]) -> None:
    assert EXAMPLES[event].message_key() == EXPECTED_KEYS[event.__name__]


def test_message_key_uses_the_key_field_not_another_id() -> None:
    order = EXAMPLES[OrderPlaced]
    assert isinstance(order, OrderPlaced)
    other = order.model_copy(update={"order_id": "ord_X", "cart_id": "cart_Y", "session_id": "sess_Z"})
    assert other.message_key() == "ord_X"
    table = ShippingMethodsPublished.model_validate(
        EXAMPLES[ShippingMethodsPublished].model_dump(exclude={"rate_table_id"})
    )
    assert table.message_key() == "default"


# ---------------------------------------------------------------------------------------------- Money


def test_money_accepts_integer_minor_units() -> None:
    assert Money(amount=0, currency="EUR").amount == 0
    assert Money.model_validate_json('{"amount": 1999, "currency": "SEK"}') == Money(amount=1999, currency="SEK")


@pytest.mark.parametrize("amount", [19.99, 10.0, "1999", True], ids=["float", "integral-float", "string", "bool"])
def test_money_rejects_anything_but_an_int(amount: object) -> None:
    with pytest.raises(ValidationError, match="amount"):
        Money(amount=amount, currency="EUR")


@pytest.mark.parametrize("raw", ["19.99", "10.0", '"1999"', "true"])
def test_money_rejects_non_integers_on_the_wire(raw: str) -> None:
    with pytest.raises(ValidationError, match="amount"):
        Money.model_validate_json(f'{{"amount": {raw}, "currency": "EUR"}}')


def test_money_rejects_negative_amounts() -> None:
    with pytest.raises(ValidationError, match="greater than or equal to 0"):
        Money(amount=-1, currency="EUR")


@pytest.mark.parametrize("currency", ["eur", "EU", "EURO", "E1R", "", "€"])
def test_money_rejects_bad_currency_codes(currency: str) -> None:
    with pytest.raises(ValidationError, match="currency"):
        Money(amount=100, currency=currency)


def test_money_is_frozen() -> None:
    money = Money(amount=100, currency="EUR")
    with pytest.raises(ValidationError):
        money.amount = 5  # type: ignore[misc]


def test_other_minor_unit_amounts_reject_floats_too() -> None:
    with pytest.raises(ValidationError, match="max_price"):
        SearchFilters(max_price=49.5)


# ---------------------------------------------------------------------------------------- payloads


def test_readers_ignore_unknown_fields() -> None:
    """Additive evolution: a newer producer may send fields this reader does not know."""
    wire = json.loads(EXAMPLES[ProductSearched].model_dump_json())
    wire["personalised"] = True
    assert ProductSearched.model_validate(wire) == EXAMPLES[ProductSearched]


def test_events_are_immutable() -> None:
    sample = EXAMPLES[OrderPlaced]
    with pytest.raises(ValidationError):
        setattr(sample, "order_id", "other")  # noqa: B010


@pytest.mark.parametrize(
    ("event", "field"),
    [(OrderPlaced, "occurred_at"), (CartAbandoned, "last_activity_at"), (ShipmentDispatched, "dispatched_at")],
)
def test_timestamps_must_carry_a_timezone(event: type[Event], field: str) -> None:
    wire = EXAMPLES[event].model_dump(mode="json")
    wire[field] = "2026-11-20T09:31:00"
    with pytest.raises(ValidationError, match=field):
        event.model_validate(wire)


def test_funnel_events_require_a_session() -> None:
    wire = EXAMPLES[OrderPlaced].model_dump(mode="json")
    del wire["session_id"]
    with pytest.raises(ValidationError, match="session_id"):
        OrderPlaced.model_validate(wire)
    assert issubclass(OrderPlaced, FunnelEvent)


def test_order_placed_validates_email_lines_and_countries() -> None:
    wire = EXAMPLES[OrderPlaced].model_dump(mode="json")
    with pytest.raises(ValidationError, match="email"):
        OrderPlaced.model_validate({**wire, "email": "not-an-email"})
    with pytest.raises(ValidationError, match="lines"):
        OrderPlaced.model_validate({**wire, "lines": []})
    with pytest.raises(ValidationError, match="billing_country"):
        OrderPlaced.model_validate({**wire, "billing_country": "Germany"})
    with pytest.raises(ValidationError, match="country"):
        OrderPlaced.model_validate({**wire, "shipping_address": {**wire["shipping_address"], "country": "de"}})


# ---------------------------------------------------------------------------------------- envelope


def _attributes() -> CloudEventAttributes:
    sample = EXAMPLES[OrderPlaced]
    return CloudEventAttributes(
        id="3f6c1b7e-2a55-4a70-8c8e-2f0f1b3f9d11",
        type=OrderPlaced.event_type,
        source=source_for("cart"),
        time=datetime(2026, 11, 20, 9, 31, 0, 120000, tzinfo=UTC),
        subject=sample.message_key(),
        traceparent="00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        tracestate="vendor=abc",
    )


def test_attributes_round_trip_through_headers() -> None:
    attributes = _attributes()
    headers = attributes.to_headers()
    assert headers == {
        "ce_id": "3f6c1b7e-2a55-4a70-8c8e-2f0f1b3f9d11",
        "ce_type": "io.kasse.cart.OrderPlaced.v1",
        "ce_source": "urn:kasse:service:cart",
        "ce_time": "2026-11-20T09:31:00.120000+00:00",
        "ce_specversion": "1.0",
        "ce_subject": "ord_2026_000318",
        "content-type": "application/json",
        "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "tracestate": "vendor=abc",
    }
    assert CloudEventAttributes.from_headers(headers) == attributes


def test_trace_headers_are_optional() -> None:
    attributes = _attributes().model_copy(update={"traceparent": None, "tracestate": None})
    headers = attributes.to_headers()
    assert "traceparent" not in headers and "tracestate" not in headers
    assert CloudEventAttributes.from_headers(headers) == attributes


@pytest.mark.parametrize("missing", REQUIRED_HEADERS)
def test_a_missing_header_is_a_key_error_naming_it(missing: str) -> None:
    headers = _attributes().to_headers()
    del headers[missing]
    with pytest.raises(KeyError, match=missing):
        CloudEventAttributes.from_headers(headers)


def test_a_naive_time_header_is_rejected() -> None:
    headers = {**_attributes().to_headers(), "ce_time": "2026-11-20T09:31:00"}
    with pytest.raises(ValueError, match="time"):
        CloudEventAttributes.from_headers(headers)
