"""Every service's OpenAPI document fuzzed by schemathesis against the services as real processes on
the real stack: the fixtures start them, count operations, examples and failures, and print the tally."""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from kasse_testkit import Namespace, ServiceProcess, free_port
from kasse_testkit.e2e.shop import ADMIN, Shop
from kasse_testkit.infrastructure import Infrastructure
from kasse_testkit.kafka import delete_namespace_topics

WEBHOOKS_ADMIN = "contract-webhooks-admin"


@dataclass
class Services:
    urls: dict[str, str]
    admin_tokens: dict[str, str]


@dataclass
class Tally:
    """What the fuzzer did, per service; printed at the end of the session."""

    operations: dict[str, set[str]] = field(default_factory=dict)
    examples: dict[str, int] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)

    def lines(self) -> list[str]:
        seconds = time.monotonic() - self.started
        total_ops = sum(len(ops) for ops in self.operations.values())
        total_examples = sum(self.examples.values())
        lines = [
            f"schemathesis: {total_ops} operations, {total_examples} examples in {seconds:.0f} s "
            "(a server error or contract violation fails its operation's subtest, listed by pytest)"
        ]
        for service in sorted(self.operations):
            lines.append(
                f"  {service}: {len(self.operations[service])} operations, {self.examples.get(service, 0)} examples"
            )
        return lines


TALLY_KEY = pytest.StashKey[Tally]()


@pytest.fixture(scope="session")
def fuzz_tally(request: pytest.FixtureRequest) -> Tally:
    tally = Tally()
    request.config.stash[TALLY_KEY] = tally
    return tally


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    tally = config.stash.get(TALLY_KEY, None)
    if tally is not None and tally.operations:
        terminalreporter.section("API contract fuzzing")
        for line in tally.lines():
            terminalreporter.write_line(line)


def webhooks_env(infra: Infrastructure, namespace: Namespace, port: int) -> dict[str, str]:
    # Its own namespace: it never sees the other services' events, so the endpoints the fuzzer registers
    # (public addresses among them) get nothing delivered. No network is allowed for endpoints.
    return {
        "KASSE_KAFKA_BOOTSTRAP": infra.kafka_bootstrap,
        "KASSE_MONGO_URI": infra.mongo_uri,
        "KASSE_WEBHOOKS_TOPIC_PREFIX": namespace.topic_prefix,
        "KASSE_WEBHOOKS_MONGO_DATABASE": namespace.database("webhooks"),
        "KASSE_WEBHOOKS_HTTP_PORT": str(port),
        "KASSE_WEBHOOKS_ADMIN_TOKEN": WEBHOOKS_ADMIN,
        "KASSE_WEBHOOKS_LOG_JSON": "true",
    }


@pytest.fixture(scope="session")
async def contract_services(
    kasse_infra: Infrastructure, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Services]:
    """catalog, cart, payment, shipping, metrics (an e2e Shop) and webhooks, as real processes."""
    log_dir = Path(tmp_path_factory.mktemp("contract"))
    shop = Shop(kasse_infra, Namespace(uuid.uuid4().hex[:10]), log_dir)
    webhooks_namespace = Namespace(uuid.uuid4().hex[:10])
    port = free_port()
    webhooks = ServiceProcess(
        [sys.executable, str(Path(__file__).with_name("offline_webhooks.py"))],
        webhooks_env(kasse_infra, webhooks_namespace, port),
        port=port,
        log_path=log_dir / "webhooks.log",
    )
    try:
        await asyncio.gather(shop.start(), webhooks.start(timeout=120))
        yield Services(
            urls={**{name: shop.url(name) for name in ADMIN}, "webhooks": webhooks.base_url},
            admin_tokens={**ADMIN, "webhooks": WEBHOOKS_ADMIN},
        )
    finally:
        await webhooks.stop()
        await shop.stop()
        delete_namespace_topics(kasse_infra.kafka_bootstrap, webhooks_namespace.topic_prefix)
