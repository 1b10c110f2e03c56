"""Create the contract topics with their partition counts (idempotent).

Services call it at start for the topics they use, so a fresh local stack or a test namespace works
without broker-side auto-creation. Production clusters may forbid topic creation to services; the
same function backs the provisioning CLI (`python -m kasse_common.topics_admin`).
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Iterable

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from kasse_common.messaging import aiokafka_security
from kasse_common.settings import ServiceSettings
from kasse_contracts.topics import DEAD_LETTER_PREFIX, INTERNAL_TOPICS, TOPICS

log = logging.getLogger(__name__)


def topic_config(physical: str, prefix: str, replication: int = 1) -> NewTopic:
    name = physical[len(prefix) :] if prefix and physical.startswith(prefix) else physical
    spec = TOPICS.get(name) or INTERNAL_TOPICS.get(name)
    if spec is None:  # dead-letter topics and anything not in the contract
        configs = {"retention.ms": str(14 * 24 * 3600 * 1000)} if name.startswith(DEAD_LETTER_PREFIX) else {}
        return NewTopic(
            physical,
            num_partitions=1 if name.startswith(DEAD_LETTER_PREFIX) else 6,
            replication_factor=replication,
            topic_configs=configs,
        )
    configs = {"retention.ms": str(spec.retention_ms)}
    if spec.compacted:
        configs["cleanup.policy"] = "compact"
    return NewTopic(physical, num_partitions=spec.partitions, replication_factor=replication, topic_configs=configs)


async def ensure_topics(settings: ServiceSettings, physical_names: Iterable[str]) -> None:
    names = sorted(set(physical_names))
    if not names or not settings.create_topics:
        return
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap, client_id="kasse-topics-admin", **aiokafka_security(settings)
    )
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [
            topic_config(n, settings.topic_prefix, settings.topic_replication_factor)
            for n in names
            if n not in existing
        ]
        if missing:
            try:
                await admin.create_topics(missing)
            except TopicAlreadyExistsError:
                pass  # a replica created it at the same time
            log.info("created topics", extra={"topics": [t.name for t in missing]})
    finally:
        await admin.close()


def main() -> None:
    """Create every contract topic, the services' internal topics and the dead-letter topics of the five services."""
    settings = ServiceSettings()
    names = [settings.topic(t) for t in (*TOPICS, *INTERNAL_TOPICS)]
    names += [settings.topic(f"{DEAD_LETTER_PREFIX}{s}") for s in ("catalog", "cart", "payment", "shipping", "metrics")]
    asyncio.run(ensure_topics(settings, names))
    print("\n".join(names), file=sys.stdout)


if __name__ == "__main__":
    main()
