"""What the storefront's bench and its Lighthouse run both do before they measure: the sample catalogue
in their shop, and a shopper whose cart holds a product, so the cart and checkout pages have something
to show."""

from __future__ import annotations

import os
import re

import httpx

from kasse_catalog.seed import sample_catalog
from kasse_testkit import wait_until
from kasse_testkit.e2e.shop import ADMIN, Shop

PRODUCT_PAGE = "/p/damascus-chef-s-knife-20-cm"


async def shopper_with_a_cart(shop: Shop) -> httpx.Cookies:
    """Import the sample catalogue, then put its chef's knife in a new shopper's cart through the product
    page's form; that shopper's cookies. Fails with what went wrong and where the shop's logs are."""
    async with httpx.AsyncClient(timeout=30) as admin:
        r = await admin.post(
            shop.url("catalog") + "/v1/admin/products/import",
            json=sample_catalog(),
            headers={"Authorization": f"Bearer {ADMIN['catalog']}"},
        )
        r.raise_for_status()
    async with httpx.AsyncClient(base_url=shop.url("storefront"), timeout=30, follow_redirects=True) as shopper:
        page = await shopper.get(PRODUCT_PAGE)
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
        pid = re.search(r'name="product_id" value="([^"]+)"', page.text)
        if not (csrf and pid):
            raise RuntimeError(f"the product page has no add-to-cart form ({page.status_code}); logs in {shop.log_dir}")
        form = {"csrf": csrf[1], "product_id": pid[1]}

        async def added() -> bool:  # the cart learns the catalogue from its events: until then it refuses
            return "flash ok" in (await shopper.post("/cart/items", data=form)).text

        await wait_until(added, timeout=30, interval=0.5, message=f"the cart took the product; logs in {shop.log_dir}")
        return shopper.cookies


def load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())
