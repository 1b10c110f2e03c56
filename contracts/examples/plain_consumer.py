"""Read Kasse events with a plain Kafka client and the published JSON Schemas — no Kasse code.

    pip install aiokafka jsonschema
    python plain_consumer.py --bootstrap 127.0.0.1:19092 --topic kasse.orders.v1 --schemas ./schemas

Each record is a CloudEvent in Kafka binary mode: the attributes are `ce_*` headers, the value is the
JSON payload, the key is the aggregate id. The `ce_type` header names the event; the schema file
with the same `x-kasse-ce-type` validates the payload. Prints one JSON line per event.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer
from jsonschema import Draft202012Validator


def load_validators(schema_dir: Path) -> dict[str, Draft202012Validator]:
    """ce_type -> validator, from the schema files' `x-kasse-ce-type`."""
    validators = {}
    for path in sorted(schema_dir.glob("*.json")):
        schema = json.loads(path.read_text())
        ce_type = schema.get("x-kasse-ce-type")
        if ce_type:
            validators[ce_type] = Draft202012Validator(schema)
    return validators


async def consume(bootstrap: str, topic: str, schema_dir: Path, max_events: int, timeout_s: float) -> int:
    validators = load_validators(schema_dir)
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    seen = 0
    try:
        while seen < max_events:
            batch = await consumer.getmany(timeout_ms=int(timeout_s * 1000))
            if not batch:
                break
            for records in batch.values():
                for record in records:
                    headers = {k: v.decode() for k, v in record.headers}
                    ce_type = headers.get("ce_type")
                    validator = validators.get(ce_type or "")
                    if validator is None:
                        continue  # an event type this subscriber does not know: skip, do not fail
                    payload: Any = json.loads(record.value)
                    errors = [e.message for e in validator.iter_errors(payload)]
                    print(
                        json.dumps(
                            {
                                "id": headers["ce_id"],
                                "type": ce_type,
                                "source": headers["ce_source"],
                                "time": headers["ce_time"],
                                "subject": headers["ce_subject"],
                                "key": record.key.decode() if record.key else None,
                                "valid": not errors,
                                "errors": errors,
                                "data": payload,
                            }
                        ),
                        flush=True,
                    )
                    seen += 1
    finally:
        await consumer.stop()
    return seen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--schemas", type=Path, default=Path(__file__).resolve().parents[1] / "schemas")
    parser.add_argument("--max-events", type=int, default=1_000_000)
    parser.add_argument("--idle-timeout", type=float, default=10.0, help="stop after this long without records")
    args = parser.parse_args()
    asyncio.run(consume(args.bootstrap, args.topic, args.schemas, args.max_events, args.idle_timeout))
    # Proof for the test that runs this script: nothing from Kasse was imported.
    print(json.dumps({"kasse_modules": sorted(m for m in sys.modules if m.startswith("kasse"))}), file=sys.stderr)


if __name__ == "__main__":
    main()
