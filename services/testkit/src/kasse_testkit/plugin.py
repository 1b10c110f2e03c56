"""Kasse's pytest plugin (registered through the `pytest11` entry point of kasse-testkit).

Fixtures:
- `kasse_infra` (session): real Kafka, Mongo-protocol store and stripe-mock (see infrastructure.py);
- `namespace`: a unique topic prefix and database suffix per test, so tests never see each other;
- `settings_for`: builds a service's settings pointed at the infrastructure and the namespace;
- `topic_reader`, `test_publisher`: read and write namespaced topics with plain aiokafka.
"""

from __future__ import annotations

import uuid
import warnings
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest

from kasse_common.settings import ServiceSettings
from kasse_testkit.infrastructure import Infrastructure, InfrastructureUnavailable, acquire, find_repo_root
from kasse_testkit.kafka import TestPublisher, TopicReader, delete_namespace_topics

S = TypeVar("S", bound=ServiceSettings)


@pytest.fixture(scope="session")
def kasse_infra(request: pytest.FixtureRequest) -> Iterator[Infrastructure]:
    with ExitStack() as stack:
        try:
            infra = acquire(find_repo_root(request.config.rootpath), stack)
        except InfrastructureUnavailable as exc:
            pytest.fail(str(exc), pytrace=False)
        print(f"\n[kasse] integration infrastructure from {infra.origin}: {infra.env()}")
        yield infra


@dataclass(frozen=True)
class Namespace:
    token: str

    @property
    def topic_prefix(self) -> str:
        return f"test-{self.token}."

    def database(self, service: str) -> str:
        return f"test_{self.token}_{service}"

    def topic(self, name: str) -> str:
        return self.topic_prefix + name


@pytest.fixture
def namespace(kasse_infra: Infrastructure) -> Iterator[Namespace]:
    # Databases are left behind on purpose: FerretDB v1 (SQLite) can crash with SIGBUS when a database
    # file is dropped while another connection still maps its WAL (`stack.py stop --purge` clears them).
    # Topics are deleted after the test (its services have stopped by then, as they depend on this
    # fixture): the broker holds files open per partition and a full run would exhaust its limit.
    namespace = Namespace(uuid.uuid4().hex[:10])
    yield namespace
    try:
        delete_namespace_topics(kasse_infra.kafka_bootstrap, namespace.topic_prefix)
    except Exception as exc:  # cleanup must not fail the test it follows, but a leak must be visible
        warnings.warn(f"could not delete the topics of {namespace.topic_prefix}: {exc!r}", stacklevel=1)


@pytest.fixture
def settings_for(kasse_infra: Infrastructure, namespace: Namespace) -> Callable[..., Any]:
    """settings_for(CatalogSettings, **overrides) -> settings on the real stack, in this test's namespace."""

    def build(cls: type[S], **overrides: Any) -> S:
        values: dict[str, Any] = {
            "profile": "development",  # dev secrets where a test sets none (production fails closed)
            # Every test client is 127.0.0.1: abuse limits off; a test of a limit sets it True.
            "rate_limits_enabled": False,
            "kafka_bootstrap": kasse_infra.kafka_bootstrap,
            "mongo_uri": kasse_infra.mongo_uri,
            "topic_prefix": namespace.topic_prefix,
            "mongo_database": namespace.database(cls.service_name),
            "log_json": False,
            "outbox_poll_interval_s": 0.2,
            "consumer_backoff_initial_s": 0.01,
        }
        if "stripe_api_base" in cls.model_fields:
            values["stripe_api_base"] = kasse_infra.stripe_api_base
        values.update(overrides)
        return cls(**values)

    return build


@pytest.fixture
def topic_reader(kasse_infra: Infrastructure, namespace: Namespace) -> Callable[..., TopicReader]:
    """topic_reader(contract_topic, ...) -> async context manager collecting the namespaced topics."""

    def build(*contract_topics: str) -> TopicReader:
        return TopicReader(kasse_infra.kafka_bootstrap, *(namespace.topic(t) for t in contract_topics))

    return build


@pytest.fixture
async def test_publisher(kasse_infra: Infrastructure, namespace: Namespace) -> AsyncIterator[TestPublisher]:
    async with TestPublisher(kasse_infra.kafka_bootstrap, namespace.topic_prefix) as publisher:
        yield publisher
