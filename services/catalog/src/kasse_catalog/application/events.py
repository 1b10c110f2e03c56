"""Building the catalog's outgoing events from domain objects."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from kasse_catalog.domain.product import Product
from kasse_contracts.events import ProductChanged, ProductChangeKind


def product_changed(product: Product, changes: Sequence[ProductChangeKind], now: datetime) -> ProductChanged:
    """Carries the state the product has after the write; `revision` is the version being written."""
    return ProductChanged(
        occurred_at=now,
        product_id=product.product_id,
        sku=product.sku,
        name=product.name,
        category=product.category,
        image_url=product.images[0].url if product.images else None,
        price=product.price,
        compare_at_price=product.compare_at_price,
        stock_available=product.stock_available,
        active=product.active,
        tax_class=product.tax_class,
        changes=list(changes),
        revision=(product.version or 0) + 1,
    )
