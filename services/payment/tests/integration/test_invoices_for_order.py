"""An order's invoice and credit notes are read by `_id` (the order's list of them), not by a filter
on `order_id` that FerretDB v1 answers by reading every invoice ever issued; a crash between listing
a document and storing it lists nothing that reads wrong; an order recorded before the list existed
is still answered."""

from __future__ import annotations

import importlib.util
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from kasse_common.mongo import StoreCommands
from kasse_common.persistence import DocumentStore
from kasse_payment.adapters.invoices import InvoiceRepository
from kasse_payment.domain.invoice import CREDIT_NOTE
from kasse_testkit import Namespace
from kasse_testkit.infrastructure import Infrastructure

pytestmark = pytest.mark.integration

_spec = importlib.util.spec_from_file_location("invoice_worker", Path(__file__).with_name("invoice_worker.py"))
assert _spec is not None and _spec.loader is not None
worker = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(worker)


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


class _DiesBeforeStoring(DocumentStore):
    async def commit(self, *args: Any, **kw: Any) -> Any:
        raise ConnectionError("process died after listing the document, before storing it")


def repo(db: AsyncDatabase[Any], store: DocumentStore | None = None) -> InvoiceRepository:
    return InvoiceRepository(
        store or DocumentStore(db["invoices"]), db["invoice_sequences"], db["invoice_orders"], worker.event_for
    )


async def test_an_orders_documents_are_read_by_id(db: AsyncDatabase[Any], commands: StoreCommands) -> None:
    invoices = repo(db)
    # Other orders' invoices: the history the read must not go through.
    for i in range(30):
        await invoices.add(worker.document(f"other-{i}"))
    await invoices.record_order("o-1", {"order_id": "o-1"})
    invoice = worker.document("o-1")
    await invoices.add(invoice)
    await invoices.assign_number(invoice.document_id)
    credit = replace(invoice, document_id="cn_o-1_r1", kind=CREDIT_NOTE)
    await invoices.add(credit)
    with pytest.raises(ConnectionError):  # listed, never stored
        await repo(db, _DiesBeforeStoring(db["invoices"])).add(replace(invoice, document_id="cn_o-1_r2"))
    await invoices.record_order("o-1", {"order_id": "changed"})  # a redelivery: the first payload stays

    before = commands.snapshot()
    found = await invoices.for_order("o-1")
    assert [(d.document_id, d.number) for d in found] == [("inv_o-1", "RE-2026-000001"), ("cn_o-1_r1", None)]
    assert await invoices.order("o-1") == {"order_id": "o-1"}
    reads = {k for k, t in commands.snapshot().items() if k[0] == "find" and t.count > before.get(k, type(t)()).count}
    assert reads and all("_id" in shape for _, _, shape in reads), reads

    # An order recorded before documents were listed (its invoice stored then): found by `order_id`.
    old = worker.document("o-old")
    await invoices.record_order("o-old", {"order_id": "o-old"})
    await invoices.add(old)
    await db["invoice_orders"].update_one({"_id": "o-old"}, {"$unset": {"documents": ""}})
    await invoices.add(replace(old, document_id="cn_o-old_r1", kind=CREDIT_NOTE))
    assert {d.document_id for d in await invoices.for_order("o-old")} == {"inv_o-old", "cn_o-old_r1"}
