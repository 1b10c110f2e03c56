"""The simulated shoppers' settings: where the shop is, and how likely each step of a visit is.

Everything comes from the environment (or a JSON file) so an operator can reshape the funnel without
touching code:

    KASSE_SHOPPERS_MIX_FILE=mix.json          # any ShopperMix field, e.g. {"p_add_to_cart": 0.5}
    KASSE_SHOPPERS_P_ADD_TO_CART=0.5          # one field: KASSE_SHOPPERS_<FIELD NAME IN CAPITALS>
    KASSE_SHOPPERS_CHANNELS=search=0.4,direct=0.3,social=0.3

Environment variables win over the file. The endpoints and secrets default to the dev values that
`deploy/local/shop.py` gives the services, and read the services' own variable names, so the
shoppers started by `make up` need no configuration at all.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from choices import parse_variant_effects

PREFIX = "KASSE_SHOPPERS_"

CHANNELS = ("search", "recommendation", "campaign", "social", "email", "direct")

SERVICE_PORTS = {"catalog": 8001, "cart": 8002, "payment": 8003, "shipping": 8004, "metrics": 8005}

DEV_ADMIN_TOKENS = {name: f"dev-{name}-admin" for name in SERVICE_PORTS}


@dataclass(frozen=True)
class ShopperMix:
    """Probabilities (0..1) of each step, given the step before it happened.

    The defaults give a realistic funnel: about 60% of visitors search, about 35% put something in
    a cart, half of the carts go to checkout, most checkouts place the order, about 5% of payments
    are declined, and an occasional fraudster is blocked before any payment is attempted.
    """

    # Arrival: relative weights of the channels a visitor comes through.
    channels: dict[str, float] = field(
        default_factory=lambda: {
            "search": 0.32,
            "direct": 0.2,
            "campaign": 0.15,
            "social": 0.13,
            "recommendation": 0.1,
            "email": 0.1,
        }
    )
    p_returning: float = 0.15  # the visitor is an earlier one again (same e-mail, same IP)
    # The way in: this share of the visits goes through the storefront's pages (HTML forms, CSRF, its
    # session cookie, the development test-payment page); the others call the JSON APIs.
    p_storefront: float = 0.3
    # Discovery
    p_search: float = 0.6  # uses the search box; the others browse a category
    p_filter: float = 0.4  # narrows the results (in stock, price, rating) or sorts them
    p_next_page: float = 0.15
    views_min: int = 1
    views_max: int = 4
    p_read_reviews: float = 0.4
    p_follow_recommendation: float = 0.25
    # Cart
    p_add_to_cart: float = 0.35  # of visitors
    p_second_item: float = 0.25
    p_change_quantity: float = 0.1
    p_coupon: float = 0.2  # of carts
    p_checkout: float = 0.5  # of carts; the others are abandoned
    p_place_order: float = 0.85  # of checkouts; the others leave at the payment step
    # Payment (the outcome is played through Stripe's webhooks)
    decline_rate: float = 0.05  # initial value of the run-time switch
    p_fraudster: float = 0.02  # disposable e-mail + billing country mismatch: screened out
    p_cancel_before_paying: float = 0.02
    # After delivery
    p_review: float = 0.3  # of delivered orders
    p_return: float = 0.08  # of delivered orders
    return_received_after_s: float = 20.0  # the warehouse books a returned parcel in after this
    # The warehouse
    p_restock_when_out: float = 0.5  # an out-of-stock add to cart makes the warehouse deliver
    restock_units: int = 40
    # Pacing (seconds)
    think_min_s: float = 0.5
    think_max_s: float = 2.5
    # Between two visits of one simulated user. With 8 users this makes about 7 visits a minute
    # (~30 storefront events): what the catalog keeps up with on a small, busy machine (it consumes
    # every ProductViewed on the consumer that also reserves stock). More: KASSE_SHOPPERS_USERS.
    visit_gap_min_s: float = 30.0
    visit_gap_max_s: float = 75.0
    pay_timeout_s: float = 45.0  # how long a shopper waits for the payment page
    follow_up_after_s: float = 600.0  # orders not delivered by then are forgotten
    max_pending_orders: int = 20  # per simulated user
    # A true effect per experiment variant: {"<experiment_id>:<variant>": relative conversion multiplier}.
    # A session assigned to such a variant (the kit's assignment, running experiments from metrics'
    # GET /v1/experiments) checks out and orders with the probability scaled by it.
    variant_effects: dict[str, float] = field(default_factory=dict)
    experiments_refresh_s: float = 30.0  # how often the running experiments are read from metrics

    @classmethod
    def load(cls, environ: dict[str, str] | None = None) -> ShopperMix:
        env = dict(os.environ if environ is None else environ)
        values: dict[str, Any] = {}
        path = env.get(PREFIX + "MIX_FILE")
        if path:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
            if not isinstance(data, dict):
                raise ValueError(f"{path}: a JSON object of ShopperMix fields is expected")
            values.update(data)
        for f in fields(cls):
            raw = env.get(PREFIX + f.name.upper())
            if raw is None:
                continue
            if f.name == "channels":
                values["channels"] = parse_channels(raw)
            elif f.name == "variant_effects":
                values["variant_effects"] = parse_variant_effects(raw)
            elif f.type in ("int", int):
                values[f.name] = int(raw)
            else:
                values[f.name] = float(raw)
        unknown = set(values) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown ShopperMix fields: {sorted(unknown)}")
        mix = replace(cls(), **values)
        mix.validate()
        return mix

    def validate(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if (f.name.startswith("p_") or f.name == "decline_rate") and not 0 <= value <= 1:
                raise ValueError(f"{f.name} must be within 0..1, not {value}")
        bad = set(self.channels) - set(CHANNELS)
        if bad or not self.channels or min(self.channels.values()) < 0 or sum(self.channels.values()) <= 0:
            raise ValueError(f"channels must weigh some of {CHANNELS}: {self.channels}")
        parse_variant_effects(self.variant_effects)  # from a mix file: the same checks
        if not 1 <= self.views_min <= self.views_max:
            raise ValueError("1 <= views_min <= views_max")
        if not 0 <= self.think_min_s <= self.think_max_s or not 0 <= self.visit_gap_min_s <= self.visit_gap_max_s:
            raise ValueError("pacing: min must be <= max, both >= 0")


def parse_channels(raw: str) -> dict[str, float]:
    raw = raw.strip()
    if raw.startswith("{"):
        return {str(k): float(v) for k, v in json.loads(raw).items()}
    out: dict[str, float] = {}
    for part in raw.split(","):
        name, _, weight = part.partition("=")
        out[name.strip()] = float(weight)
    return out


def _loopback(url: str) -> str:
    host = urlparse(url).hostname or ""
    if host not in ("127.0.0.1", "localhost", "::1") and os.environ.get(PREFIX + "ALLOW_REMOTE") != "1":
        raise ValueError(
            f"{url}: the shoppers only load a shop on this machine (127.0.0.1); "
            f"set {PREFIX}ALLOW_REMOTE=1 to point them elsewhere on purpose"
        )
    return url.rstrip("/")


@dataclass(frozen=True)
class Endpoints:
    """Where the five services answer, and the dev secrets the simulator needs to play its roles
    (the warehouse, the shop's admin, Stripe)."""

    urls: dict[str, str]
    storefront_url: str  # the web shop's pages (`make up`: 127.0.0.1:8000)
    admin_tokens: dict[str, str]
    internal_token: str  # payment's GET /v1/payments/{order_id}, as the cart uses it
    webhook_secret: str  # Stripe's endpoint secret: the simulator signs webhooks like Stripe
    carrier_normal: tuple[float, float]  # dispatch_after_s, deliver_after_s when the carrier is fine
    carrier_slow: tuple[float, float]

    @classmethod
    def load(cls, environ: dict[str, str] | None = None) -> Endpoints:
        env = dict(os.environ if environ is None else environ)
        urls = {
            name: _loopback(env.get(f"{PREFIX}{name.upper()}_URL", f"http://127.0.0.1:{port}"))
            for name, port in SERVICE_PORTS.items()
        }
        tokens = {name: env.get(f"KASSE_{name.upper()}_ADMIN_TOKEN", DEV_ADMIN_TOKENS[name]) for name in SERVICE_PORTS}
        normal = (
            float(env.get("KASSE_SHIPPING_CARRIER_DISPATCH_AFTER_S", "15")),
            float(env.get("KASSE_SHIPPING_CARRIER_DELIVER_AFTER_S", "30")),
        )
        slow = (
            float(env.get(PREFIX + "SLOW_CARRIER_DISPATCH_AFTER_S", "180")),
            float(env.get(PREFIX + "SLOW_CARRIER_DELIVER_AFTER_S", "600")),
        )
        return cls(
            urls=urls,
            storefront_url=_loopback(env.get(PREFIX + "STOREFRONT_URL", "http://127.0.0.1:8000")),
            admin_tokens=tokens,
            internal_token=env.get("KASSE_PAYMENT_INTERNAL_TOKEN", "dev-internal"),
            webhook_secret=env.get("KASSE_PAYMENT_STRIPE_WEBHOOK_SECRET", "whsec_local_dev"),
            carrier_normal=normal,
            carrier_slow=slow,
        )

    def admin(self, service: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin_tokens[service]}"}
