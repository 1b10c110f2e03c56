"""A process that stores and numbers invoices, for the gapless-numbering test (killed with -9 at random).

    python invoice_worker.py MONGO_URI DATABASE WORKER_NAME COUNT

Stores COUNT invoices for orders `<worker>-<i>` and numbers each; prints `numbered <i>` after each.
Run again after a kill it resumes: stored documents are kept, numbered ones keep their number.
"""

from __future__ import annotations

import asyncio
import sys
from datetime import UTC, date, datetime
from functools import partial

from pymongo import AsyncMongoClient

from kasse_common.envelope import OutgoingRecord, encode
from kasse_common.money.vat import RateTotal
from kasse_common.persistence import DocumentStore
from kasse_payment.adapters.invoices import InvoiceRepository
from kasse_payment.application.invoicing import document_record
from kasse_payment.domain.invoice import INVOICE, Document, Seller

SELLER = Seller("Kasse Test GmbH", ("Teststr. 1", "10115 Berlin"), "DE123456789")


def event_for(d: Document) -> OutgoingRecord:
    return document_record(partial(encode, service="payment"), lambda: datetime.now(UTC))(d)


def document(order_id: str) -> Document:
    return Document(
        document_id=f"inv_{order_id}", kind=INVOICE, order_id=order_id, issued_on=date(2026, 12, 6), currency="EUR",
        seller=SELLER, buyer={"name": "E", "country": "DE"}, country="DE", export=False, lines=[], shipping_gross=0,
        rates=[RateTotal(1900, 1190, 0, 0)],
    )  # fmt: skip


async def main(uri: str, database: str, worker: str, count: int) -> None:
    client: AsyncMongoClient = AsyncMongoClient(uri)
    db = client[database]
    repo = InvoiceRepository(DocumentStore(db["invoices"]), db["invoice_sequences"], db["invoice_orders"], event_for)
    for i in range(count):
        d = document(f"{worker}-{i}")
        await repo.add(d)
        await repo.assign_number(d.document_id)
        print(f"numbered {i}", flush=True)
    await client.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])))
