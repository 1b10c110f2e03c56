"""Invoice numbers stay gapless and unique with concurrent claimants and processes killed with -9.

Real FerretDB (single-document atomic writes only). Three worker processes number invoices at the
same time; two are killed with SIGKILL at random moments (possibly between claiming a number and
writing it) and started again; then the sweep numbers whatever is left. Every invoice has exactly one
number and the numbers are exactly 1..N.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import random
import signal
import sys
from pathlib import Path
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from kasse_common.persistence import DocumentStore
from kasse_payment.adapters.invoices import InvoiceRepository
from kasse_testkit import Namespace
from kasse_testkit.infrastructure import Infrastructure

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

WORKER = Path(__file__).with_name("invoice_worker.py")
# Enough that a victim is still numbering when the test has read its first 2-8 lines and kills it: with 12, a
# worker on the local store (since its lookups by _id use the index) finished before the kill (ProcessLookupError).
PER_WORKER = 60
_spec = importlib.util.spec_from_file_location("invoice_worker", WORKER)
assert _spec is not None and _spec.loader is not None
worker = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(worker)


async def start(uri: str, db: str, name: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, str(WORKER), uri, db, name, str(PER_WORKER),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip


async def numbered_lines(process: asyncio.subprocess.Process, at_least: int) -> None:
    assert process.stdout is not None
    seen = 0
    while seen < at_least:
        line = await process.stdout.readline()
        if not line:
            return
        seen += line.startswith(b"numbered")


async def check(db: Any, expected: int) -> None:
    docs = [d async for d in db["invoices"].find({}, {"number": 1})]
    numbers = [d["number"] for d in docs]
    assert len(docs) == expected
    assert None not in numbers, "an invoice without a number"
    assert len(set(numbers)) == len(numbers), "a number given twice"
    assert sorted(numbers) == [f"RE-2026-{n:06d}" for n in range(1, expected + 1)], "a gap"
    sequence = await db["invoice_sequences"].find_one({"_id": "RE-2026"})
    assert sequence["last"] == expected


async def test_numbers_stay_gapless_and_unique_across_kill_9_and_restarts(
    kasse_infra: Infrastructure, namespace: Namespace
) -> None:
    uri, name = kasse_infra.mongo_uri, namespace.database("invoices")
    rng = random.Random(15)
    workers = {w: await start(uri, name, w) for w in ("a", "b", "c")}
    kills = 0
    for victim in ("a", "b"):  # kill -9 after a random number of invoices, mid-flight
        await asyncio.wait_for(numbered_lines(workers[victim], rng.randint(2, 8)), timeout=60)
        os.kill(workers[victim].pid, signal.SIGKILL)
        assert await workers[victim].wait() == -signal.SIGKILL
        kills += 1
        workers[victim] = await start(uri, name, victim)  # the restart resumes its own invoices
    for process in workers.values():
        _, err = await asyncio.wait_for(process.communicate(), timeout=180)
        assert process.returncode == 0, err.decode()[-2000:]
    assert kills == 2

    client: AsyncMongoClient[Any] = AsyncMongoClient(uri)
    try:
        db = client[name]
        repo = InvoiceRepository(
            DocumentStore(db["invoices"]), db["invoice_sequences"], db["invoice_orders"], worker.event_for
        )
        for document_id in await repo.unnumbered():  # the sweep a service runs at start
            await repo.assign_number(document_id)
        await check(db, 3 * PER_WORKER)
        # Each numbered invoice carries its InvoiceIssued in the same write (the outbox).
        with_event = await db["invoices"].count_documents({"_outbox_pending": True})
        assert with_event == 3 * PER_WORKER
    finally:
        await client.close()


async def test_concurrent_claimants_in_one_process_give_consecutive_numbers(
    kasse_infra: Infrastructure, namespace: Namespace
) -> None:
    client: AsyncMongoClient[Any] = AsyncMongoClient(kasse_infra.mongo_uri)
    try:
        db = client[namespace.database("invoices")]
        repo = InvoiceRepository(
            DocumentStore(db["invoices"]), db["invoice_sequences"], db["invoice_orders"], worker.event_for
        )
        docs = [worker.document(f"o-{i}") for i in range(16)]
        for d in docs:
            await repo.add(d)
        # Every invoice claimed by two tasks at once (a redelivery on another replica): one number each.
        claims = [repo.assign_number(d.document_id) for d in docs for _ in range(2)]
        numbers = await asyncio.gather(*claims)
        by_document = {}
        for d, n in zip([d for d in docs for _ in range(2)], numbers, strict=True):
            assert by_document.setdefault(d.document_id, n) == n
        await check(db, 16)
    finally:
        await client.close()
