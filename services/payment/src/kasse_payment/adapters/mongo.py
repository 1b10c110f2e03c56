"""Payments in the Mongo-protocol store: one document per order, its outbox inside (kit DocumentStore)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from pymongo import ASCENDING, DESCENDING
from pymongo.asynchronous.collection import AsyncCollection

from kasse_common.due import DueWork
from kasse_common.envelope import OutgoingRecord
from kasse_common.persistence import HEAVY_FIELDS_EXCLUDED, CommitOutcome, DocumentStore
from kasse_contracts.base import Event
from kasse_payment.adapters import fraud_history
from kasse_payment.adapters.codec import from_document, to_document
from kasse_payment.application.ports import FraudCounts, HistoryQuestion, OutgoingEvent
from kasse_payment.domain.payment import Payment

Encoder = Callable[..., OutgoingRecord]  # runtime.encode(event, event_id=…)


class MongoPayments:
    """PaymentRepository and FraudHistory on one collection."""

    def __init__(self, store: DocumentStore, encode: Encoder, history: AsyncCollection[Any] | None = None) -> None:
        self.store = store
        self.collection = store.collection
        # Screening's per-key summaries (adapters/fraud_history.py), read and written by `_id` only.
        self.history = history if history is not None else store.collection.database["payment_fraud_history"]
        self._encode = encode
        # The sweeper's and the review deadline's work, kept apart from the history (FerretDB v1
        # would read every payment ever made for each round otherwise).
        self.unfinished = DueWork(  # the store marks each commit that leaves work
            store,
            "work",
            has_work={"needs_work": True},
            at_field="updated_at",
            pending=lambda state: bool(state.get("needs_work")),
        )
        self.held = DueWork(
            store,
            "review",
            has_work={"status": "held_for_review"},
            at_field="held_at",
            pending=lambda state: state.get("status") == "held_for_review",
        )

    async def ensure_indexes(self) -> None:
        c = self.collection
        await c.create_index([("email", ASCENDING), ("fraud.decided_at", ASCENDING)], name="velocity_email")
        await c.create_index([("client_ip", ASCENDING), ("fraud.decided_at", ASCENDING)], name="velocity_ip")
        await c.create_index([("card_fingerprint", ASCENDING), ("fraud.decided_at", ASCENDING)], name="velocity_card")
        await c.create_index([("intent_id", ASCENDING)], name="intent")
        await c.create_index([("needs_work", ASCENDING), ("updated_at", ASCENDING)], name="needs_work")
        await c.create_index([("fraud.decided_at", DESCENDING)], name="fraud_decisions")
        await c.create_index([("status", ASCENDING), ("held_at", ASCENDING)], name="held_for_review")
        await self.unfinished.ensure_indexes()
        await self.held.ensure_indexes()

    async def load(self, order_id: str) -> Payment | None:
        doc = await self.store.load(order_id)
        return None if doc is None else from_document(doc)

    async def save(self, payment: Payment, events: Sequence[OutgoingEvent], consumed_id: str | None) -> bool:
        state = to_document(payment)
        state["updated_at"] = datetime.now(UTC)
        entry = fraud_history.entry_of(state)
        if entry is not None and not fraud_history.same_entry(entry, payment.stored_history_entry):
            # Before the payment's own write, so a stored payment never lacks its entry (a crash between
            # leaves an entry that the retried change writes again, identical: one per order, ever).
            await self._record_history(entry)
            state["fraud_entry"] = entry
        records = [self._record(e.event, e.event_id) for e in events]
        outcome = await self.store.commit(
            payment.order_id,
            expected_version=payment.version,
            state=state,
            events=records,
            consumed_event_id=consumed_id,
        )
        if outcome is CommitOutcome.DUPLICATE:
            return False
        payment.version = 1 if payment.version is None else payment.version + 1
        if "fraud_entry" in state:
            payment.stored_history_entry = entry
        return True

    async def _record_history(self, entry: dict[str, Any]) -> None:
        field = f"{fraud_history.ENTRIES}.{fraud_history.entry_field(str(entry['_id']))}"
        await asyncio.gather(
            *(
                self.history.update_one({"_id": key}, {"$set": {field: entry}}, upsert=True)
                for key in fraud_history.entry_keys(entry)
            )
        )

    def _record(self, event: Event, event_id: str) -> OutgoingRecord:
        return self._encode(event, event_id=event_id)

    async def find_order_by_intent(self, intent_id: str) -> str | None:
        doc = await self.collection.find_one({"intent_id": intent_id}, {"_id": 1})
        return None if doc is None else str(doc["_id"])

    async def due_for_work(self, now: datetime, idle_since: datetime, limit: int) -> list[str]:
        job = {
            "needs_work": True,
            "updated_at": {"$lte": idle_since},
            "$or": [{"retry_at": None}, {"retry_at": {"$lte": now}}],
        }
        return [str(i) for i in await self.unfinished.due(idle_since, limit, job)]

    async def held_since(self, before: datetime, limit: int) -> list[str]:
        job = {"status": "held_for_review", "held_at": {"$lte": before}}
        return [str(i) for i in await self.held.due(before, limit, job)]

    async def fraud_decisions(
        self, *, outcome: str | None, email: str | None, client_ip: str | None, limit: int
    ) -> list[Payment]:
        query: dict[str, Any] = {"fraud": {"$ne": None}}
        if outcome:
            query["fraud.outcome"] = outcome
        if email:
            query["email"] = email
        if client_ip:
            query["client_ip"] = client_ip
        cursor = self.collection.find(query, HEAVY_FIELDS_EXCLUDED).sort("fraud.decided_at", DESCENDING)
        return [from_document(d) async for d in cursor.limit(limit)]

    # -- FraudHistory ----------------------------------------------------------------------------
    async def fraud_counts(self, question: HistoryQuestion) -> FraudCounts:
        keys = fraud_history.question_keys(question)
        summaries = await asyncio.gather(*(self.history.find_one({"_id": key}) for key in keys))
        counts = fraud_history.count(fraud_history.entries(summaries), question)
        drops = []
        for summary in summaries:
            if summary is None:
                continue
            fields = fraud_history.prunable(summary, question.since, question.amounts_limit)
            if len(fields) >= fraud_history.PRUNE_BATCH:
                unset = {f"{fraud_history.ENTRIES}.{f}": "" for f in fields}
                drops.append(self.history.update_one({"_id": summary["_id"]}, {"$unset": unset}))
        await asyncio.gather(*drops)
        return counts
