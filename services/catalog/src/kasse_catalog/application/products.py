"""Managing the catalogue: create, update, deactivate, adjust stock, bulk import (also the seed)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from kasse_catalog.application.events import product_changed
from kasse_catalog.application.ports import AlreadyExists, Clock, Encoder, ProductRepository
from kasse_catalog.domain.product import Product, ProductDetails, slugify
from kasse_common.errors import ConcurrencyError, Conflict, NotFound, Unprocessable
from kasse_common.retry import retry_on_conflict
from kasse_contracts.events import ProductChangeKind

T = TypeVar("T")


def _slug_candidates(details: ProductDetails) -> list[str]:
    base = slugify(details.name)
    return [base, f"{base}-{slugify(details.sku)}"]


def _pick_slug(
    details: ProductDetails, candidates: list[str], holders: dict[str, Product], taken: dict[str, str]
) -> str:
    for candidate in candidates:
        holder = holders.get(candidate)
        if (holder is None or holder.sku == details.sku) and taken.get(candidate, details.sku) == details.sku:
            return candidate
    return candidates[-1]  # only an explicit slug can hold this one: the callers' checks report it


@dataclass
class ImportResult:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)


class ProductCatalog:
    def __init__(self, products: ProductRepository, encode: Encoder, clock: Clock) -> None:
        self.products = products
        self.encode = encode
        self.clock = clock

    async def get(self, product_id: str) -> Product:
        product = await self.products.get(product_id)
        if product is None:
            raise NotFound(f"no product {product_id!r}")
        return product

    async def create(self, details: ProductDetails) -> Product:
        if await self.products.get_by_sku(details.sku) is not None:
            raise Conflict(f"a product with sku {details.sku!r} exists already", field="sku")
        if details.slug is None:
            details = replace(details, slug=await self._free_slug(details, {}))
        now = self.clock()
        product = Product.create(details, now)
        if await self.products.get_by_slug(product.slug) is not None:
            raise Conflict(f"a product with slug {product.slug!r} exists already", field="slug")
        event = self.encode(product_changed(product, [ProductChangeKind.CREATED], now))
        try:
            await self.products.add(product, [event])
        except AlreadyExists:
            raise Conflict(f"a product with sku {product.sku!r} or slug {product.slug!r} exists already") from None
        product.version = 1
        return product

    async def update(self, product_id: str, changes: dict[str, Any]) -> Product:
        async def attempt() -> Product:
            product = await self.get(product_id)
            if "slug" in changes and changes["slug"] != product.slug:
                other = await self.products.get_by_slug(changes["slug"])
                if other is not None and other.product_id != product_id:
                    raise Conflict(f"slug {changes['slug']!r} belongs to {other.product_id}", field="slug")
            return await self._apply(product, lambda p, now: p.update(now, **dict(changes)))

        return await retry_on_conflict(attempt, f"update {product_id}")

    async def deactivate(self, product_id: str) -> Product:
        async def attempt() -> Product:
            return await self._apply(await self.get(product_id), lambda p, now: p.deactivate(now))

        return await retry_on_conflict(attempt, f"deactivate {product_id}")

    async def adjust_stock(self, product_id: str, *, delta: int | None = None, on_hand: int | None = None) -> Product:
        if (delta is None) == (on_hand is None):
            raise Unprocessable("give exactly one of delta and on_hand")

        async def attempt() -> Product:
            product = await self.get(product_id)
            if on_hand is not None:
                return await self._apply(product, lambda p, now: p.update(now, stock_on_hand=on_hand))
            assert delta is not None
            return await self._apply(product, lambda p, now: p.adjust_stock(delta, now))

        return await retry_on_conflict(attempt, f"adjust stock of {product_id}")

    async def import_products(self, items: Sequence[ProductDetails]) -> ImportResult:
        """Upsert by sku; idempotent: importing the same data again changes nothing and publishes nothing."""
        skus = [item.sku.upper() for item in items]
        duplicates = sorted({s for s in skus if skus.count(s) > 1})
        if duplicates:
            raise Unprocessable(f"duplicate skus in the import: {', '.join(duplicates)}")
        for item in items:
            item.check()
        existing = await self.products.get_by_skus([item.sku for item in items])
        items = await self._precheck(items, existing)
        result = ImportResult()
        for item in items:
            outcome, product_id = await self._upsert(item, existing.get(item.sku))
            getattr(result, outcome).append(product_id)
        return result

    async def _free_slug(self, details: ProductDetails, taken: dict[str, str]) -> str:
        """A new product's slug from its name; when another product has it, the sku is appended."""
        candidates = _slug_candidates(details)
        holders = await self.products.get_by_slugs(candidates)
        return _pick_slug(details, candidates, holders, taken)

    async def _precheck(self, items: Sequence[ProductDetails], existing: dict[str, Product]) -> list[ProductDetails]:
        """Refuse the whole import up front for what would fail half-way (slugs, reserved stock);
        returns the items with the slugs new products will get. Two queries, whatever the size."""
        wanted: list[str] = []
        for item in items:
            known = existing.get(item.sku)
            wanted += [item.slug] if item.slug else [known.slug] if known else _slug_candidates(item)
        holders = await self.products.get_by_slugs(wanted)
        owners: dict[str, str] = {}
        resolved: list[ProductDetails] = []
        for item in items:
            known = existing.get(item.sku)
            if known is not None and item.stock_on_hand < known.stock_reserved:
                raise Conflict(
                    f"{item.sku}: {known.stock_reserved} units are reserved by open orders; "
                    f"stock_on_hand {item.stock_on_hand} is below that",
                    field="stock_on_hand",
                )
            slug = item.slug or (known.slug if known else _pick_slug(item, _slug_candidates(item), holders, owners))
            if known is None and item.slug is None:
                item = replace(item, slug=slug)
            resolved.append(item)
            if owners.setdefault(slug, item.sku) != item.sku:
                raise Conflict(f"skus {owners[slug]} and {item.sku} would both have the slug {slug!r}", field="slug")
            holder = holders.get(slug)
            if holder is not None and holder.sku != item.sku:
                raise Conflict(f"slug {slug!r} of {item.sku} belongs to {holder.sku}", field="slug")
        return resolved

    async def _upsert(self, item: ProductDetails, known: Product | None) -> tuple[str, str]:
        first_try = True

        async def attempt() -> tuple[str, str]:
            nonlocal first_try
            existing = known if first_try else await self.products.get_by_sku(item.sku)
            first_try = False
            if existing is None:
                now = self.clock()
                product = Product.create(item, now)
                try:
                    await self.products.add(
                        product, [self.encode(product_changed(product, [ProductChangeKind.CREATED], now))]
                    )
                except AlreadyExists as exc:
                    if await self.products.get_by_sku(item.sku) is not None:
                        raise ConcurrencyError() from exc  # created concurrently: update it instead
                    raise Conflict(f"slug {product.slug!r} belongs to another product", field="slug") from None
                return "created", product.product_id
            changes: dict[str, Any] = {
                "name": item.name,
                "description": item.description,
                "category": item.category,
                "price": item.price,
                "compare_at_price": item.compare_at_price,
                "images": list(item.images),
                "attributes": dict(item.attributes),
                "active": item.active,
                "stock_on_hand": item.stock_on_hand,
                "tax_class": item.tax_class,
            }
            if item.slug is not None:
                changes["slug"] = item.slug
            before = existing.version
            product = await self._apply(existing, lambda p, now: p.update(now, **changes))
            return ("updated" if product.version != before else "unchanged"), product.product_id

        return await retry_on_conflict(attempt, f"import {item.sku}")

    async def _apply(self, product: Product, change: Callable[[Product, Any], list[ProductChangeKind]]) -> Product:
        now = self.clock()
        kinds = change(product, now)
        if not kinds:
            return product
        try:
            await self.products.save(product, [self.encode(product_changed(product, kinds, now))])
        except AlreadyExists:
            raise Conflict(f"slug {product.slug!r} belongs to another product", field="slug") from None
        product.version = (product.version or 0) + 1
        return product
