"""Kafka topics: names, keys, partition counts and retention are part of the contract.

Rules (see contracts/README.md):
- a topic name ends in its major version (`.v1`); within a version only additive changes are allowed
  (new optional fields, new event types); a breaking change means a new topic `.v2`, produced in
  parallel until its subscribers have moved;
- the message key is the aggregate id named by `key`, so all events of one order (one cart, one
  session, one product) stay in order on one partition;
- partition counts only grow within a version, and only with a migration note: growing them moves keys.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace

DEFAULT_PARTITIONS = 6


@dataclass(frozen=True)
class Topic:
    name: str
    key: str
    description: str
    partitions: int = DEFAULT_PARTITIONS
    retention_ms: int = 7 * 24 * 3600 * 1000
    compacted: bool = False
    event_types: tuple[str, ...] = field(default_factory=tuple)
    """The CloudEvents types published on the topic. Computed from the event models (each
    `Event.topic`) when `kasse_contracts.events` is imported, which importing the package does."""

    @property
    def cleanup_policy(self) -> str:
        return "compact" if self.compacted else "delete"


STOREFRONT = "kasse.storefront.v1"
CATALOG = "kasse.catalog.v1"
STOCK = "kasse.stock.v1"
CARTS = "kasse.carts.v1"
ORDERS = "kasse.orders.v1"
PAYMENTS = "kasse.payments.v1"
SHIPPING = "kasse.shipping.v1"
SHIPPING_METHODS = "kasse.shipping-methods.v1"
EXPERIMENTS = "kasse.experiments.v1"
EXPOSURES = "kasse.exposures.v1"
WEBHOOKS = "kasse.webhooks.v1"

DEAD_LETTER_PREFIX = "kasse.dlq."


def dead_letter_topic(service: str) -> str:
    """Each consuming service has one dead-letter topic; headers say where a record came from."""
    return f"{DEAD_LETTER_PREFIX}{service}"


TOPICS: dict[str, Topic] = {
    t.name: t
    for t in (
        Topic(STOREFRONT, "session_id", "Discovery on the storefront: product views and searches"),
        Topic(CATALOG, "product_id", "Product changes (price, stock, availability) and reviews"),
        Topic(STOCK, "order_id", "Stock reservations for orders"),
        Topic(CARTS, "cart_id", "Cart changes, abandonment and the start of checkout"),
        Topic(ORDERS, "order_id", "Orders placed and cancelled"),
        Topic(PAYMENTS, "order_id", "Payments captured, failed and refunded"),
        Topic(SHIPPING, "order_id", "Shipments and returns"),
        Topic(
            SHIPPING_METHODS,
            "rate_table_id",
            "The current shipping methods, rates and delivery rules (latest per rate table)",
            partitions=1,
            retention_ms=-1,
            compacted=True,
        ),
        Topic(
            EXPERIMENTS,
            "experiment_id",
            "Experiment definitions (latest per experiment): what services fold into their read model",
            partitions=1,
            retention_ms=-1,
            compacted=True,
        ),
        Topic(EXPOSURES, "session_id", "Which variant of an experiment a session was shown (once per session)"),
        Topic(
            WEBHOOKS, "endpoint_id", "Webhook endpoints disabled after failing for the whole schedule, and re-enabled"
        ),
    )
}


# Topics internal to one service: not part of the event contract (no schema, no other reader), but
# provisioned with the contract topics (topics_admin, the chart's topic table).
METRICS_FACTS_BY_SESSION = "kasse.metrics.facts-by-session.v1"

INTERNAL_TOPICS: dict[str, Topic] = {
    t.name: t
    for t in (
        Topic(
            METRICS_FACTS_BY_SESSION,
            "session_id (the event id without one)",
            "Internal to metrics: its decoded facts re-keyed by session, packed per batch and partition"
            " (MessagePack), so each instance holds the state of its share of the sessions",
        ),
    )
}


def _attach_event_types(events: Iterable[tuple[str, str]]) -> None:
    """Fill each topic's `event_types` from `(event_type, topic)` pairs, in the order given.

    Called once by `kasse_contracts.events`, so the list can never drift from the models.
    """
    by_topic: dict[str, list[str]] = {name: [] for name in TOPICS}
    for event_type, topic in events:
        if topic not in by_topic:
            raise ValueError(f"{event_type} names topic {topic!r}, which is not in TOPICS")
        by_topic[topic].append(event_type)
    for name, types in by_topic.items():
        TOPICS[name] = replace(TOPICS[name], event_types=tuple(types))
