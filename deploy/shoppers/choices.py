"""The shoppers' decisions that do not need a shop: which way a visit goes (the storefront's pages or
the JSON APIs), how much a running experiment's variant changes the will to buy, and reading what the
storefront's HTML and session cookie carry. Pure functions, so the unit tests drive them with a seeded RNG.
"""

from __future__ import annotations

import base64
import binascii
import json
import random
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from kasse_common.experiments import assign_variant

_CSRF = re.compile(r'name="csrf"\s+value="([^"]+)"')
_PRODUCT_LINK = re.compile(r'href="/p/([^"#?/]+)"')
_PRODUCT_ID = re.compile(r'name="product_id"\s+value="([^"]+)"')
_STATUS = re.compile(r'data-status="([a-z_]+)"')
_METHOD = re.compile(r'name="shipping_method_id"\s+value="([^"]+)"')


def via_storefront(rng: random.Random, share: float, storefront_up: bool) -> bool:
    """Whether this visit uses the storefront's pages: `share` of the visits, none while it is down."""
    return storefront_up and rng.random() < share


def parse_variant_effects(raw: str | Mapping[str, Any]) -> dict[str, float]:
    """`{"<experiment_id>:<variant>": multiplier}` (JSON text or an object), checked."""
    data = json.loads(raw) if isinstance(raw, str) else dict(raw)
    if not isinstance(data, dict):
        raise ValueError('variant effects: a JSON object {"<experiment_id>:<variant>": multiplier} is expected')
    effects: dict[str, float] = {}
    for key, value in data.items():
        experiment, sep, variant = str(key).rpartition(":")
        if not sep or not experiment or not variant:
            raise ValueError(f"variant effects: {key!r} is not '<experiment_id>:<variant>'")
        multiplier = float(value)
        if multiplier < 0:
            raise ValueError(f"variant effects: {key!r} must be >= 0, not {multiplier}")
        effects[str(key)] = multiplier
    return effects


@dataclass(frozen=True)
class RunningExperiment:
    experiment_id: str
    weights: tuple[tuple[str, int], ...]  # (variant, weight) in the definition's order, as the services assign


def running_experiments(report_list: Mapping[str, Any]) -> list[RunningExperiment]:
    """The running experiments of metrics' `GET /v1/experiments` answer (the definitions' variants and weights)."""
    out = []
    for item in report_list.get("items", []):
        if item.get("status") != "running":
            continue
        weights = tuple((str(v["variant"]), int(v["weight"])) for v in item.get("variants", []))
        if sum(w for _, w in weights) > 0:
            out.append(RunningExperiment(str(item["experiment_id"]), weights))
    return out


def conversion_multiplier(
    session_id: str, experiments: Iterable[RunningExperiment], effects: Mapping[str, float]
) -> tuple[float, list[str]]:
    """The product of the effects of the variants this session is assigned to (the services' own
    assignment, so the shopper's variant is the one the cart shows), and those `experiment:variant`s."""
    multiplier, assigned = 1.0, []
    for experiment in experiments:
        variant = assign_variant(experiment.experiment_id, session_id, experiment.weights)
        key = f"{experiment.experiment_id}:{variant}"
        if key in effects:
            multiplier *= effects[key]
            assigned.append(key)
    return multiplier, assigned


def scale_purchase(p_checkout: float, p_place_order: float, multiplier: float) -> tuple[float, float]:
    """The checkout and place-order probabilities whose product is `multiplier` times the original
    (capped at 1): the checkout takes the effect first, what does not fit there goes to placing the order.

    Only steps after the cart scale: the cart records the exposure at its first totals, so scaling the
    add-to-cart step would change how many sessions each variant gets (a sample-ratio mismatch), not
    their conversion."""
    target = min(1.0, p_checkout * p_place_order * multiplier)
    checkout = min(1.0, p_checkout * multiplier)
    place = target / checkout if checkout > 0 else 0.0
    return checkout, min(1.0, place)


def csrf_token(html: str) -> str | None:
    found = _CSRF.search(html)
    return found.group(1) if found else None


def product_links(html: str) -> list[str]:
    return list(dict.fromkeys(_PRODUCT_LINK.findall(html)))


def add_to_cart_product(html: str) -> str | None:
    """The product id of the product page's add-to-cart form (absent when out of stock)."""
    found = _PRODUCT_ID.search(html)
    return found.group(1) if found else None


def shipping_methods(html: str) -> list[str]:
    return list(dict.fromkeys(_METHOD.findall(html)))


def order_status(html: str) -> str | None:
    """The order page's status (`data-status`)."""
    found = _STATUS.search(html)
    return found.group(1) if found else None


def storefront_session_id(cookie: str | None) -> str | None:
    """The session id in the storefront's session cookie (Starlette's: signed, not encrypted:
    `base64(json).timestamp.signature`), which the storefront forwards to the services."""
    if not cookie:
        return None
    payload = cookie.split(".", 1)[0]
    try:
        data = json.loads(base64.b64decode(payload + "=" * (-len(payload) % 4)))
    except (binascii.Error, ValueError):
        return None
    sid = data.get("sid") if isinstance(data, dict) else None
    return str(sid) if sid else None
