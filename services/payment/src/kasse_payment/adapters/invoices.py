"""Invoices and credit notes in Mongo, and their gapless yearly numbers.

FerretDB v1 has no multi-document transactions, so a number and the document that bears it cannot be
written together. The sequence document (`invoice_sequences`, `_id` = "RE-2026") records the last
number given out AND its holder; a number is given out only by a compare-and-set on `last`:

1. The document is stored first, without a number (`number: null`).
2. To number it: read the sequence; if its holder has no number yet, write `last` into the holder
   (whoever crashed between steps 3 and 4 is finished by the next claimant: "helping").
3. Compare-and-set `{last: n} -> {last: n + 1, holder: me}`; only one claimant wins each n.
4. Write n + 1 into me, guarded by `number: null`, with InvoiceIssued/CreditNoteIssued in its outbox.

So every number but the newest is written before the next one is given out, and the newest is
written by its holder, the next claimant, or the sweep of unnumbered documents (at start and
periodically): no gap, whichever process dies where. A document is numbered once (the guard), and
a claimant that finds itself already numbered (helped, or a redelivery) stops: no duplicate.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Any

from pymongo import ASCENDING
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError

from kasse_common.due import DueWork
from kasse_common.envelope import OutgoingRecord
from kasse_common.money.vat import RateTotal
from kasse_common.persistence import ConcurrencyError, DocumentStore
from kasse_payment.domain.invoice import Document, DocumentLine, Seller, format_number

EventFor = Callable[[Document], OutgoingRecord]
CLAIM_ATTEMPTS = 1000  # contention only; each failed attempt means another document got a number


class InvoiceRepository:
    def __init__(
        self, store: DocumentStore, sequences: AsyncCollection[Any], orders: AsyncCollection[Any], event_for: EventFor
    ) -> None:
        self.store = store
        self.sequences = sequences
        # Documents still waiting for their number, apart from every invoice ever issued.
        self.unnumbered_work = DueWork(  # marked by the store at each commit
            store,
            "number",
            has_work={"number": None},
            at_field="stored_at",
            pending=lambda state: state.get("number") is None,
        )
        self.orders = orders  # the OrderPlaced payloads invoices are made from
        self.event_for = event_for

    async def ensure_indexes(self) -> None:
        await self.store.collection.create_index([("order_id", ASCENDING)], name="by_order")
        await self.store.collection.create_index([("number", ASCENDING)], name="by_number")
        await self.unnumbered_work.ensure_indexes()

    # -- the orders invoices are made from ---------------------------------------------------------
    # Each order's document also lists its invoice and credit notes' ids (`documents`), so an order's
    # documents are read by `_id` (FerretDB v1 would read every invoice ever issued for `{order_id}`).
    async def record_order(self, order_id: str, payload: dict[str, Any]) -> None:
        try:  # the first payload wins (a redelivery changes nothing)
            await self.orders.update_one(
                {"_id": order_id, "order": {"$exists": False}},
                {"$set": {"order": payload}, "$setOnInsert": {"documents": []}},
                upsert=True,
            )
        except DuplicateKeyError:
            pass  # recorded already

    async def order(self, order_id: str) -> dict[str, Any] | None:
        doc = await self.orders.find_one({"_id": order_id})
        return None if doc is None or doc.get("order") is None else dict(doc["order"])

    # -- documents ---------------------------------------------------------------------------------
    async def add(self, document: Document) -> bool:
        """Store a new, unnumbered document. False when it exists already (a redelivery).

        Its id goes into the order's list first: a crash before the document is stored leaves an
        id that reads as nothing, never a document the list misses."""
        try:
            await self.orders.update_one(
                {"_id": document.order_id, "documents": {"$exists": True}},
                {"$addToSet": {"documents": document.document_id}},
                upsert=True,
            )
        except DuplicateKeyError:
            pass  # an order recorded before the list existed: `for_order` reads its documents by `order_id`
        state = {**to_doc(document), "stored_at": datetime.now(UTC)}
        try:
            await self.store.commit(document.document_id, expected_version=None, state=state)
        except ConcurrencyError:
            return False
        return True

    async def get(self, document_id: str) -> Document | None:
        doc = await self.store.load(document_id)
        return None if doc is None else from_doc(doc)

    async def for_order(self, order_id: str) -> list[Document]:
        order = await self.orders.find_one({"_id": order_id}, {"documents": 1})
        if order is not None and isinstance(order.get("documents"), list):
            found = [await self.store.load(i) for i in order["documents"]]
            raw = [d for d in found if d is not None]
        else:  # an order recorded before the list existed
            cursor = self.store.collection.find({"order_id": order_id}, {"_outbox": 0, "_processed": 0})
            raw = [d async for d in cursor]
        docs = [from_doc(d) for d in raw]
        return sorted(docs, key=lambda d: (d.kind != "invoice", d.number or "~", d.document_id))

    async def unnumbered(self, limit: int = 100) -> list[str]:
        return [str(i) for i in await self.unnumbered_work.due(datetime.now(UTC), limit, {"number": None})]

    # -- numbers -----------------------------------------------------------------------------------
    async def assign_number(self, document_id: str) -> str:
        """Give the stored document the next number of its sequence (or return the one it has)."""
        document = await self.get(document_id)
        if document is None:
            raise LookupError(f"no document {document_id}")
        key = document.sequence
        for _ in range(CLAIM_ATTEMPTS):
            sequence = await self.sequences.find_one({"_id": key})
            last = 0 if sequence is None else int(sequence["last"])
            holder = None if sequence is None else sequence.get("holder")
            if holder is not None:
                await self._write_number(holder, format_number(key, last))  # finish a claim a crash cut short
            current = await self.get(document_id)
            if current is not None and current.number is not None:
                return current.number
            if sequence is None:
                try:
                    await self.sequences.insert_one({"_id": key, "last": 1, "holder": document_id})
                except DuplicateKeyError:
                    continue
            else:
                claimed = await self.sequences.update_one(
                    {"_id": key, "last": last}, {"$set": {"last": last + 1, "holder": document_id}}
                )
                if claimed.modified_count != 1:
                    continue
            number = format_number(key, last + 1)
            await self._write_number(document_id, number)
            return number
        raise ConcurrencyError(f"no number for {document_id} after {CLAIM_ATTEMPTS} attempts")

    async def _write_number(self, document_id: str, number: str) -> None:
        doc = await self.store.load(document_id)
        if doc is None or doc.get("number") is not None:
            return
        document = from_doc(doc)
        document.number = number
        try:
            await self.store.commit(
                document_id,
                expected_version=doc["_version"],
                state={"number": number},
                events=[self.event_for(document)],
                extra_filter={"number": None},
            )
        except ConcurrencyError:
            pass  # numbered meanwhile by the other claimant of the same number: the same number


def to_doc(d: Document) -> dict[str, Any]:
    return {
        "kind": d.kind,
        "order_id": d.order_id,
        "issued_on": d.issued_on.isoformat(),
        "sequence": d.sequence,
        "currency": d.currency,
        "seller": {"name": d.seller.name, "address": list(d.seller.address), "vat_id": d.seller.vat_id},
        "buyer": dict(d.buyer),
        "country": d.country,
        "export": d.export,
        "lines": [
            {
                "product_id": li.product_id,
                "sku": li.sku,
                "name": li.name,
                "quantity": li.quantity,
                "unit_price": li.unit_price,
                "discount": li.discount,
                "gross": li.gross,
                "rate_basis_points": li.rate_basis_points,
            }
            for li in d.lines
        ],
        "shipping_gross": d.shipping_gross,
        "rates": [
            {
                "basis_points": r.basis_points,
                "goods_gross": r.goods_gross,
                "discount": r.discount,
                "shipping": r.shipping,
            }
            for r in d.rates
        ],
        "delivery_from": d.delivery_from.isoformat() if d.delivery_from else None,
        "delivery_to": d.delivery_to.isoformat() if d.delivery_to else None,
        "refers_to": d.refers_to,
        "refund_id": d.refund_id,
        "number": d.number,
        "notes": list(d.notes),
    }


def from_doc(doc: dict[str, Any]) -> Document:
    seller = doc["seller"]
    return Document(
        document_id=doc["_id"],
        kind=doc["kind"],
        order_id=doc["order_id"],
        issued_on=date.fromisoformat(doc["issued_on"]),
        currency=doc["currency"],
        seller=Seller(seller["name"], tuple(seller["address"]), seller["vat_id"]),
        buyer=doc["buyer"],
        country=doc["country"],
        export=doc["export"],
        lines=[DocumentLine(**li) for li in doc["lines"]],
        shipping_gross=doc["shipping_gross"],
        rates=[RateTotal(r["basis_points"], r["goods_gross"], r["discount"], r["shipping"]) for r in doc["rates"]],
        delivery_from=date.fromisoformat(doc["delivery_from"]) if doc.get("delivery_from") else None,
        delivery_to=date.fromisoformat(doc["delivery_to"]) if doc.get("delivery_to") else None,
        refers_to=doc.get("refers_to"),
        refund_id=doc.get("refund_id"),
        number=doc.get("number"),
        notes=list(doc.get("notes", [])),
    )
