"""The simulated shoppers' decisions (deploy/shoppers/choices.py, shopper_mix.py), with a seeded RNG."""

from __future__ import annotations

import base64
import json
import random
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "shoppers"))

from choices import (
    RunningExperiment,
    add_to_cart_product,
    conversion_multiplier,
    csrf_token,
    order_status,
    parse_variant_effects,
    product_links,
    running_experiments,
    scale_purchase,
    shipping_methods,
    storefront_session_id,
    via_storefront,
)
from shopper_mix import ShopperMix

from kasse_common.experiments import assign_variant

pytestmark = pytest.mark.unit


def test_the_configured_share_of_visits_goes_through_the_storefront() -> None:
    rng = random.Random(17)
    ways = [via_storefront(rng, 0.3, storefront_up=True) for _ in range(10_000)]
    assert 0.28 < sum(ways) / len(ways) < 0.32
    assert not any(via_storefront(rng, 0.3, storefront_up=False) for _ in range(1_000))  # down: all APIs
    assert not any(via_storefront(rng, 0.0, storefront_up=True) for _ in range(1_000))
    assert all(via_storefront(rng, 1.0, storefront_up=True) for _ in range(1_000))


def test_the_share_and_the_effects_come_from_the_environment() -> None:
    mix = ShopperMix.load(
        {"KASSE_SHOPPERS_P_STOREFRONT": "0.5", "KASSE_SHOPPERS_VARIANT_EFFECTS": '{"fst:low": 1.5, "fst:high": 0.8}'}
    )
    assert mix.p_storefront == 0.5
    assert mix.variant_effects == {"fst:low": 1.5, "fst:high": 0.8}
    assert ShopperMix.load({}).p_storefront == 0.3
    with pytest.raises(ValueError, match="p_storefront"):
        ShopperMix.load({"KASSE_SHOPPERS_P_STOREFRONT": "1.5"})
    with pytest.raises(ValueError, match="<experiment_id>:<variant>"):
        ShopperMix.load({"KASSE_SHOPPERS_VARIANT_EFFECTS": '{"no-variant": 1.2}'})
    with pytest.raises(ValueError, match=">= 0"):
        parse_variant_effects({"fst:low": -1})


def test_running_experiments_are_read_from_metrics_reports() -> None:
    answer = {
        "version": 3,
        "items": [
            {"experiment_id": "fst", "status": "running",
             "variants": [{"variant": "control", "weight": 1}, {"variant": "low", "weight": 1}]},
            {"experiment_id": "old", "status": "stopped", "variants": [{"variant": "control", "weight": 1}]},
        ],
    }  # fmt: skip
    assert running_experiments(answer) == [RunningExperiment("fst", (("control", 1), ("low", 1)))]


def test_the_effect_scales_the_buy_probability_of_the_assigned_variant_only() -> None:
    experiment = RunningExperiment("fst", (("control", 1), ("low", 1)))
    effects = {"fst:low": 1.5}
    sessions = [f"sim-{i:04d}" for i in range(400)]
    by_variant: dict[str, list[str]] = {"control": [], "low": []}
    for sid in sessions:
        by_variant[assign_variant("fst", sid, experiment.weights)].append(sid)
    assert by_variant["control"] and by_variant["low"]
    for sid in by_variant["low"]:
        assert conversion_multiplier(sid, [experiment], effects) == (1.5, ["fst:low"])
    for sid in by_variant["control"]:
        assert conversion_multiplier(sid, [experiment], effects) == (1.0, [])
    assert conversion_multiplier(sessions[0], [], effects) == (1.0, [])  # no running experiment: no effect

    # Seeded: the share that checks out and orders is the baseline times the effect.
    rng = random.Random(14)
    base_checkout, base_place = 0.5, 0.8

    def bought(multiplier: float, n: int = 20_000) -> float:
        p_checkout, p_place = scale_purchase(base_checkout, base_place, multiplier)
        return sum(rng.random() < p_checkout and rng.random() < p_place for _ in range(n)) / n

    control, variant = bought(1.0), bought(1.5)
    assert 0.38 < control < 0.42
    assert 0.58 < variant < 0.62  # 0.4 x 1.5
    assert 0.18 < bought(0.5) < 0.22


def test_scaling_keeps_probabilities_and_puts_the_overflow_on_placing_the_order() -> None:
    assert scale_purchase(0.5, 0.8, 1.0) == (0.5, 0.8)
    checkout, place = scale_purchase(0.5, 0.8, 2.4)  # 0.96 of the original 0.4
    assert checkout == 1.0 and place == pytest.approx(0.96)
    assert scale_purchase(0.5, 0.8, 10) == (1.0, 1.0)  # capped
    assert scale_purchase(0.5, 0.8, 0) == (0.0, 0.0)


def test_what_the_shoppers_read_from_the_storefronts_pages_and_cookie() -> None:
    html = (
        '<a href="/p/oak-table">x</a><a href="/p/oak-table#reviews">y</a><a href="/p/lamp-1">z</a>'
        '<form action="/cart/items" method="post"><input type="hidden" name="csrf" value="tok-123">'
        '<input type="hidden" name="product_id" value="P-42">'
        '<input type="radio" name="shipping_method_id" value="standard"><input type="radio" '
        'name="shipping_method_id" value="express"></form>'
    )
    assert product_links(html) == ["oak-table", "lamp-1"]
    assert csrf_token(html) == "tok-123"
    assert add_to_cart_product(html) == "P-42"
    assert shipping_methods(html) == ["standard", "express"]
    assert csrf_token("<p>no form</p>") is None and add_to_cart_product("<p>sold out</p>") is None
    payload = base64.b64encode(json.dumps({"sid": "abc123", "cart": ["c", "t"]}).encode()).decode().rstrip("=")
    assert storefront_session_id(f"{payload}.ZXyz.sig") == "abc123"
    assert storefront_session_id("garbage!.x.y") is None
    assert storefront_session_id(None) is None
    assert order_status('<strong data-status="cancelled">Cancelled</strong>') == "cancelled"
