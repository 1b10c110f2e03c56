"""The storefront honours an experiment on the checkout layout (issue 17): one step (control) or two
steps (details, then a review page with the order button). The variant is the kit's assignment of the
session id the storefront also sends the services; the kit's ExperimentBook records ExperimentExposed
once per session, as the cart does. Services faked at the HTTP boundary; the book's store in memory."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from kasse_common.envelope import OutgoingRecord
from kasse_common.envelope import encode as kit_encode
from kasse_common.experiments import ExperimentBook, assign_variant, exposure_event_id
from kasse_contracts.events import (
    ExperimentChanged,
    ExperimentMetric,
    ExperimentParameter,
    ExperimentStatus,
    Variant,
)
from kasse_storefront.main import create_app
from kasse_storefront.settings import StorefrontSettings

from ..fake_shop import ADDRESS, ORDER_ID, FakeShop

pytestmark = pytest.mark.unit


class Result:
    def __init__(self, matched: int) -> None:
        self.matched_count = matched


class Experiments:
    """The `experiments` collection as far as ExperimentBook uses it (update_one, insert_one, find)."""

    def __init__(self) -> None:
        self.docs: dict[str, dict[str, Any]] = {}
        self.down = False

    async def update_one(self, query: dict[str, Any], update: dict[str, Any]) -> Result:
        doc = self.docs.get(query["_id"])
        if doc is None or doc["revision"] >= query["revision"]["$lt"]:
            return Result(0)
        doc.update(update["$set"])
        return Result(1)

    async def insert_one(self, doc: dict[str, Any]) -> None:
        self.docs[doc["_id"]] = dict(doc)

    def find(self, query: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        if self.down:
            raise ConnectionError("store unreachable")
        status = query["definition.status"]

        async def found() -> AsyncIterator[dict[str, Any]]:
            for doc in list(self.docs.values()):
                if doc["definition"]["status"] == status:
                    yield doc

        return found()


def experiment(
    weights: tuple[int, int],
    experiment_id: str = "exp_checkout",
    parameter: ExperimentParameter = ExperimentParameter.CHECKOUT_LAYOUT,
    values: tuple[str, str] = ("one_step", "two_step"),
) -> ExperimentChanged:
    return ExperimentChanged(
        occurred_at=datetime(2026, 12, 6, tzinfo=UTC),
        experiment_id=experiment_id,
        revision=1,
        name="two-step checkout",
        hypothesis="A review page before the order button converts better",
        parameter=parameter,
        variants=[
            Variant(name="control", weight=weights[0], value=values[0]),
            Variant(name="review", weight=weights[1], value=values[1]),
        ],
        primary_metric=ExperimentMetric.CONVERSION_RATE,
        baseline=0.3,
        minimum_detectable_effect=0.2,
        status=ExperimentStatus.RUNNING,
        started_at=datetime(2026, 12, 6, tzinfo=UTC),
    )


class Recorded(list[OutgoingRecord]):
    async def record(self, record: OutgoingRecord) -> None:
        self.append(record)

    def exposures(self) -> list[dict[str, Any]]:
        out = []
        for r in self:
            body = json.loads(r.value)
            out.append({"id": r.event_id, **body.get("data", body)})
        return out


def encode(event: Any, *, event_id: str | None = None) -> OutgoingRecord:
    return kit_encode(event, service="storefront", event_id=event_id)


@pytest.fixture
def services() -> FakeShop:
    return FakeShop()


@pytest.fixture
def store() -> Experiments:
    return Experiments()


@pytest.fixture
def recorded() -> Recorded:
    return Recorded()


@pytest.fixture
def book(store: Experiments, recorded: Recorded) -> ExperimentBook:
    return ExperimentBook(store, encode, recorded.record, refresh_s=0)


async def visitor(services: FakeShop, book: ExperimentBook | None) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(
        StorefrontSettings(profile="development"), transport=httpx.MockTransport(services), experiments=book
    )
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://shop.test") as c,
    ):
        yield c


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found
    return found.group(1)


async def to_checkout(client: httpx.AsyncClient, services: FakeShop) -> tuple[str, str, str]:
    """Fill a cart and open the checkout: (its html, the CSRF token, the session id the services saw)."""
    csrf = csrf_of((await client.get("/p/prd_1")).text)
    await client.post("/cart/items", data={"csrf": csrf, "product_id": "prd_1", "quantity": "1"})
    html = (await client.get("/checkout")).text
    session_id = next(r.headers["X-Session-Id"] for r in reversed(services.requests) if "X-Session-Id" in r.headers)
    return html, csrf, session_id


async def test_the_two_step_variant_reviews_before_the_order_button_and_is_exposed_once(
    services: FakeShop, book: ExperimentBook, recorded: Recorded
) -> None:
    await book.apply(experiment((0, 1)))
    async for client in visitor(services, book):
        html, csrf, session_id = await to_checkout(client, services)
        assert "Weiter zur Übersicht" in html and "zahlungspflichtig bestellen" not in html
        assert 'name="step" value="details"' in html
        form = {"csrf": csrf, "step": "details", "email": "erika@example.com", "shipping_method_id": "standard"}
        r = await client.post("/checkout", data={**form, **ADDRESS})
        assert r.status_code == 303 and r.headers["location"] == "/checkout/review"
        assert services.calls("POST", "/v1/carts/cart_1/checkout") and not services.calls(
            "POST", "/v1/carts/cart_1/order"
        )
        review = await client.get("/checkout/review")
        assert review.status_code == 200
        assert "Bestellung prüfen" in review.text and "Hauptstraße 5" in review.text
        assert "zahlungspflichtig bestellen" in review.text and 'action="/checkout/place"' in review.text
        assert 'data-vat-rate="1900"' in review.text
        placed = await client.post("/checkout/place", data={"csrf": csrf})
        assert placed.status_code == 303 and placed.headers["location"] == f"/orders/{ORDER_ID}/pay"
        assert len(services.calls("POST", "/v1/carts/cart_1/order")) == 1
    exposures = recorded.exposures()
    assert len(exposures) == 1, "one ExperimentExposed per session, however many pages"
    assert exposures[0]["session_id"] == session_id and exposures[0]["variant"] == "review"
    assert exposures[0]["parameter"] == "checkout_layout"
    assert exposures[0]["id"] == exposure_event_id("exp_checkout", session_id)


async def test_the_review_page_needs_the_details_first(services: FakeShop, book: ExperimentBook) -> None:
    await book.apply(experiment((0, 1)))
    async for client in visitor(services, book):
        await to_checkout(client, services)
        r = await client.get("/checkout/review")
        # The fake cart says checkout_started false: back to the details.
        assert r.status_code == 303 and r.headers["location"] == "/checkout"


async def test_an_emptied_cart_sends_checkout_and_review_back_to_the_cart(
    services: FakeShop, book: ExperimentBook
) -> None:
    """A cart emptied after the details step (in another tab, say) has nothing to check out or review:
    both pages send the shopper to the cart, not from the review to the checkout and on from there."""
    await book.apply(experiment((0, 1)))
    async for client in visitor(services, book):
        _, csrf, _ = await to_checkout(client, services)
        form = {"csrf": csrf, "step": "details", "email": "erika@example.com", "shipping_method_id": "standard"}
        assert (await client.post("/checkout", data={**form, **ADDRESS})).headers["location"] == "/checkout/review"
        assert (await client.get("/checkout/review")).status_code == 200
        services.carts["cart_1"].clear()
        for path in ("/checkout/review", "/checkout"):
            r = await client.get(path)
            assert r.status_code == 303 and r.headers["location"] == "/cart", path


async def test_each_session_sees_the_kits_variant_for_its_session_id(
    services: FakeShop, book: ExperimentBook, recorded: Recorded
) -> None:
    await book.apply(experiment((1, 1)))
    weights = [("control", 1), ("review", 1)]
    seen = []
    for _ in range(6):
        async for client in visitor(services, book):
            html, _, session_id = await to_checkout(client, services)
            await client.get("/checkout")  # a second view records nothing new
            expected = assign_variant("exp_checkout", session_id, weights)
            assert ("Weiter zur Übersicht" in html) is (expected == "review"), session_id
            seen.append((session_id, expected))
    assert [(e["session_id"], e["variant"]) for e in recorded.exposures()] == seen


async def test_without_a_running_experiment_or_with_the_store_down_the_checkout_is_one_step(
    services: FakeShop, book: ExperimentBook, store: Experiments, recorded: Recorded
) -> None:
    async for client in visitor(services, book):
        html, _, _ = await to_checkout(client, services)
        assert "zahlungspflichtig bestellen" in html and "Weiter zur Übersicht" not in html
    await book.apply(experiment((0, 1)))
    store.down = True
    async for client in visitor(services, book):
        html, _, _ = await to_checkout(client, services)
        assert "zahlungspflichtig bestellen" in html  # the page does not fail for the experiment
    assert recorded == []
    async for client in visitor(services, None):  # experiments switched off
        html, _, _ = await to_checkout(client, services)
        assert "zahlungspflichtig bestellen" in html


async def test_the_home_template_variant_puts_top_sellers_first_and_is_exposed_once(
    services: FakeShop, book: ExperimentBook, recorded: Recorded
) -> None:
    """An experiment on `storefront_template`: the session's variant decides the home page's sections."""
    await book.apply(
        experiment(
            (1, 1),
            "exp_home",
            ExperimentParameter.STOREFRONT_TEMPLATE,
            ("standard", "top_sellers_first"),
        )
    )
    orders: dict[str, bool] = {}
    for _ in range(12):  # new visitors until both variants were seen
        async for client in visitor(services, book):
            html = ""
            for _ in range(3):  # the same session, three visits of the home page
                html = (await client.get("/")).text
            assert 'id="campaigns"' in html and 'id="top"' in html
            top_first = html.index('id="top"') < html.index('id="campaigns"')
            session_id = next(
                r.headers["X-Session-Id"] for r in reversed(services.requests) if "X-Session-Id" in r.headers
            )
            expected = assign_variant("exp_home", session_id, [("control", 1), ("review", 1)])
            assert top_first == (expected == "review"), "the section order follows the session's variant"
            orders[session_id] = top_first
        if set(orders.values()) == {True, False}:
            break
    assert set(orders.values()) == {True, False}, "both layouts were served"
    exposures = recorded.exposures()
    assert sorted(e["session_id"] for e in exposures) == sorted(orders), "one exposure per session"
    assert {e["parameter"] for e in exposures} == {"storefront_template"}
