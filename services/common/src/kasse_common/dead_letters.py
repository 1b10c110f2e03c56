"""Dead letters: list, inspect and re-publish (redrive) a service's `kasse.dlq.<service>` records.

A redrive publishes the original record (value, key, headers without `kasse_dlq_*`) to the topic it
came from, exactly once per dead letter: a marker `dlq_redriven/<partition>:<offset>` is inserted
first (unique `_id`), so a second request, from the API, the console or another replica, is
answered "redriven already" and publishes nothing. The event keeps its `ce_id`, so even a crash
between the marker and the publish (then redrive again with `force`) cannot apply it twice.

A record dead-lettered only because the store or broker stayed away beyond the consumer's retry window
(`kasse_dlq_transient: true`) is redriven by the service itself (`redrive_transient`, run by the runtime
every `dead_letter_check_interval_s` once the store and broker answer, `dead_letter_auto_redrive_after_s`
after it was set aside): a shop expects the stock of a cancelled order to come back once the outage is
over, without a person. Anything else (a bug, a malformed or refused event) waits for a person who fixed
the cause, with the KasseDeadLettersWaiting alert.

Auto-redrives are capped per record: each one adds 1 to the header `kasse_auto_redrives` of the record it
re-publishes (the consumer keeps a record's headers when it dead-letters it again), and a dead letter that
was auto-redriven `dead_letter_max_auto_redrives` times (3) is left waiting for a person. A record that
fails "transiently" for a reason other than an outage (a write conflict that never clears, a dependency that
always times out) would otherwise cycle retry window → dead letter → redrive for ever. Such letters count in
`kasse_dead_letters_waiting` (so the alert fires) and in `kasse_dead_letters_redrives_exhausted`. A person's
redrive (API or console) starts the count again: they fixed the cause.

The console (`make dlq SERVICE=cart ARGS="list"`):
    uv run python -m kasse_common.dead_letters cart list
    uv run python -m kasse_common.dead_letters cart show 0:12
    uv run python -m kasse_common.dead_letters cart redrive 0:12
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from kasse_common.messaging import aiokafka_security
from kasse_common.settings import ServiceSettings
from kasse_contracts.topics import dead_letter_topic

REDRIVEN = "dlq_redriven"
AUTO_REDRIVES = "kasse_auto_redrives"  # how many times the service redrove this record by itself


def auto_redrives(headers: dict[str, str]) -> int:
    try:
        return max(0, int(headers.get(AUTO_REDRIVES, "0")))
    except ValueError:
        return 0


@dataclass(frozen=True)
class DeadLetter:
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: dict[str, str]

    @property
    def ref(self) -> str:
        return f"{self.partition}:{self.offset}"

    def summary(self, redriven: bool) -> dict[str, Any]:
        h = self.headers
        return {
            "ref": self.ref,
            "event_id": h.get("ce_id"),
            "event_type": h.get("ce_type"),
            "source_topic": h.get("kasse_dlq_topic"),
            "error_type": h.get("kasse_dlq_error_type"),
            "error": h.get("kasse_dlq_error", "")[:300],
            "attempts": h.get("kasse_dlq_attempts"),
            "auto_redrives": auto_redrives(h),
            "dead_lettered_at": h.get("kasse_dlq_time"),
            "age_s": round(max(0.0, time.time() - self.timestamp_ms / 1000), 1),
            "redriven": redriven,
        }

    def detail(self, redriven: bool) -> dict[str, Any]:
        return {
            **self.summary(redriven),
            "key": self.key.decode(errors="replace") if self.key else None,
            "value": self.value.decode(errors="replace") if self.value else None,
            "headers": self.headers,
        }


class DeadLetters:
    def __init__(self, settings: ServiceSettings, db: AsyncDatabase[Any]) -> None:
        self.settings = settings
        self.topic = settings.topic(dead_letter_topic(settings.service_name))
        self.redriven = db[REDRIVEN]
        self.waiting = 0  # not redriven, as of the last `measure()`
        self.oldest_age_s = 0.0
        self.redrives_exhausted = 0  # waiting, of an outage, but auto-redriven `max_auto_redrives` times already
        self.max_auto_redrives = settings.dead_letter_max_auto_redrives

    async def read(self) -> list[DeadLetter]:
        """Every record of the dead-letter topic (they are few; read from the start to the end)."""
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.kafka_bootstrap,
            group_id=None,
            enable_auto_commit=False,
            **aiokafka_security(self.settings),
        )
        await consumer.start()
        try:
            metadata = await consumer._client.fetch_all_metadata()  # a topic nobody subscribed to
            partitions = metadata.partitions_for_topic(self.topic) or set()
            tps = [TopicPartition(self.topic, p) for p in sorted(partitions)]
            if not tps:
                return []
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            ends = await consumer.end_offsets(tps)
            letters: list[DeadLetter] = []
            for tp in tps:
                while await consumer.position(tp) < ends[tp]:
                    batch = await consumer.getmany(tp, timeout_ms=1000)
                    for record in batch.get(tp, []):
                        letters.append(
                            DeadLetter(
                                record.partition,
                                record.offset,
                                record.timestamp,
                                record.key,
                                record.value,
                                {k: v.decode(errors="replace") for k, v in record.headers},
                            )
                        )
            return letters
        finally:
            await consumer.stop()

    async def _redriven_refs(self) -> set[str]:
        return {d["_id"] for d in await self.redriven.find({}, {"_id": 1}).to_list()}

    async def list(self) -> list[dict[str, Any]]:
        done = await self._redriven_refs()
        return [letter.summary(letter.ref in done) for letter in await self.read()]

    async def show(self, ref: str) -> dict[str, Any] | None:
        done = await self._redriven_refs()
        letter = next((x for x in await self.read() if x.ref == ref), None)
        return letter.detail(ref in done) if letter else None

    async def redrive(self, ref: str, *, auto: bool = False) -> dict[str, Any]:
        """Re-publish one dead letter to its source topic, once; says what happened.

        `auto`: the service redrives it by itself (counted in the record's `kasse_auto_redrives` header);
        otherwise a person does, and the count starts again."""
        letter = next((x for x in await self.read() if x.ref == ref), None)
        if letter is None:
            return {"ref": ref, "outcome": "not_found"}
        source = letter.headers.get("kasse_dlq_topic")
        if not source:
            return {"ref": ref, "outcome": "no_source_topic"}
        try:
            await self.redriven.insert_one(
                {"_id": ref, "event_id": letter.headers.get("ce_id"), "topic": source, "at": datetime.now(UTC)}
            )
        except DuplicateKeyError:
            return {"ref": ref, "outcome": "redriven_already"}
        kept = {k: v for k, v in letter.headers.items() if not k.startswith("kasse_dlq_") and k != AUTO_REDRIVES}
        if auto:
            kept[AUTO_REDRIVES] = str(auto_redrives(letter.headers) + 1)
        headers = [(k, v.encode()) for k, v in kept.items()]
        producer = AIOKafkaProducer(
            bootstrap_servers=self.settings.kafka_bootstrap,
            enable_idempotence=True,
            acks="all",
            **aiokafka_security(self.settings),
        )
        await producer.start()
        try:
            await producer.send_and_wait(source, letter.value, key=letter.key, headers=headers)
        except Exception:
            await self.redriven.delete_one({"_id": ref})  # not published: it may be redriven again
            raise
        finally:
            await producer.stop()
        return {"ref": ref, "outcome": "redriven", "topic": source, "event_id": letter.headers.get("ce_id")}

    async def redrive_transient(self, older_than_s: float) -> tuple[str, ...]:
        """Redrive every dead letter set aside only because the store or broker stayed away (header
        `kasse_dlq_transient`), dead-lettered at least `older_than_s` ago and not redriven yet; their refs.

        The caller makes sure the store and broker answer again. Each is redriven once (the marker); if the
        outage is not over it comes back through the retry window and is dead-lettered again, as a new ref.
        One that was auto-redriven `max_auto_redrives` times already is left for a person (`exhausted`).
        """
        done = await self._redriven_refs()
        now_ms = time.time() * 1000
        redriven: tuple[str, ...] = ()
        for letter in await self.read():
            if letter.ref in done or not self._of_an_outage(letter) or self._exhausted(letter):
                continue
            if now_ms - letter.timestamp_ms < older_than_s * 1000:
                continue
            if (await self.redrive(letter.ref, auto=True))["outcome"] == "redriven":
                redriven += (letter.ref,)
        return redriven

    @staticmethod
    def _of_an_outage(letter: DeadLetter) -> bool:
        return letter.headers.get("kasse_dlq_transient") == "true"

    def _exhausted(self, letter: DeadLetter) -> bool:
        return auto_redrives(letter.headers) >= self.max_auto_redrives

    async def measure(self) -> None:
        """Dead letters not redriven yet, and the age of the oldest (Prometheus)."""
        done = await self._redriven_refs()
        waiting = [x for x in await self.read() if x.ref not in done]
        self.waiting = len(waiting)
        self.redrives_exhausted = sum(1 for x in waiting if self._of_an_outage(x) and self._exhausted(x))
        oldest = min((x.timestamp_ms for x in waiting), default=None)
        self.oldest_age_s = max(0.0, time.time() - oldest / 1000) if oldest is not None else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("service", help="catalog, cart, payment, shipping, …")
    parser.add_argument("command", choices=["list", "show", "redrive"])
    parser.add_argument("ref", nargs="?", help="partition:offset (from `list`)")
    args = parser.parse_args()

    class Settings(ServiceSettings):
        service_name: ClassVar[str] = args.service

    async def run() -> Any:
        from kasse_common.mongo import create_mongo_client

        settings = Settings()
        mongo = create_mongo_client(settings)
        letters = DeadLetters(settings, mongo[settings.database_name])
        try:
            if args.command == "list":
                return await letters.list()
            if not args.ref:
                raise SystemExit(f"{args.command} needs a ref (partition:offset)")
            if args.command == "show":
                return await letters.show(args.ref)
            return await letters.redrive(args.ref)
        finally:
            await mongo.close()

    print(json.dumps(asyncio.run(run()), indent=2, default=str))


if __name__ == "__main__":
    main()
