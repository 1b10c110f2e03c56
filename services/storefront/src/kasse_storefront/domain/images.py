"""Product images the shop serves itself: a deterministic SVG per image key, in several widths.

The sample catalogue points at `/images/products/<key>.svg`; the storefront renders it at
`/images/products/<width>/<key>.svg`. No outside image host is involved.
"""

from __future__ import annotations

import hashlib
import re
from html import escape

WIDTHS = (160, 320, 640)
PREFIX = "/images/products/"
KEY = re.compile(r"^[a-z0-9][a-z0-9-]{0,120}$")


def sized(url: str, width: int) -> str:
    """The URL of a shop-served image at a width; outside URLs stay as they are."""
    if url.startswith(PREFIX) and url.endswith(".svg") and url.count("/") == 3:
        return f"{PREFIX}{width}/{url[len(PREFIX) :]}"
    return url


def placeholder_svg(key: str, width: int) -> str:
    """A square picture: two shapes in colours derived from the key, and the key's words."""
    digest = hashlib.sha256(key.encode()).digest()
    hue, hue2 = digest[0] * 360 // 256, digest[1] * 360 // 256
    words = key.removesuffix("-detail").replace("-", " ")
    label = escape(words[:28])
    detail = key.endswith("-detail")
    shape = (
        f'<circle cx="50%" cy="45%" r="28%" fill="hsl({hue2},55%,60%)"/>'
        if not detail
        else f'<rect x="22%" y="20%" width="56%" height="50%" rx="6%" fill="hsl({hue2},55%,60%)"/>'
    )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{width}" viewBox="0 0 400 400" '
        f'role="img" aria-label="{label}">'
        f'<rect width="400" height="400" fill="hsl({hue},40%,92%)"/>{shape}'
        f'<text x="200" y="360" font-family="sans-serif" font-size="24" text-anchor="middle" '
        f'fill="hsl({hue},30%,25%)">{label}</text></svg>'
    )
