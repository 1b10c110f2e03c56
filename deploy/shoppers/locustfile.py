"""Simulated shoppers: whole journeys through Kasse's real HTTP APIs, as a storefront would make them.

Each iteration of a simulated user is one visit of one visitor (a new session, mostly a new person):

    arrive through a channel (search engine, recommendation, campaign with utm_*, social, e-mail, direct)
    → search or browse a category (sometimes filtered or sorted, sometimes a second page)
    → view products (with the channel), read reviews, maybe follow a recommendation
    → leave, or add to cart (sometimes a second item, a changed quantity, a coupon)
    → abandon the cart, or check out (an address in DE/AT/FR/NL, a method from the cart's shipping options)
    → leave at the payment step, or place the order
    → pay: the simulator plays Stripe and sends the signed webhook, `payment_intent.succeeded` or, at the
      current decline rate, `payment_intent.payment_failed` (an occasional fraudster never gets that far)

and, at the start of a later visit of the same simulated user, the follow-ups of earlier orders:
delivered ones get reviews (verified purchases: proven by the order token) and sometimes a return, which the
warehouse books in a little later. The warehouse also restocks a product that ran out.

A share of the visits (`p_storefront`) goes through the storefront's pages instead (forms with CSRF
tokens, its session cookie, the development test-payment page); while the storefront does not answer,
they use the APIs. A session in an experiment variant with a true effect (`variant_effects`) checks
out and orders with the probabilities scaled by it.

Each outcome of a visit is reported to Locust as a request of type JOURNEY (name = outcome, time =
the visit's duration), so the Locust UI shows journeys per second next to the API calls.
The rates come from `ShopperMix` (shopper_mix.py); the run-time fault switches from faults.py are
served on Locust's web UI under /kasse/faults, and the journey counts under /kasse/stats.

    uv run locust -f deploy/shoppers/locustfile.py --host http://127.0.0.1:8001   # then open :8089
"""

from __future__ import annotations

import logging
import os
import random
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

from locust import HttpUser, events, task

from kasse_payment.testing import sign, stripe_event

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from choices import (
    RunningExperiment,
    add_to_cart_product,
    conversion_multiplier,
    csrf_token,
    order_status,
    product_links,
    running_experiments,
    scale_purchase,
    shipping_methods,
    storefront_session_id,
    via_storefront,
)
from faults import Switchboard, call
from shopper_mix import CHANNELS, Endpoints, ShopperMix

log = logging.getLogger("kasse.shoppers")

MIX = ShopperMix.load()
ENDPOINTS = Endpoints.load()
SWITCHES = Switchboard(ENDPOINTS, decline_rate=MIX.decline_rate)
JOURNEYS: Counter[str] = Counter()
STARTED = time.time()

COUPONS = (
    {"code": "WELCOME10", "kind": "percent", "value": 10},
    {"code": "SPRING15", "kind": "percent", "value": 15, "min_subtotal": 5000},
    {"code": "FIVEOFF", "kind": "fixed", "value": 500, "currency": "EUR", "min_subtotal": 2500},
)
BOGUS_COUPONS = ("FREESTUFF", "SUMMER99")

QUERIES = [
    "knife", "coffee", "headphones", "linen", "wool", "lamp", "tent", "backpack", "speaker", "jacket",
    "book", "candle", "skillet", "sneakers", "bottle", "rug", "vinyl", "hiking", "merino", "oak",
    "espresso", "earbuds", "blanket", "scarf", "kettle",
]  # fmt: skip
SORTS = ("relevance", "price_asc", "price_desc", "newest", "rating", "popularity")
UTM = {
    "search": [{"utm_source": "google", "utm_medium": "organic"}, {"utm_source": "bing", "utm_medium": "organic"}],
    "campaign": [
        {"utm_source": "google", "utm_medium": "cpc", "utm_campaign": "winter-sale"},
        {"utm_source": "meta", "utm_medium": "paid_social", "utm_campaign": "new-arrivals"},
    ],
    "social": [
        {"utm_source": "instagram", "utm_medium": "social"},
        {"utm_source": "pinterest", "utm_medium": "social"},
    ],
    "email": [{"utm_source": "newsletter", "utm_medium": "email", "utm_campaign": "weekly-picks"}],
    "recommendation": [{}],
    "direct": [{}],
}
FIRST = ["Erika", "Lukas", "Sophie", "Jonas", "Camille", "Lucas", "Emma", "Daan", "Anna", "Felix", "Léa", "Sem"]
LAST = ["Mustermann", "Huber", "Dubois", "de Vries", "Schmidt", "Bauer", "Martin", "Jansen", "Weber", "Bakker"]
ADDRESSES = [
    {"line1": "Hauptstraße 5", "postal_code": "10115", "city": "Berlin", "country": "DE"},
    {"line1": "Leopoldstraße 42", "postal_code": "80802", "city": "München", "country": "DE"},
    {"line1": "Jungfernstieg 7", "postal_code": "20354", "city": "Hamburg", "country": "DE"},
    {"line1": "Mariahilfer Straße 88", "postal_code": "1070", "city": "Wien", "country": "AT"},
    {"line1": "Getreidegasse 9", "postal_code": "5020", "city": "Salzburg", "country": "AT"},
    {"line1": "12 Rue de Rivoli", "postal_code": "75004", "city": "Paris", "country": "FR"},
    {"line1": "3 Place Bellecour", "postal_code": "69002", "city": "Lyon", "country": "FR"},
    {"line1": "Prinsengracht 263", "postal_code": "1016 GV", "city": "Amsterdam", "country": "NL"},
    {"line1": "Oudegracht 158", "postal_code": "3511 AZ", "city": "Utrecht", "country": "NL"},
]
DECLINES = [
    ("card_declined", "insufficient_funds", "Your card has insufficient funds."),
    ("card_declined", "generic_decline", "Your card was declined."),
    ("expired_card", "expired_card", "Your card has expired."),
    ("card_declined", "do_not_honor", "Your card was declined."),
]
REVIEWS = {
    5: ("Love it", "Exactly as described and beautifully made. Would buy again."),
    4: ("Very good", "Good quality for the price; delivery was quick."),
    3: ("It's fine", "Does the job, nothing special."),
    2: ("Disappointing", "Smaller than I expected and the finish is rough."),
    1: ("Not for me", "Broke after a week. Returned it."),
}
RETURN_REASONS = ("changed_mind", "damaged", "not_as_described", "wrong_item", "other")


def roll(p: float) -> bool:
    return random.random() < p


class Storefront:
    """Whether the storefront answers, asked at most once a minute; a change is logged once."""

    check_every_s = 60.0

    def __init__(self) -> None:
        self.up: bool | None = None
        self.checked = 0.0

    def available(self) -> bool:
        if MIX.p_storefront <= 0:
            return False
        now = time.monotonic()
        if self.up is None or now - self.checked > self.check_every_s:
            self.checked = now
            status, answer = call("GET", ENDPOINTS.storefront_url + "/healthz", timeout=3)
            up = status == 200
            if up != self.up:
                if up:
                    log.warning("storefront %s answers: %.0f%% of the visits use its pages",
                                ENDPOINTS.storefront_url, MIX.p_storefront * 100)  # fmt: skip
                else:
                    log.warning("storefront %s not reachable (%s): its share of the visits uses the JSON APIs",
                                ENDPOINTS.storefront_url, answer if status == 0 else f"HTTP {status}")  # fmt: skip
            self.up = up
        return bool(self.up)


class Experiments:
    """The running experiments (metrics' GET /v1/experiments), re-read every `experiments_refresh_s`;
    only when some variant has an effect. Metrics not answering keeps the last known list."""

    def __init__(self) -> None:
        self.running: list[RunningExperiment] = []
        self.read_at = -1e9

    def current(self) -> list[RunningExperiment]:
        if not MIX.variant_effects:
            return []
        now = time.monotonic()
        if now - self.read_at > MIX.experiments_refresh_s:
            self.read_at = now
            status, answer = call("GET", ENDPOINTS.urls["metrics"] + "/v1/experiments", timeout=5)
            if status == 200 and isinstance(answer, dict):
                self.running = running_experiments(answer)
            else:
                log.warning("experiments not read from metrics (HTTP %s): keeping %d known", status, len(self.running))
        return self.running


STOREFRONT = Storefront()
WAY_RNG = random.Random()  # which way a visit goes (its own stream: seedable apart from the journeys)
EXPERIMENTS = Experiments()


@dataclass
class Visitor:
    name: str
    email: str
    ip: str
    fraudster: bool = False

    @classmethod
    def new(cls) -> Visitor:
        first, last = random.choice(FIRST), random.choice(LAST)
        local = f"{first}.{last}".lower().replace(" ", "").replace("é", "e") + str(random.randint(1, 99999))
        fraudster = roll(MIX.p_fraudster)
        domain = "mailinator.com" if fraudster else random.choice(("example.com", "example.org", "example.net"))
        ip = f"{random.choice((198, 203))}.{random.randint(0, 255)}.{random.randint(0, 255)}.{random.randint(1, 254)}"
        return cls(f"{first} {last}", f"{local}@{domain}", ip, fraudster)


@dataclass
class Placed:
    order_id: str
    token: str
    session_id: str
    email: str
    lines: list[tuple[str, int]]
    placed_at: float = field(default_factory=time.time)
    checked_at: float = 0.0
    awaiting_payment: bool = False  # the payment page was slow: the customer pays when it is ready


@dataclass
class PendingReturn:
    return_id: str
    due: float


class Shopper(HttpUser):
    """One traffic slot: its visits follow each other, each one a whole journey."""

    host = ENDPOINTS.urls["catalog"]

    def wait_time(self) -> float:
        return random.uniform(MIX.visit_gap_min_s, MIX.visit_gap_max_s)

    def on_start(self) -> None:
        self.visitor = Visitor.new()
        self.pending: list[Placed] = []
        self.returns: list[PendingReturn] = []
        self.session_id = ""
        self.channel = "direct"
        self.utm: dict[str, str] = {}

    # -- plumbing ------------------------------------------------------------------------------
    def url(self, service: str, path: str) -> str:
        return ENDPOINTS.urls[service] + path

    @property
    def headers(self) -> dict[str, str]:
        # Behind a storefront the client's address is forwarded (`make up` trusts 127.0.0.1 as a proxy):
        # fraud screening then sees a different IP per visitor, not one 127.0.0.1 for everyone.
        return {"X-Session-Id": self.session_id, "X-Forwarded-For": self.visitor.ip}

    def call(self, method: str, service: str, path: str, name: str, expected: tuple[int, ...] = (), **kw: Any) -> Any:
        """A request that counts as failed unless 2xx or one of the `expected` refusals (out of stock…)."""
        with self.client.request(method, self.url(service, path), name=name, catch_response=True, **kw) as r:
            if 200 <= r.status_code < 300 or r.status_code in expected:
                r.success()
            else:
                r.failure(f"HTTP {r.status_code}: {(r.text or '')[:200]}")
            return r

    def think(self) -> None:
        time.sleep(random.uniform(MIX.think_min_s, MIX.think_max_s))

    def journey(self, outcome: str, started: float) -> None:
        JOURNEYS[outcome] += 1
        JOURNEYS["visits"] += 1
        self.environment.events.request.fire(
            request_type="JOURNEY",
            name=outcome,
            response_time=(time.monotonic() - started) * 1000,
            response_length=0,
            exception=None,
            context={},
        )

    # -- one visit -----------------------------------------------------------------------------
    @task
    def visit(self) -> None:
        self.follow_up()
        started = time.monotonic()
        if not roll(MIX.p_returning):
            self.visitor = Visitor.new()
        self.session_id = f"sim-{uuid.uuid4().hex[:16]}"
        channels, weights = zip(*[(c, w) for c, w in MIX.channels.items() if c in CHANNELS], strict=True)
        self.channel = random.choices(channels, weights)[0]
        self.utm = dict(random.choice(UTM[self.channel]))
        JOURNEYS[f"channel:{self.channel}"] += 1
        if via_storefront(WAY_RNG, MIX.p_storefront, STOREFRONT.available()):
            JOURNEYS["via:storefront"] += 1
            return self.journey(self.storefront_visit(), started)
        JOURNEYS["via:api"] += 1

        found = self.discover()
        if not found:
            return self.journey("nothing_found", started)
        viewed = self.browse(found)
        if not viewed:
            return self.journey("bounced", started)
        if not roll(MIX.p_add_to_cart):
            return self.journey("bounced", started)
        cart = self.fill_cart(viewed)
        if cart is None:
            return self.journey("out_of_stock", started)
        p_checkout, p_place_order = self.purchase_probabilities(self.session_id)
        if not roll(p_checkout):
            return self.journey("cart_abandoned", started)
        if not self.checkout(cart):
            return self.journey("checkout_refused", started)
        if not roll(p_place_order):
            return self.journey("checkout_abandoned", started)
        placed = self.place_order(cart)
        if placed is None:
            return self.journey("order_refused", started)
        self.journey(self.pay(placed), started)

    def purchase_probabilities(self, session_id: str) -> tuple[float, float]:
        """p_checkout and p_place_order, scaled by the true effect of the session's experiment variants."""
        multiplier, assigned = conversion_multiplier(session_id, EXPERIMENTS.current(), MIX.variant_effects)
        for key in assigned:
            JOURNEYS[f"variant:{key}"] += 1
        return scale_purchase(MIX.p_checkout, MIX.p_place_order, multiplier)

    # -- a visit through the storefront's pages ------------------------------------------------
    def page(self, method: str, path: str, name: str, **kw: Any) -> Any:
        """A storefront page: counts as failed unless 2xx after its redirects (a 422 form is expected)."""
        url = ENDPOINTS.storefront_url + path
        # The storefront is a proxy trusted by the services (make up: 127.0.0.1): it forwards this address.
        kw.setdefault("headers", {"X-Forwarded-For": self.visitor.ip})
        with self.client.request(method, url, name=f"storefront {name}", catch_response=True, **kw) as r:
            if 200 <= r.status_code < 300 or r.status_code == 422:
                r.success()
            else:
                r.failure(f"HTTP {r.status_code}: {(r.text or '')[:200]}")
            return r

    def storefront_visit(self) -> str:
        """Land (home or search, with the channel's UTM), view products, add to cart, fill in the checkout
        form, place the order, pay on the development test-payment page. Returns the outcome."""
        self.client.cookies.clear()  # a new visitor: a new storefront session cookie
        if roll(MIX.p_search):
            r = self.page("GET", "/search", "/search", params={"q": random.choice(QUERIES), **self.utm})
        else:
            r = self.page("GET", "/", "/", params=self.utm)
        slugs = product_links(r.text) if r.ok else []
        if not slugs:
            return "nothing_found"
        product_id, csrf = None, None
        for slug in random.sample(slugs, min(len(slugs), random.randint(MIX.views_min, MIX.views_max))):
            self.think()
            r = self.page("GET", f"/p/{slug}", "/p/[slug]")
            if r.ok and add_to_cart_product(r.text):
                product_id, csrf = add_to_cart_product(r.text), csrf_token(r.text)
        if product_id is None or csrf is None or not roll(MIX.p_add_to_cart):
            return "bounced"
        self.think()
        r = self.page(
            "POST", "/cart/items", "/cart/items", data={"csrf": csrf, "product_id": product_id, "quantity": 1}
        )
        if not r.ok or "/cart" not in r.url:
            return "out_of_stock"
        session_id = storefront_session_id(self.client.cookies.get("kasse_session")) or self.session_id
        p_checkout, p_place_order = self.purchase_probabilities(session_id)
        if not roll(p_checkout):
            return "cart_abandoned"
        self.think()
        r = self.page("GET", "/checkout", "/checkout")
        csrf = csrf_token(r.text) if r.ok else None
        if csrf is None:
            return "checkout_refused"
        JOURNEYS["checkouts"] += 1
        if not roll(p_place_order):
            return "checkout_abandoned"
        methods = shipping_methods(r.text) or ["standard"]
        address = {"name": self.visitor.name, **random.choice(ADDRESSES)}
        form = {"csrf": csrf, "email": self.visitor.email, **address, "line2": "",
                "shipping_method_id": methods[0] if roll(0.7) else random.choice(methods)}  # fmt: skip
        self.think()
        r = self.page("POST", "/checkout", "/checkout (place order)", data=form)
        path = urlparse(r.url).path
        if not (r.ok and path.startswith("/orders/") and path.endswith("/pay")):
            return "order_refused"
        JOURNEYS["orders"] += 1
        order_id = path.split("/")[2]
        return self.pay_on_page(order_id)

    def pay_on_page(self, order_id: str) -> str:
        deadline = time.monotonic() + MIX.pay_timeout_s
        while time.monotonic() < deadline:
            r = self.page("GET", f"/orders/{order_id}/pay", "/orders/[id]/pay")
            if r.ok and urlparse(r.url).path != f"/orders/{order_id}/pay":  # no longer payable: the order page
                status = order_status(r.text) or "unknown"
                return "cancelled_before_payment" if status == "cancelled" else f"order_{status}"
            if r.ok and 'name="outcome"' in r.text and "data-poll=" not in r.text:
                self.think()  # the customer types the card details
                decline = roll(SWITCHES.decline_rate)
                data = {"csrf": csrf_token(r.text) or "", "outcome": "decline" if decline else "succeed"}
                r = self.page("POST", f"/orders/{order_id}/test-payment", "/orders/[id]/test-payment", data=data)
                if not r.ok or urlparse(r.url).path != f"/orders/{order_id}":
                    return "payment_refused"  # not ready after all, or the webhook was not delivered
                return "declined" if decline else "paid"
            time.sleep(2.0)  # the page's own poll interval
        return "payment_pending"  # the storefront's customer does not come back for it

    def discover(self) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"channel": self.channel, **self.utm}
        if self.channel == "recommendation":
            r = self.call("GET", "catalog", "/v1/recommendations", "/v1/recommendations", headers=self.headers)
            items = [x["product"] for x in r.json().get("items", [])] if r.ok else []
            if items:
                return items
        if roll(MIX.p_search):
            params["q"] = random.choice(QUERIES)
            name = "/v1/products?q"
        else:
            r = self.call("GET", "catalog", "/v1/categories", "/v1/categories", headers=self.headers)
            categories = [c["category"] for c in r.json().get("items", []) if c.get("products")] if r.ok else []
            if not categories:
                return []
            params["category"] = random.choice(categories)
            name = "/v1/products?category"
        if roll(MIX.p_filter):
            params["sort"] = random.choice(SORTS)
            extra = random.choice(("in_stock", "max_price", "min_rating", None))
            if extra == "in_stock":
                params["in_stock"] = "true"
            elif extra == "max_price":
                params["max_price"] = random.choice((3000, 5000, 10000, 20000))
            elif extra == "min_rating":
                params["min_rating"] = random.choice((3, 4))
        r = self.call("GET", "catalog", "/v1/products", name, params=params, headers=self.headers)
        items = list(r.json().get("items", [])) if r.ok else []
        if items and roll(MIX.p_next_page) and r.json().get("total", 0) > len(items):
            self.think()
            r = self.call("GET", "catalog", "/v1/products", name, params={**params, "page": 2}, headers=self.headers)
            items = list(r.json().get("items", [])) if r.ok else items
        if not items and "q" in params:  # nothing for that word: the visitor browses a category instead
            r = self.call("GET", "catalog", "/v1/products", "/v1/products", params={"channel": self.channel},
                          headers=self.headers)  # fmt: skip
            items = list(r.json().get("items", [])) if r.ok else []
        return items

    def view(self, product_id: str, channel: str) -> dict[str, Any] | None:
        params = {"channel": channel, **(self.utm if channel == self.channel else {})}
        r = self.call(
            "GET", "catalog", f"/v1/products/{product_id}", "/v1/products/[id]", params=params, headers=self.headers
        )
        return dict(r.json()) if r.ok else None

    def browse(self, found: list[dict[str, Any]]) -> list[dict[str, Any]]:
        viewed: list[dict[str, Any]] = []
        for summary in random.sample(found, min(len(found), random.randint(MIX.views_min, MIX.views_max))):
            self.think()
            product = self.view(summary["product_id"], self.channel)
            if product is None:
                continue
            viewed.append({**summary, **product})
            if roll(MIX.p_read_reviews):
                self.call(
                    "GET",
                    "catalog",
                    f"/v1/products/{summary['product_id']}/reviews",
                    "/v1/products/[id]/reviews",
                    params={"sort": random.choice(("newest", "highest_rated", "lowest_rated"))},
                    headers=self.headers,
                )
            if roll(MIX.p_follow_recommendation):
                r = self.call(
                    "GET",
                    "catalog",
                    f"/v1/products/{summary['product_id']}/recommendations",
                    "/v1/products/[id]/recommendations",
                    params={"limit": 4},
                    headers=self.headers,
                )
                recommended = [x["product"] for x in r.json().get("items", [])] if r.ok else []
                if recommended:
                    self.think()
                    pick = random.choice(recommended)
                    product = self.view(pick["product_id"], "recommendation")
                    if product is not None:
                        viewed.append({**pick, **product})
        return viewed

    # -- the cart ------------------------------------------------------------------------------
    def fill_cart(self, viewed: list[dict[str, Any]]) -> dict[str, Any] | None:
        r = self.call("POST", "cart", "/v1/carts", "/v1/carts", json={}, headers=self.headers)
        if not r.ok:
            return None
        cart = {"id": r.json()["cart_id"], "token": r.json()["cart_token"], "lines": []}
        wanted = sorted(viewed, key=lambda p: not p.get("in_stock", True))  # in-stock first, mostly
        picks = wanted[:1] + ([random.choice(wanted[1:])] if len(wanted) > 1 and roll(MIX.p_second_item) else [])
        for product in picks:
            self.think()
            quantity = random.choices((1, 2, 3), (0.8, 0.15, 0.05))[0]
            added = self.add(cart, product["product_id"], quantity)
            if added and roll(MIX.p_change_quantity):
                quantity = max(1, quantity + random.choice((-1, 1)))
                self.call(
                    "PUT",
                    "cart",
                    f"/v1/carts/{cart['id']}/items/{product['product_id']}",
                    "/v1/carts/[id]/items/[product_id]",
                    expected=(409, 422),  # not that many in stock
                    json={"quantity": quantity},
                    headers=self.cart_headers(cart),
                )
        if not cart["lines"]:
            return None
        if roll(MIX.p_coupon):
            self.think()
            code = random.choice(BOGUS_COUPONS) if roll(0.15) else random.choice(COUPONS)["code"]
            r = self.call(
                "PUT",
                "cart",
                f"/v1/carts/{cart['id']}/coupon",
                "/v1/carts/[id]/coupon",
                expected=(404, 409, 422),  # unknown, expired or below its minimum: the shop says so
                json={"code": code},
                headers=self.cart_headers(cart),
            )
            JOURNEYS["coupon_applied" if r.ok else "coupon_refused"] += 1
        return cart

    def cart_headers(self, cart: dict[str, Any]) -> dict[str, str]:
        return {**self.headers, "X-Cart-Token": cart["token"]}

    def add(self, cart: dict[str, Any], product_id: str, quantity: int) -> bool:
        r = self.call(
            "POST",
            "cart",
            f"/v1/carts/{cart['id']}/items",
            "/v1/carts/[id]/items",
            expected=(404, 409, 422),  # not (yet) sold by the cart, or out of stock
            json={"product_id": product_id, "quantity": quantity},
            headers=self.cart_headers(cart),
        )
        if r.ok:
            cart["lines"].append((product_id, quantity))
            return True
        JOURNEYS["add_refused"] += 1
        if r.status_code == 409 and roll(MIX.p_restock_when_out):
            self.call(
                "POST",
                "catalog",
                f"/v1/admin/products/{product_id}/stock",
                "/v1/admin/products/[id]/stock",
                json={"delta": MIX.restock_units},
                headers=ENDPOINTS.admin("catalog"),
            )
            JOURNEYS["restocked"] += 1
        return False

    def checkout(self, cart: dict[str, Any]) -> bool:
        self.think()
        address = {"name": self.visitor.name, **random.choice(ADDRESSES)}
        r = self.call(
            "GET",
            "cart",
            f"/v1/carts/{cart['id']}/shipping-options",
            "/v1/carts/[id]/shipping-options",
            params={"country": address["country"]},
            headers=self.cart_headers(cart),
        )
        options = r.json() if r.ok else []
        options = options.get("items", []) if isinstance(options, dict) else options
        if not options:
            return False
        cheapest = min(options, key=lambda o: o["price"]["amount"])
        method = cheapest if roll(0.7) else random.choice(options)
        body: dict[str, Any] = {
            "email": self.visitor.email,
            "shipping_address": address,
            "shipping_method_id": method["method_id"],
        }
        if self.visitor.fraudster:
            body["billing_country"] = "US"  # billing far from shipping, a disposable e-mail: screened out
        self.think()
        r = self.call(
            "POST",
            "cart",
            f"/v1/carts/{cart['id']}/checkout",
            "/v1/carts/[id]/checkout",
            expected=(409, 422),  # a line became unavailable, a price changed
            json=body,
            headers=self.cart_headers(cart),
        )
        JOURNEYS["checkouts"] += 1
        cart["email"] = self.visitor.email
        return bool(r.ok)

    def place_order(self, cart: dict[str, Any]) -> Placed | None:
        self.think()
        r = self.call(
            "POST",
            "cart",
            f"/v1/carts/{cart['id']}/order",
            "/v1/carts/[id]/order",
            expected=(409, 422),
            headers={**self.cart_headers(cart), "Idempotency-Key": uuid.uuid4().hex},
        )
        if not r.ok:
            return None
        JOURNEYS["orders"] += 1
        body = r.json()
        return Placed(body["order_id"], body["order_token"], self.session_id, cart["email"], list(cart["lines"]))

    # -- payment: the simulator plays the customer's bank through Stripe's webhooks --------------
    def order(self, placed: Placed) -> dict[str, Any] | None:
        r = self.call(
            "GET",
            "cart",
            f"/v1/orders/{placed.order_id}",
            "/v1/orders/[id]",
            headers={**self.headers, "X-Order-Token": placed.token},
        )
        return dict(r.json()) if r.ok else None

    def pay(self, placed: Placed) -> str:
        if roll(MIX.p_cancel_before_paying):
            self.think()
            r = self.call(
                "POST",
                "cart",
                f"/v1/orders/{placed.order_id}/cancel",
                "/v1/orders/[id]/cancel",
                expected=(409,),
                headers={**self.headers, "X-Order-Token": placed.token},
            )
            return "cancelled_by_customer" if r.ok else "cancel_refused"
        deadline = time.monotonic() + MIX.pay_timeout_s
        polls = 0
        while time.monotonic() < deadline:
            r = self.call(
                "GET",
                "payment",
                f"/v1/payments/{placed.order_id}",
                "/v1/payments/[order_id]",
                expected=(404,),  # not created until the stock is reserved
                headers={"Authorization": f"Bearer {ENDPOINTS.internal_token}"},
            )
            payment = r.json() if r.status_code == 200 else {}
            status = payment.get("status")
            if payment.get("payment_intent_id") and status in ("requires_action", "processing"):
                return self.stripe_verdict(placed, payment["payment_intent_id"])
            if status == "captured":
                self.remember(placed)
                return "paid"
            if status in ("failed", "cancelled", "held_for_review"):
                return self.why_not_paid(placed, status)
            polls += 1
            if polls % 4 == 0:  # the cart may have cancelled it (stock rejected) before any payment
                view = self.order(placed)
                if view and view.get("status") == "cancelled":
                    return f"cancelled_{view.get('cancellation_reason') or 'unknown'}"
            time.sleep(1.0)
        placed.awaiting_payment = True  # the shop lags (a paused or slow consumer): pay on a later visit
        self.remember(placed)
        return "payment_pending"

    def why_not_paid(self, placed: Placed, payment_status: str) -> str:
        if payment_status == "held_for_review":
            return "held_for_review"
        for _ in range(20):
            view = self.order(placed)
            if view and view.get("status") == "cancelled":
                return f"cancelled_{view.get('cancellation_reason') or 'unknown'}"
            time.sleep(0.5)
        return f"payment_{payment_status}"

    def stripe_verdict(self, placed: Placed, intent_id: str) -> str:
        self.think()  # the customer types the card details
        amount = self.payment_amount(placed)
        obj: dict[str, Any] = {
            "id": intent_id,
            "object": "payment_intent",
            "metadata": {"order_id": placed.order_id},
            "amount": amount[0],
            "currency": amount[1].lower(),
        }
        if roll(SWITCHES.decline_rate):
            code, decline_code, message = random.choice(DECLINES)
            obj.update(
                status="requires_payment_method",
                last_payment_error={"code": code, "decline_code": decline_code, "message": message},
            )
            event_type, outcome = "payment_intent.payment_failed", "declined"
        else:
            obj.update(status="succeeded", amount_received=amount[0])
            event_type, outcome = "payment_intent.succeeded", "paid"
        payload = stripe_event(event_type, obj)
        r = self.call(
            "POST",
            "payment",
            "/v1/webhooks/stripe",
            f"/v1/webhooks/stripe ({event_type})",
            data=payload,
            headers={"Stripe-Signature": sign(payload, ENDPOINTS.webhook_secret), "Content-Type": "application/json"},
        )
        if not r.ok:
            return "webhook_refused"
        if outcome == "paid":
            self.remember(placed)
        return outcome

    def remember(self, placed: Placed) -> None:
        if placed not in self.pending:
            self.pending.append(placed)
        del self.pending[: -MIX.max_pending_orders]

    def pay_late(self, placed: Placed) -> None:
        """An order whose payment page was not ready in time: pay once it is, or forget it."""
        r = self.call(
            "GET",
            "payment",
            f"/v1/payments/{placed.order_id}",
            "/v1/payments/[order_id]",
            expected=(404,),
            headers={"Authorization": f"Bearer {ENDPOINTS.internal_token}"},
        )
        payment = r.json() if r.status_code == 200 else {}
        status = payment.get("status")
        if payment.get("payment_intent_id") and status in ("requires_action", "processing"):
            placed.awaiting_payment = False
            outcome = self.stripe_verdict(placed, payment["payment_intent_id"])
            JOURNEYS[f"late_{outcome}"] += 1
            if outcome != "paid":
                self.pending.remove(placed)
        elif status == "captured":
            placed.awaiting_payment = False
        elif status in ("failed", "cancelled", "held_for_review", "refunded") or (
            time.time() - placed.placed_at > MIX.follow_up_after_s
        ):
            self.pending.remove(placed)

    def payment_amount(self, placed: Placed) -> tuple[int, str]:
        r = self.call(
            "GET",
            "payment",
            f"/v1/admin/payments/{placed.order_id}",
            "/v1/admin/payments/[order_id]",
            headers=ENDPOINTS.admin("payment"),
        )
        amount = (r.json() or {}).get("amount") if r.ok else None
        if amount:
            return int(amount["amount"]), str(amount["currency"])
        view = self.order(placed) or {}
        total = view.get("total") or {"amount": 0, "currency": "EUR"}
        return int(total["amount"]), str(total["currency"])

    # -- later: reviews, returns, the warehouse ------------------------------------------------
    def follow_up(self) -> None:
        now = time.time()
        for pending in [r for r in self.returns if r.due <= now]:
            self.returns.remove(pending)
            r = self.call(
                "POST",
                "shipping",
                f"/v1/admin/returns/{pending.return_id}/received",
                "/v1/admin/returns/[id]/received",
                expected=(409,),
                headers=ENDPOINTS.admin("shipping"),
            )
            if r.ok:
                JOURNEYS["returns_received"] += 1
        for placed in [p for p in self.pending if now - p.checked_at > 5][:5]:
            placed.checked_at = now
            if placed.awaiting_payment:
                self.pay_late(placed)
                continue
            view = self.order(placed)
            status = (view or {}).get("status")
            if status == "delivered":
                self.pending.remove(placed)
                JOURNEYS["delivered_seen"] += 1
                self.after_delivery(placed)
            elif status in ("cancelled", "refunded", "partially_refunded", None) or (
                now - placed.placed_at > MIX.follow_up_after_s
            ):
                self.pending.remove(placed)

    def after_delivery(self, placed: Placed) -> None:
        headers = {"X-Session-Id": placed.session_id, "X-Forwarded-For": self.visitor.ip}
        if roll(MIX.p_review):
            product_id = random.choice(placed.lines)[0]
            rating = random.choices((5, 4, 3, 2, 1), (0.45, 0.3, 0.12, 0.08, 0.05))[0]
            title, text = REVIEWS[rating]
            review = {"rating": rating, "title": title, "text": text, "author_name": placed.email.split("@")[0][:80]}
            # The order token proves the purchase (a verified review); 409 while the catalog has not yet
            # learned of the delivery that the cart already showed.
            r = self.call(
                "POST",
                "catalog",
                f"/v1/products/{product_id}/reviews",
                "/v1/products/[id]/reviews (write)",
                expected=(409,),
                json={**review, "order_id": placed.order_id},
                headers={**headers, "X-Order-Token": placed.token},
            )
            if r.status_code == 201:
                JOURNEYS["reviews"] += 1
        if roll(MIX.p_return):
            product_id, _ = random.choice(placed.lines)
            r = self.call(
                "POST",
                "shipping",
                f"/v1/orders/{placed.order_id}/returns",
                "/v1/orders/[id]/returns",
                expected=(409, 422),
                json={
                    "email": placed.email,
                    "lines": [{"product_id": product_id, "quantity": 1}],
                    "reason": random.choice(RETURN_REASONS),
                },
                headers=headers,
            )
            if r.ok:
                JOURNEYS["returns_requested"] += 1
                self.returns.append(PendingReturn(r.json()["return_id"], time.time() + MIX.return_received_after_s))


# -- set-up and the operator's routes ------------------------------------------------------------
def ensure_coupons() -> None:
    """Create the shop's coupons once; a second start finds them (409) and leaves them alone."""
    for coupon in COUPONS:
        status, answer = call("POST", ENDPOINTS.urls["cart"] + "/v1/admin/coupons", ENDPOINTS.admin("cart"), coupon)
        if status not in (201, 409):
            log.warning("coupon %s not created: HTTP %s %s", coupon["code"], status, answer)


@events.test_start.add_listener
def on_test_start(environment: Any, **_: Any) -> None:
    global STARTED
    STARTED = time.time()
    ensure_coupons()


def stats() -> dict[str, Any]:
    minutes = max((time.time() - STARTED) / 60, 1 / 60)
    journeys = {k: v for k, v in JOURNEYS.items() if not k.startswith(("channel:", "via:", "variant:"))}
    visits = JOURNEYS["visits"]
    return {
        "minutes": round(minutes, 2),
        "visits": visits,
        "visits_per_min": round(visits / minutes, 2),
        "orders_per_min": round(JOURNEYS["orders"] / minutes, 2),
        "paid_per_min": round((JOURNEYS["paid"] + JOURNEYS["late_paid"]) / minutes, 2),
        "conversion": round((JOURNEYS["paid"] + JOURNEYS["late_paid"]) / visits, 4) if visits else None,
        "journeys": dict(sorted(journeys.items())),
        "channels": {k.split(":", 1)[1]: v for k, v in sorted(JOURNEYS.items()) if k.startswith("channel:")},
        "via": {k.split(":", 1)[1]: v for k, v in sorted(JOURNEYS.items()) if k.startswith("via:")},
        "variants": {k.split(":", 1)[1]: v for k, v in sorted(JOURNEYS.items()) if k.startswith("variant:")},
        "mix": {k: v for k, v in MIX.__dict__.items()},
    }


@events.init.add_listener
def on_init(environment: Any, **_: Any) -> None:
    web_ui = getattr(environment, "web_ui", None)
    if web_ui is None:  # headless: the switches are the env's initial values
        return
    from flask import jsonify, request

    guard = getattr(web_ui, "auth_required_if_enabled", lambda view: view)

    @web_ui.app.route("/kasse/faults", methods=["GET"])
    @guard
    def get_faults() -> Any:
        return jsonify(SWITCHES.show())

    @web_ui.app.route("/kasse/faults", methods=["PUT", "POST"])
    @guard
    def put_faults() -> Any:
        changes = request.get_json(silent=True)
        if not isinstance(changes, dict):
            return jsonify({"done": [], "errors": ["a JSON object of switches is expected"]}), 400
        done, errors = SWITCHES.apply(changes)
        for line in done:
            log.warning("fault switch: %s", line)
        return jsonify({**SWITCHES.show(), "done": done, "errors": errors}), (200 if not errors else 502)

    @web_ui.app.route("/kasse/stats", methods=["GET"])
    @guard
    def get_stats() -> Any:
        return jsonify(stats())
