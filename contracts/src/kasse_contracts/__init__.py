"""Kasse's published event contracts. See contracts/README.md."""

from kasse_contracts.base import Channel, ContractModel, Event, FunnelEvent, Money
from kasse_contracts.envelope import CloudEventAttributes
from kasse_contracts.topics import TOPICS, Topic, dead_letter_topic

# isort: split
# Imported for its effect too: it fills each `TOPICS[...].event_types` from the event models.
from kasse_contracts import events as events

__version__ = "1.0.0"

__all__ = [
    "TOPICS",
    "Channel",
    "CloudEventAttributes",
    "ContractModel",
    "Event",
    "FunnelEvent",
    "Money",
    "Topic",
    "dead_letter_topic",
    "events",
]
