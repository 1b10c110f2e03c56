"""The partial aggregates each instance publishes for its internal partitions (collection
`partial_aggregates`), read by every other instance. Every document is read by `_id` only (FerretDB v1
narrows nothing else), and an idle poll reads one small document:

- `seq`: `{<partition key>: seq}`, the latest publication of every partition (the one read per poll);
- `<key>|h`: the partition's header: its seq, each minute's seq of last change (MessagePack), and the
  seq of its names and experiment sums;
- `<key>|m|<minute>`: one minute's counters (MessagePack), rewritten when the minute changes;
- `<key>|names`, `<key>|exp`: the product names and the per-variant experiment sums.
A reader fetches only the minutes whose seq is newer than the one it holds.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

import msgspec
from pymongo import DeleteOne, ReplaceOne, UpdateOne
from pymongo.asynchronous.database import AsyncDatabase

from kasse_metrics.adapters.mongo_commands import STATEMENTS_PER_COMMAND
from kasse_metrics.application.partitions import PartialUpdate, RemoteRead
from kasse_metrics.domain.experiment_analysis import aggregates_of_state, aggregates_state
from kasse_metrics.domain.kpis import CounterKey

SEQ_DOC = "seq"
_items_encoder = msgspec.msgpack.Encoder()
_items_decoder = msgspec.msgpack.Decoder(list[tuple[CounterKey, int]])
_minute_seq_decoder = msgspec.msgpack.Decoder(dict[int, int])
_names_decoder = msgspec.msgpack.Decoder(dict[str, tuple[int, int, str]])


class MongoPartialStore:
    COLLECTION = "partial_aggregates"

    def __init__(self, db: AsyncDatabase[Any]) -> None:
        self.docs = db[self.COLLECTION]

    async def publish(self, updates: list[PartialUpdate]) -> None:
        # In order: a partition's header after the minutes it points to (a reader may find minutes newer
        # than their header: it reads them again next time, never a header newer than its minutes), the
        # `seq` document last. A few commands per publication instead of one round trip per document:
        # every 50 ms, with six partitions, that was ~15 writes and the largest share of the service's
        # event loop beside the ingest (bench (d)).
        ops: list[Any] = []
        for u in updates:
            for minute, bucket in u.minutes.items():
                _id = f"{u.key}|m|{minute}"
                ops.append(self._put(_id, list(bucket.items())) if bucket else DeleteOne({"_id": _id}))
            head: dict[str, Any] = {"seq": u.seq, "m": _items_encoder.encode(u.minute_seq)}
            if u.names is not None:
                ops.append(self._put(f"{u.key}|names", u.names))
                head["names_seq"] = u.seq
            if u.experiments is not None:
                ops.append(self._put(f"{u.key}|exp", aggregates_state(u.experiments)))
                head["exp_seq"] = u.seq
            ops.append(UpdateOne({"_id": f"{u.key}|h"}, {"$set": head}, upsert=True))
        ops.append(UpdateOne({"_id": SEQ_DOC}, {"$max": {u.key: u.seq for u in updates}}, upsert=True))
        n = STATEMENTS_PER_COMMAND  # small commands, in order (see adapters.mongo_commands)
        for i in range(0, len(ops), n):
            await self.docs.bulk_write(ops[i : i + n], ordered=True)

    def _put(self, _id: str, value: Any) -> ReplaceOne[Any]:
        return ReplaceOne({"_id": _id}, {"_id": _id, "b": _items_encoder.encode(value)}, upsert=True)

    async def sequences(self) -> dict[str, int]:
        doc = await self.docs.find_one({"_id": SEQ_DOC})
        return {k: v for k, v in (doc or {}).items() if k != "_id"}

    async def read(
        self, key: str, known_minutes: Mapping[int, int], names_seq: int, experiments_seq: int
    ) -> RemoteRead | None:
        head = await self.docs.find_one({"_id": f"{key}|h"})
        if head is None:
            return None
        minute_seq = _minute_seq_decoder.decode(head["m"])
        wanted = [m for m, seq in minute_seq.items() if seq > known_minutes.get(m, 0)]
        new_names_seq = head.get("names_seq", 0)
        new_exp_seq = head.get("exp_seq", 0)
        ids = [f"{key}|m|{m}" for m in wanted]
        if new_names_seq > names_seq:
            ids.append(f"{key}|names")
        if new_exp_seq > experiments_seq:
            ids.append(f"{key}|exp")
        # One by one (see `publish`): a first read of a long history is many small reads, later ones few.
        found = [await self.docs.find_one({"_id": _id}) for _id in ids]
        minutes: dict[int, Counter[CounterKey]] = {}
        for m, doc in zip(wanted, found, strict=False):
            if doc is not None:
                minutes[m] = Counter(dict(_items_decoder.decode(doc["b"])))
        rest = found[len(wanted) :]
        names = None
        if new_names_seq > names_seq:
            doc = rest.pop(0)
            names = _names_decoder.decode(doc["b"]) if doc is not None else None
        experiments = None
        if new_exp_seq > experiments_seq:
            doc = rest.pop(0)
            experiments = aggregates_of_state(msgspec.msgpack.decode(doc["b"])) if doc is not None else None
        return RemoteRead(
            seq=head["seq"],
            minutes=minutes,
            minute_seq=minute_seq,
            names=names,
            names_seq=new_names_seq if names is not None else names_seq,
            experiments=experiments,
            experiments_seq=new_exp_seq if experiments is not None else experiments_seq,
        )
