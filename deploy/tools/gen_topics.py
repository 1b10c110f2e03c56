"""Write deploy/helm/kasse/files/topics.json from the event contracts.

The Helm chart renders its Strimzi KafkaTopic resources from that file, so the topics a cluster gets
are exactly the ones the services use: names, partitions, retention and compaction from
`kasse_contracts.topics.TOPICS`, plus one dead-letter topic per consuming service. The per-topic
settings come from `kasse_common.topics_admin.topic_config`, the same function the provisioning
Job (`python -m kasse_common.topics_admin`) uses, so Strimzi and the Job create identical topics.

    uv run python deploy/tools/gen_topics.py           # rewrite the file
    uv run python deploy/tools/gen_topics.py --check   # exit 1 when it is stale (the tests do this)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from kasse_common.topics_admin import topic_config
from kasse_contracts.topics import TOPICS, dead_letter_topic

OUT = Path(__file__).resolve().parents[1] / "helm" / "kasse" / "files" / "topics.json"
# The services that consume, hence own a dead-letter topic (as in kasse_common.topics_admin.main).
CONSUMERS = ("catalog", "cart", "payment", "shipping", "metrics")


def _entry(name: str, **extra: Any) -> dict[str, Any]:
    spec = topic_config(name, "")
    return {
        "name": name,
        "partitions": spec.num_partitions,
        "config": dict(sorted(spec.topic_configs.items())),
        **extra,
    }


def build() -> dict[str, Any]:
    topics = [
        _entry(
            t.name,
            key=t.key,
            description=t.description,
            compacted=t.compacted,
            eventTypes=list(t.event_types),
            deadLetter=False,
        )
        for t in TOPICS.values()
    ]
    topics += [
        _entry(
            dead_letter_topic(s),
            key="(source record's key)",
            description=f"Dead letters of the {s} service's consumers (headers name the source topic, offset, error)",
            compacted=False,
            eventTypes=[],
            deadLetter=True,
        )
        for s in CONSUMERS
    ]
    return {
        "_generated": "by deploy/tools/gen_topics.py from kasse_contracts.topics; do not edit",
        "topics": topics,
    }


def render() -> str:
    return json.dumps(build(), indent=2) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail when the file differs from the contracts")
    args = parser.parse_args()
    text = render()
    if args.check:
        if not OUT.exists() or OUT.read_text() != text:
            print(f"{OUT} is stale: run `uv run python deploy/tools/gen_topics.py`", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text)
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
