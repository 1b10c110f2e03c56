"""Fraud screening reads its history by `_id` from per-key summaries on FerretDB (no read of the
`payments` collection, which FerretDB v1 answers by reading every payment ever made), counts what the
whole collection would count, writes an entry only when it changes, and keeps each summary bounded."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from kasse_common.mongo import StoreCommands
from kasse_common.persistence import DocumentStore
from kasse_payment.adapters import fraud_history
from kasse_payment.adapters.mongo import MongoPayments
from kasse_payment.application.ports import HistoryQuestion
from kasse_payment.domain.fraud import FraudDecision, FraudOutcome
from kasse_payment.domain.payment import Failed, OrderFacts, Payment, PaymentStatus
from kasse_testkit import Namespace
from kasse_testkit.infrastructure import Infrastructure

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC)
SINCE = NOW - timedelta(hours=1)


@pytest.fixture
def commands() -> StoreCommands:
    return StoreCommands()


@pytest.fixture
async def db(
    kasse_infra: Infrastructure, namespace: Namespace, commands: StoreCommands
) -> AsyncIterator[AsyncDatabase[Any]]:
    client: AsyncMongoClient[Any] = AsyncMongoClient(kasse_infra.mongo_uri, tz_aware=True, event_listeners=[commands])
    try:
        yield client[namespace.database("payment")]
    finally:
        await client.close()


def no_events(*args: Any, **kw: Any) -> Any:
    raise AssertionError("these saves carry no events")


async def screened(
    repo: MongoPayments,
    oid: str,
    *,
    email: str,
    ip: str | None,
    minutes_ago: float = 5,
    customer_id: str | None = None,
    amount: int = 1000,
) -> Payment:
    payment = Payment(
        order_id=oid,
        order=OrderFacts(amount, "EUR", email, "s-1", customer_id, ip, "DE", "DE"),
        stock_reserved=True,
        fraud=FraudDecision(FraudOutcome.ALLOW, 0, (), NOW - timedelta(minutes=minutes_ago)),
        status=PaymentStatus.AUTHORIZING,
    )
    assert await repo.save(payment, [], None)
    return payment


async def test_screening_reads_summaries_by_id_and_counts_what_the_collection_counts(
    db: AsyncDatabase[Any], commands: StoreCommands
) -> None:
    repo = MongoPayments(DocumentStore(db["payments"]), no_events, db["payment_fraud_history"])
    email, ip = "erika@example.com", "203.0.113.7"
    for i in range(20):  # other shoppers: the history screening must not read through
        await screened(repo, f"other-{i}", email=f"o{i}@example.com", ip=f"198.51.100.{i}")
    await screened(repo, "o-1", email=email, ip="198.51.100.99")
    await screened(repo, "o-2", email="x@example.com", ip=ip)
    declined = await screened(repo, "o-3", email=email, ip=ip)
    declined.status, declined.failure = PaymentStatus.FAILED, Failed("card_declined", "generic_decline", "no", None)
    assert await repo.save(declined, [], None)
    paid = await screened(repo, "o-4", email=email, ip=None, minutes_ago=300, amount=2500)
    paid.status = PaymentStatus.CAPTURED
    assert await repo.save(paid, [], None)
    carded = await screened(repo, "o-5", email="y@example.com", ip=None)
    carded.card_fingerprint = "fp_1"
    assert await repo.save(carded, [], None)
    await screened(repo, "o-now", email=email, ip=ip)  # the order being screened: not an earlier one

    # A save that changes nothing a count looks at writes no entry.
    before = commands.snapshot()
    again = await repo.load("o-2")
    assert again is not None
    again.status = PaymentStatus.REQUIRES_ACTION
    assert await repo.save(again, [], None)
    writes = [
        k
        for k, t in commands.snapshot().items()
        if k[1] == "payment_fraud_history" and t.count > before.get(k, type(t)()).count
    ]
    assert writes == []

    q = HistoryQuestion("o-now", email, ip, "fp_1", None, "EUR", SINCE)
    before = commands.snapshot()
    counts = await repo.fraud_counts(q)
    sent = {k for k, t in commands.snapshot().items() if t.count > before.get(k, type(t)()).count}
    assert sent and all(k[1] == "payment_fraud_history" and k[2] == "{_id}" for k in sent), sent
    whole = [d async for d in db["payments"].find({})]
    assert counts == fraud_history.count(whole, q)
    assert (counts.orders_by_email, counts.orders_by_ip, counts.orders_by_card) == (2, 2, 1)
    assert (counts.declines_by_email, counts.declines_by_ip, counts.captured_amounts) == (1, 1, (2500,))


async def test_a_summary_drops_what_no_count_needs(db: AsyncDatabase[Any]) -> None:
    repo = MongoPayments(DocumentStore(db["payments"]), no_events, db["payment_fraud_history"])
    email = "busy@example.com"
    for i in range(fraud_history.PRUNE_BATCH + 2):
        await screened(repo, f"old-{i}", email=email, ip=None, minutes_ago=120)
    await screened(repo, "recent", email=email, ip=None)
    summary = await db["payment_fraud_history"].find_one({"_id": f"email:{email}"})
    assert summary is not None and len(summary[fraud_history.ENTRIES]) == fraud_history.PRUNE_BATCH + 3

    counts = await repo.fraud_counts(HistoryQuestion("o-now", email, None, None, None, "EUR", SINCE))
    assert counts.orders_by_email == 1
    summary = await db["payment_fraud_history"].find_one({"_id": f"email:{email}"})
    assert summary is not None and list(summary[fraud_history.ENTRIES]) == ["recent"]
