"""Chaos on the real stack: many orders through the HTTP APIs while every part is killed -9 in turn.

    uv run python -m kasse_testkit.chaos --orders 300 --own-stack        # make chaos
    uv run python -m kasse_testkit.chaos --orders 40 --no-infra-kills   # the small run inside make test

Loopback only, bounded in count and time, stops by itself. With `--own-stack` it runs its OWN Kafka,
FerretDB and stripe-mock (its own KASSE_HOME and ports, `deploy/local/stack.py`), never the shared one,
and kills those too; without it the infrastructure comes from the environment (KASSE_KAFKA_BOOTSTRAP, ...)
and only the five services, which it started itself, are killed.

Clients behave like real ones: each order has its own cart and Idempotency-Key, and every call is retried
on errors with the same key. Most orders are paid with signed webhooks, some declined, some never paid (they
must expire). A recording proxy in front of stripe-mock counts PaymentIntents and refunds per order. At the
end every order must be terminal; the report counts what was lost, duplicated or stuck, checks stock
conservation per product and the dead letters, and gives each part's time back to ready.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import ipaddress
import json
import os
import random
import re
import shutil
import signal
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import uvicorn
from aiokafka import AIOKafkaConsumer
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from kasse_contracts import topics
from kasse_testkit import Namespace, chaos_probe, free_port
from kasse_testkit.e2e.shop import ADMIN, SERVICES, Shop
from kasse_testkit.e2e.subscriber import OrderEventsSubscriber
from kasse_testkit.infrastructure import Infrastructure, find_repo_root

TERMINAL = {"delivered", "cancelled", "refunded", "partially_refunded"}
ORDER_TOPICS = [topics.ORDERS, topics.STOCK, topics.PAYMENTS, topics.SHIPPING]


@dataclass
class Config:
    orders: int = 300
    concurrency: int = 25
    products: int = 5
    stock_per_product: int = 1000
    pay_share: float = 0.8
    decline_share: float = 0.1  # the rest is never paid and must expire
    unpaid_timeout_s: float = 180.0
    own_stack: bool = False
    infra_kills: bool = True
    terminal_timeout_s: float = 420.0
    port_base: int = 19412  # own stack: kafka, controller, ferretdb, stripe http, stripe https = base + 0..4
    home: Path | None = None
    seed: int = 12
    fault_pause_s: float = 15.0  # between two kills


@dataclass
class Placed:
    key: str
    order_id: str
    token: str
    product_id: str
    quantity: int
    fate: str  # pay | decline | never
    placed_at: float
    paid_at: float | None = None


@dataclass
class Report:
    accepted: int = 0
    refused: int = 0
    lost: list[str] = field(default_factory=list)
    lost_why: dict[str, str] = field(default_factory=dict)
    stuck: dict[str, str] = field(default_factory=dict)
    duplicated: dict[str, list[str]] = field(default_factory=dict)
    stock_mismatches: dict[str, str] = field(default_factory=dict)
    dead_letters: dict[str, int] = field(default_factory=dict)
    back_to_ready_s: dict[str, float] = field(default_factory=dict)
    outcomes: Counter[str] = field(default_factory=Counter)
    orders_per_minute: float = 0.0
    elapsed_s: float = 0.0
    terminal_after_last_restart_s: float | None = None  # None: not every order became terminal
    fault_failures: list[str] = field(default_factory=list)  # a killed part that did not come back
    errors: Counter[str] = field(default_factory=Counter)
    liveness_restarts: Counter[str] = field(default_factory=Counter)  # by the stand-in for Kubernetes' probe
    diagnosis: list[str] = field(default_factory=list)  # a failed run: consumer lag, outbox, stuck orders' documents

    @property
    def ok(self) -> bool:
        return not (
            self.lost or self.stuck or any(self.duplicated.values()) or self.stock_mismatches or self.fault_failures
        ) and not sum(self.dead_letters.values())

    def text(self) -> str:
        dup = {k: len(v) for k, v in self.duplicated.items()}
        lines = [
            f"orders accepted          {self.accepted} (refused by the API after retries: {self.refused})",
            f"orders/min end to end    {self.orders_per_minute:.1f} (placed to terminal, {self.elapsed_s:.0f} s)",
            "all terminal after the last restart (s) "
            + ("never" if self.terminal_after_last_restart_s is None else f"{self.terminal_after_last_restart_s:.0f}"),
            f"outcomes                 {dict(self.outcomes)}",
            f"lost                     {len(self.lost)} {dict(list(self.lost_why.items())[:5])}",
            f"duplicated               {dup}",
            f"stuck (not terminal)     {len(self.stuck)} {dict(list(self.stuck.items())[:5])}",
            f"stock mismatches         {len(self.stock_mismatches)} {self.stock_mismatches}",
            f"dead letters             {self.dead_letters}",
            "back to ready (s)        " + ", ".join(f"{k} {v:.1f}" for k, v in self.back_to_ready_s.items()),
            f"client retries           {dict(self.errors)}",
            f"faults that failed       {self.fault_failures}",
            f"restarted by liveness    {dict(self.liveness_restarts)}",
            *self.diagnosis,
            "RESULT                   " + ("OK" if self.ok else "FAILED"),
        ]
        return "\n".join(lines)


# -- a recording proxy in front of stripe-mock -------------------------------------------------------
class StripeRecorder:
    """stripe-mock keeps nothing: this proxy counts what payment asked of Stripe, per order.

    It also answers `GET /v1/payment_intents/search` by order id from the intents it saw created, as
    Stripe does: payment's guard against a second intent after a crash between creating one and recording
    it searches first (issue 12), and stateless stripe-mock always answered "none", so a kill -9 in that
    window made a duplicate that Stripe itself would not have let happen (its search, with the create's
    idempotency key covering search's ~1 min lag). Answered at once here, i.e. as search plus that key.
    """

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.intents: Counter[str] = Counter()
        self.refunds: dict[str, set[str]] = defaultdict(set)  # order -> idempotency keys
        self.refund_posts: Counter[str] = Counter()
        self.intent_created_at: dict[str, float] = {}  # order -> when Stripe first answered a create (monotonic)
        self.created_intents: dict[str, dict[str, Any]] = {}  # order -> the first intent: id, amount, currency
        self.intent_objects: dict[str, list[dict[str, Any]]] = defaultdict(list)  # order -> intents as Stripe has them
        self.app = Starlette(routes=[Route("/{path:path}", self.forward, methods=["GET", "POST", "DELETE"])])
        self.client = httpx.AsyncClient(timeout=30)
        # Stripe answers a POST repeated with the same Idempotency-Key with the first answer and creates
        # nothing; stripe-mock ignores the key. The Stripe SDK repeats a create after a read timeout (seen in
        # make chaos on a loaded machine), so the proxy plays Stripe's part: one upstream call per key.
        self._by_key: dict[str, asyncio.Future[Response]] = {}

    async def forward(self, request: Request) -> Response:
        key = request.headers.get("idempotency-key", "")
        if request.method != "POST" or not key:
            return await self._forward(request)
        if key in self._by_key:
            first = await asyncio.shield(self._by_key[key])
            return Response(first.body, first.status_code, media_type=first.media_type)
        answer: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        self._by_key[key] = answer
        try:
            response = await self._forward(request)
        except BaseException as exc:
            del self._by_key[key]  # not answered: a retry may go upstream
            answer.set_exception(exc)
            answer.exception()  # retrieved: nobody may be waiting
            raise
        if response.status_code >= 500:
            del self._by_key[key]  # Stripe does not keep a 5xx for the key either
        answer.set_result(response)
        return response

    async def _forward(self, request: Request) -> Response:
        body = await request.body()
        path = request.url.path
        if request.method == "GET" and path == "/v1/payment_intents/search":
            return self.search_intents(request.query_params.get("query", ""))
        if request.method == "POST":
            form = parse_qs(body.decode(errors="replace"))
            order = (form.get("metadata[order_id]") or [""])[0]
            if path == "/v1/payment_intents" and order:
                self.intents[order] += 1
            if path == "/v1/refunds" and order:
                self.refund_posts[order] += 1
                self.refunds[order].add(request.headers.get("idempotency-key", ""))
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")}
        upstream = await self.client.request(
            request.method, self.upstream + path, params=request.query_params, content=body, headers=headers
        )
        if request.method == "POST" and path == "/v1/payment_intents" and order and upstream.status_code < 300:
            created = upstream.json()
            metadata = {**(created.get("metadata") or {}), "order_id": order}  # stripe-mock echoes none
            self.intent_objects[order].append({**created, "metadata": metadata})
            if order not in self.created_intents:
                self.created_intents[order] = {
                    "id": upstream.json()["id"],
                    "amount": int((form.get("amount") or ["0"])[0]),
                    "currency": (form.get("currency") or ["eur"])[0],
                }
                self.intent_created_at[order] = time.monotonic()
        cancelled = re.fullmatch(r"/v1/payment_intents/([^/]+)/cancel", path)
        if request.method == "POST" and cancelled and upstream.status_code < 300:
            for intents in self.intent_objects.values():
                for intent in intents:
                    if intent.get("id") == cancelled.group(1):
                        intent["status"] = "canceled"
        return Response(upstream.content, upstream.status_code, media_type=upstream.headers.get("content-type"))

    def search_intents(self, query: str) -> Response:
        found = re.fullmatch(r"metadata\['order_id'\]:'([^']*)'", query.strip())
        data = self.intent_objects.get(found.group(1), []) if found else []
        url = "/v1/payment_intents/search"
        result = {"object": "search_result", "data": data, "has_more": False, "next_page": None, "url": url}
        return Response(json.dumps(result), 200, media_type="application/json")


async def serve(app: Any, port: int) -> tuple[uvicorn.Server, asyncio.Task[None]]:
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve())
    for _ in range(200):  # up to 10 s; uvicorn offers no started event to await
        if server.started:
            break
        await asyncio.sleep(0.05)
    return server, task


# -- the own stack -----------------------------------------------------------------------------------
def load_stack() -> Any:
    path = find_repo_root(Path(__file__).resolve()) / "deploy" / "local" / "stack.py"
    spec = importlib.util.spec_from_file_location("kasse_stack_chaos", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def seed_home(home: Path, repo_home: Path) -> None:
    """Reuse the repository stack's built binaries and jars (read only) instead of building them again."""
    home.mkdir(parents=True, exist_ok=True)
    for rel in ("bin/ferretdb", "bin/stripe-mock"):  # copies: the stack recognises its processes by path
        src, dst = repo_home / rel, home / rel
        if src.exists() and not dst.exists():
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
    for rel in ("kafka/lib",):
        src, dst = repo_home / rel, home / rel
        if src.exists() and not dst.exists():
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.symlink_to(src, target_is_directory=True)
    for rel in ("kafka/pom.xml", "stamps/kafka", "stamps/ferretdb", "stamps/stripe-mock"):
        src, dst = repo_home / rel, home / rel
        if src.exists() and not dst.exists():
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)


class OwnStack:
    def __init__(self, cfg: Config) -> None:
        self.stack = load_stack()
        self.home = cfg.home or Path(tempfile.mkdtemp(prefix="kasse-chaos-"))
        repo_home = Path(os.environ.get("KASSE_REPO_HOME") or find_repo_root(Path(__file__).resolve()) / ".kasse")
        seed_home(self.home, repo_home)
        b = cfg.port_base
        self.config = self.stack.Config(
            home=self.home,
            kafka_port=b,
            kafka_controller_port=b + 1,
            ferretdb_port=b + 2,
            stripe_port=b + 3,
            stripe_https_port=b + 4,
            kafka_heap="512m",
            # A supervisor waits: the broker's restart took 111 s on a loaded machine (load 30 on 2 cores),
            # beyond the stack's default 90 s, and the run ended without its verdict.
            start_timeout=300.0,
        )

    def start(self, parts: list[str] | None = None) -> dict[str, str]:
        return dict(self.stack.start(parts, quiet=True, config=self.config))

    def kill(self, part: str) -> None:
        pid_file = self.config.run_dir / f"{part}.pid"
        pid = int(pid_file.read_text().strip())
        os.kill(pid, signal.SIGKILL)
        for _ in range(100):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)

    def stop(self, keep_data: bool = False) -> None:
        self.stack.stop(None, purge=not keep_data, quiet=True, config=self.config)


# -- clients -----------------------------------------------------------------------------------------
async def call(
    client: httpx.AsyncClient, report: Report, method: str, url: str, *, deadline: float, **kw: Any
) -> httpx.Response:
    """A real client: retry errors, 5xx and 429 with backoff until the deadline (same body, same key)."""
    delay = 0.2
    while True:
        try:
            r = await client.request(method, url, **kw)
            if r.status_code < 500 and r.status_code != 429:
                return r
            report.errors[f"http {r.status_code}"] += 1
        except httpx.HTTPError as exc:
            report.errors[type(exc).__name__] += 1
        if time.monotonic() > deadline:
            raise TimeoutError(f"{method} {url}: gave up")
        await asyncio.sleep(delay + random.uniform(0, delay))
        delay = min(delay * 2, 5.0)


def shopper_ip(n: int) -> str:
    """Shopper n's own address. The driver stands where the storefront does, a proxy the services trust
    (the harness sets KASSE_TRUSTED_PROXIES=127.0.0.1), so it forwards each shopper's IP like one: without
    it every order came from 127.0.0.1 and payment's per-IP velocity rule (10 orders an hour) blocked
    all but the first ten as fraud — 105 of 116 screenings in a 100-order run."""
    return str(ipaddress.ip_address("10.12.0.1") + n)


@dataclass
class Checkout:
    """A shopper's cart, checked out and ready to be ordered."""

    n: int
    cart_id: str
    headers: dict[str, str]
    product_id: str
    quantity: int


async def prepare_cart(
    client: httpx.AsyncClient, shop: Shop, report: Report, product_id: str, quantity: int, n: int, deadline: float
) -> Checkout | None:
    session = {"X-Session-Id": f"chaos-{n}-{uuid.uuid4().hex[:8]}", "X-Forwarded-For": shopper_ip(n)}
    cart = shop.url("cart")
    r = await call(client, report, "POST", cart + "/v1/carts", json={}, headers=session, deadline=deadline)
    if r.status_code != 201:
        report.errors[f"create cart {r.status_code}"] += 1
        return None
    body = r.json()
    cart_id, headers = body["cart_id"], {**session, "X-Cart-Token": body["cart_token"]}
    r = await call(
        client,
        report,
        "POST",
        f"{cart}/v1/carts/{cart_id}/items",
        json={"product_id": product_id, "quantity": quantity},
        # Retried after a lost answer with the same key: added once (without it, twice).
        headers={**headers, "Idempotency-Key": f"chaos-add-{n}-{uuid.uuid4().hex[:8]}"},
        deadline=deadline,
    )
    if r.status_code not in (200, 201):
        report.errors[f"add {r.status_code}"] += 1
        return None
    checkout = {
        "email": f"chaos{n}@example.com",
        "shipping_method_id": "standard",
        "shipping_address": {
            "name": "Chaos Shopper",
            "line1": "Hauptstr. 5",
            "postal_code": "10115",
            "city": "Berlin",
            "country": "DE",
        },
    }
    r = await call(
        client, report, "POST", f"{cart}/v1/carts/{cart_id}/checkout", json=checkout, headers=headers, deadline=deadline
    )
    if r.status_code not in (200, 201):
        report.errors[f"checkout {r.status_code}"] += 1
        return None
    return Checkout(n, cart_id, headers, product_id, quantity)


async def place_order(
    client: httpx.AsyncClient, shop: Shop, report: Report, checkout: Checkout, fate: str, deadline: float
) -> Placed | None:
    key = f"chaos-order-{checkout.n}-{uuid.uuid4().hex[:8]}"
    ids: set[str] = set()
    accepted: dict[str, Any] | None = None
    for _ in range(2):  # a client that lost the answer asks again with the same key: one order
        r = await call(
            client,
            report,
            "POST",
            f"{shop.url('cart')}/v1/carts/{checkout.cart_id}/order",
            headers={**checkout.headers, "Idempotency-Key": key},
            deadline=deadline,
        )
        if r.status_code not in (200, 201):
            report.errors[f"order {r.status_code}"] += 1
            return None
        accepted = r.json()
        ids.add(accepted["order_id"])
    assert accepted is not None
    if len(ids) > 1:
        report.duplicated.setdefault("orders", []).append(key)
    return Placed(
        key,
        accepted["order_id"],
        accepted["order_token"],
        checkout.product_id,
        checkout.quantity,
        fate,
        time.monotonic(),
    )


async def place_one(
    client: httpx.AsyncClient, shop: Shop, report: Report, product_id: str, quantity: int, fate: str, n: int
) -> Placed | None:
    deadline = time.monotonic() + 240
    checkout = await prepare_cart(client, shop, report, product_id, quantity, n, deadline)
    return None if checkout is None else await place_order(client, shop, report, checkout, fate, deadline)


async def pay_one(client: httpx.AsyncClient, shop: Shop, report: Report, order: Placed) -> None:
    if order.fate == "never":
        return
    deadline = time.monotonic() + 300
    admin = {"Authorization": f"Bearer {ADMIN['payment']}"}
    url = shop.url("payment") + f"/v1/admin/payments/{order.order_id}"
    payment: dict[str, Any] = {}
    poll = 0.5
    while time.monotonic() < deadline:
        try:
            r = await client.get(url, headers=admin)
            payment = r.json() if r.status_code == 200 else {}
        except httpx.HTTPError:
            payment = {}
        if payment.get("payment_intent_id") and payment.get("status") == "requires_action":
            break
        if payment.get("status") in ("failed", "cancelled"):
            return  # fraud rule or expiry came first: nothing to pay any more
        # Like a real client, backing off: a fixed 1 s poll of every unpaid order was ~270 requests a second
        # to payment in the 300-order run (3,500 access-log lines a minute on two shared cores).
        await asyncio.sleep(poll + random.uniform(0, poll / 2))
        poll = min(poll * 1.5, 5.0)
    else:
        report.errors["intent never ready"] += 1
        return
    amount = payment["amount"]["amount"]
    obj: dict[str, Any] = {
        "id": payment["payment_intent_id"],
        "object": "payment_intent",
        "metadata": {"order_id": order.order_id},
        "amount": amount,
        "currency": payment["amount"]["currency"].lower(),
    }
    if order.fate == "pay":
        obj.update(status="succeeded", amount_received=amount)
        kind = "payment_intent.succeeded"
    else:
        obj.update(
            status="requires_payment_method",
            last_payment_error={"code": "card_declined", "decline_code": "generic_decline", "message": "Declined."},
        )
        kind = "payment_intent.payment_failed"
    while time.monotonic() < deadline:
        try:
            r = await shop.stripe_webhook(client, kind, obj)
            if r.status_code == 200:
                order.paid_at = time.monotonic()
                return
            report.errors[f"webhook {r.status_code}"] += 1
        except httpx.HTTPError as exc:
            report.errors[f"webhook {type(exc).__name__}"] += 1
        await asyncio.sleep(1.0)  # Stripe retries a webhook that was not acknowledged


# -- faults ------------------------------------------------------------------------------------------
async def all_ready(client: httpx.AsyncClient, shop: Shop) -> bool:
    try:
        answers = await asyncio.gather(*(client.get(shop.url(s) + "/readyz") for s in SERVICES))
    except httpx.HTTPError:
        return False
    return all(r.status_code == 200 for r in answers)


async def wait_ready(client: httpx.AsyncClient, shop: Shop, limit: float = 240) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit:
        if await all_ready(client, shop):
            return time.monotonic() - t0
        await asyncio.sleep(0.5)
    return float("inf")


async def restart(process: Any, report: Report, name: str, attempts: int = 5) -> None:
    """Like a supervisor (Kubernetes' restart policy): a process that exits while starting (say the broker
    does not answer yet) is started again, with a pause; each extra start is counted."""
    for attempt in range(attempts):
        try:
            await process.start(timeout=240)
            return
        except AssertionError:
            if attempt == attempts - 1:
                raise
            report.errors[f"{name} restarted again"] += 1
            await asyncio.sleep(5 * (attempt + 1))


LIVENESS_PERIOD_S = 10.0  # the chart's liveness probe: every 10 s ...
LIVENESS_FAILURES = 3  # ... and the third failure in a row restarts the container


async def liveness(
    client: httpx.AsyncClient,
    shop: Any,
    report: Report,
    busy: dict[str, asyncio.Lock],
    period_s: float = LIVENESS_PERIOD_S,
) -> None:
    """Kubernetes' part, which `make up` has no one to play: a service whose `/healthz` answers 503 (the kit's
    "dead": a consumer stalled despite its own restarts) three probes in a row is killed and started again.
    Only a 503 counts, not an unanswered probe (a part the faults are restarting, or a slow answer on a
    loaded machine), so this is more patient than the chart's probe. Runs until cancelled."""
    failures: Counter[str] = Counter()
    while True:
        await asyncio.sleep(period_s)
        for name in SERVICES:
            if busy[name].locked():
                failures[name] = 0
                continue
            try:
                dead = (await client.get(shop.url(name) + "/healthz", timeout=5)).status_code == 503
            except httpx.HTTPError:
                dead = False
            failures[name] = failures[name] + 1 if dead else 0
            if failures[name] < LIVENESS_FAILURES:
                continue
            failures[name] = 0
            async with busy[name]:
                process = shop.processes[name]
                process.kill()
                await restart(process, report, name)
            report.liveness_restarts[name] += 1
            print(f"chaos: {name} answered /healthz 503 {LIVENESS_FAILURES} times in a row; restarted", flush=True)


async def stop_task(task: asyncio.Task[None] | None) -> None:
    if task is not None:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def faults(
    client: httpx.AsyncClient,
    shop: Shop,
    stack: OwnStack | None,
    report: Report,
    pause: float,
    busy: dict[str, asyncio.Lock],
) -> None:
    for name in ("payment", "shipping", "cart", "catalog", "metrics"):
        await asyncio.sleep(pause)
        process = shop.processes[name]
        async with busy[name]:
            process.kill()
            t0 = time.monotonic()
            await restart(process, report, name)
        report.back_to_ready_s[name] = time.monotonic() - t0
        print(f"chaos: {name} killed -9 and ready again in {report.back_to_ready_s[name]:.1f} s", flush=True)
    if stack is None:
        return
    for part, label in (("kafka", "kafka"), ("ferretdb", "store")):
        await asyncio.sleep(pause)
        await asyncio.to_thread(stack.kill, part)
        t0 = time.monotonic()
        await asyncio.sleep(2)
        await asyncio.to_thread(stack.start, [part])
        waited = await wait_ready(client, shop)
        report.back_to_ready_s[label] = time.monotonic() - t0 if waited != float("inf") else waited
        print(f"chaos: {label} killed -9; every service ready {report.back_to_ready_s[label]:.1f} s later", flush=True)


# -- the verdict -------------------------------------------------------------------------------------
async def views(client: httpx.AsyncClient, shop: Shop, placed: list[Placed]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}

    async def one(o: Placed) -> None:
        try:
            r = await client.get(shop.url("cart") + f"/v1/orders/{o.order_id}", headers={"X-Order-Token": o.token})
        except httpx.HTTPError:
            return
        if r.status_code == 200:
            out[o.order_id] = r.json()
        elif r.status_code == 404:
            out[o.order_id] = {"status": "missing"}

    sem = asyncio.Semaphore(20)

    async def bounded(o: Placed) -> None:
        async with sem:
            await one(o)

    await asyncio.gather(*(bounded(o) for o in placed))
    return out


async def dead_letters(bootstrap: str, namespace: Namespace) -> dict[str, int]:
    names = [namespace.topic(topics.dead_letter_topic(s)) for s in SERVICES]
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        existing = await consumer.topics()
        counts: dict[str, int] = {}
        for name in names:
            if name not in existing:
                continue
            parts = consumer.partitions_for_topic(name) or set()
            from aiokafka import TopicPartition

            tps = [TopicPartition(name, p) for p in parts]
            if not tps:
                continue
            ends = await consumer.end_offsets(tps)
            begins = await consumer.beginning_offsets(tps)
            counts[name.rsplit(".", 1)[-1]] = sum(ends[tp] - begins[tp] for tp in tps)
        return counts
    finally:
        await consumer.stop()


async def run(cfg: Config, infrastructure: Infrastructure | None = None) -> Report:
    """`infrastructure`: the stack to use when not running an own one (default: the environment's)."""
    random.seed(cfg.seed)
    report = Report()
    stack: OwnStack | None = None
    log_dir = Path(tempfile.mkdtemp(prefix="kasse-chaos-logs-"))
    if cfg.own_stack:
        stack = OwnStack(cfg)
        print(f"chaos: own stack in {stack.home} (ports from {cfg.port_base})", flush=True)
        try:
            env = await asyncio.to_thread(stack.start)
        except BaseException:
            await asyncio.to_thread(stack.stop)
            raise
        base = Infrastructure(
            env["KASSE_KAFKA_BOOTSTRAP"], env["KASSE_MONGO_URI"], env["KASSE_STRIPE_API_BASE"], "chaos"
        )
        cfg.infra_kills = cfg.infra_kills and True
    elif infrastructure is not None:
        base = infrastructure
    else:
        base = Infrastructure(
            os.environ["KASSE_KAFKA_BOOTSTRAP"],
            os.environ["KASSE_MONGO_URI"],
            os.environ["KASSE_STRIPE_API_BASE"],
            "env",
        )
    recorder = StripeRecorder(base.stripe_api_base)
    proxy_port = free_port()
    proxy, proxy_task = await serve(recorder.app, proxy_port)
    infra = Infrastructure(base.kafka_bootstrap, base.mongo_uri, f"http://127.0.0.1:{proxy_port}", base.origin)
    namespace = Namespace("chaos" + uuid.uuid4().hex[:8])
    shop = Shop(
        infra,
        namespace,
        log_dir,
        settings={
            "KASSE_CART_UNPAID_ORDER_TIMEOUT_S": str(cfg.unpaid_timeout_s),
            "KASSE_CART_UNPAID_CHECK_INTERVAL_S": "2",
            "KASSE_SHIPPING_CARRIER_DISPATCH_AFTER_S": "2",
            "KASSE_SHIPPING_CARRIER_DELIVER_AFTER_S": "2",
        },
    )
    print(f"chaos: logs in {log_dir}", flush=True)
    supervisor: asyncio.Task[None] | None = None
    try:
        await shop.start()
        async with (
            httpx.AsyncClient(timeout=15) as client,
            OrderEventsSubscriber(infra.kafka_bootstrap, [namespace.topic(t) for t in ORDER_TOPICS]) as events,
        ):
            products = await seed_products(client, shop, cfg)
            initial = {p: cfg.stock_per_product for p in products}
            fates = ["pay"] * round(cfg.orders * cfg.pay_share) + ["decline"] * round(cfg.orders * cfg.decline_share)
            fates += ["never"] * (cfg.orders - len(fates))
            random.shuffle(fates)
            sem = asyncio.Semaphore(cfg.concurrency)
            placed: list[Placed] = []
            started = time.monotonic()

            async def journey(n: int) -> None:
                async with sem:
                    product = random.choice(products)
                    try:
                        order = await place_one(client, shop, report, product, random.randint(1, 3), fates[n], n)
                    except TimeoutError:
                        order = None
                if order is None:
                    report.refused += 1
                    return
                placed.append(order)
                await pay_one(client, shop, report, order)

            killable = stack if cfg.infra_kills else None
            busy = {name: asyncio.Lock() for name in SERVICES}  # a restart under way: the other waits
            supervisor = asyncio.create_task(liveness(client, shop, report, busy))
            chaos = asyncio.create_task(faults(client, shop, killable, report, pause=cfg.fault_pause_s, busy=busy))
            await asyncio.gather(*(journey(n) for n in range(cfg.orders)))
            try:
                await chaos
            except Exception as exc:  # a part that did not come back: say so, and still judge every order
                report.fault_failures.append(repr(exc)[:300])
                print(f"chaos: fault injection failed: {exc!r}"[:500], flush=True)
            last_restart = time.monotonic()
            report.accepted = len(placed)
            print(f"chaos: {len(placed)} orders accepted; waiting for every one to be terminal", flush=True)

            seen: dict[str, dict[str, Any]] = {}
            finished_at: dict[str, float] = {}
            progress_at = 0.0
            while time.monotonic() - last_restart < cfg.terminal_timeout_s:
                # A terminal order stays terminal: ask only for the others (each order view costs the cart a
                # lookup at payment while the order is unpaid).
                seen.update(await views(client, shop, [o for o in placed if o.order_id not in finished_at]))
                for oid, view in seen.items():
                    if view.get("status") in TERMINAL and oid not in finished_at:
                        finished_at[oid] = time.monotonic()
                if all(view.get("status") in TERMINAL for view in seen.values()) and len(seen) == len(placed):
                    if await settled(client, shop, seen, placed):
                        break
                if time.monotonic() - progress_at >= 60:
                    progress_at = time.monotonic()
                    await progress(client, shop, infra, namespace, seen, last_restart)
                await asyncio.sleep(5)
            await stop_task(supervisor)
            report.elapsed_s = time.monotonic() - started
            done = len(finished_at)
            if done == len(placed):
                report.terminal_after_last_restart_s = max([0.0, *(t - last_restart for t in finished_at.values())])
            report.orders_per_minute = done / (report.elapsed_s / 60) if report.elapsed_s else 0.0
            judge(report, placed, seen, events, recorder)
            await check_stock(client, shop, report, placed, seen, initial, events)
        report.dead_letters = await dead_letters(infra.kafka_bootstrap, namespace)
        if not report.ok:
            # Before anything is stopped or purged: where the orders stopped (lag, outbox, documents).
            report.diagnosis = await chaos_probe.report(
                infra.kafka_bootstrap, infra.mongo_uri, namespace, [*report.lost, *report.stuck]
            )
            async with httpx.AsyncClient() as probe:
                store = await chaos_probe.store_latencies(probe, {s: shop.url(s) for s in SERVICES})
            report.diagnosis.append(f"store time per command since each service's start {store}")
    finally:
        await stop_task(supervisor)  # nothing restarts a service the run is stopping
        keep = stack is not None and not report.ok
        if keep:  # the services stop, the stack's data stays for a post-mortem (topics included)
            for process in shop.processes.values():
                await process.stop()
        else:
            await shop.stop()
        proxy.should_exit = True
        await proxy_task
        await recorder.client.aclose()
        if stack is not None:
            await asyncio.to_thread(stack.stop, keep)
            if keep:
                print(
                    f"chaos: the stack's data is kept in {stack.home} (topics {namespace.topic_prefix}*, databases "
                    f"{namespace.database('<service>')}); start it with KASSE_HOME={stack.home} and the ports from "
                    f"{cfg.port_base} to look, remove the directory when done",
                    flush=True,
                )
    return report


async def progress(
    client: httpx.AsyncClient,
    shop: Shop,
    infra: Infrastructure,
    namespace: Namespace,
    seen: dict[str, dict[str, Any]],
    since: float,
) -> None:
    """One line a minute while the run waits: the orders' states, each service's consumer lag, and how long
    the store takes per command (a loaded machine shows here: seconds per write, not milliseconds)."""
    states = Counter(str(v.get("status")) for v in seen.values())
    try:
        lag: Any = await asyncio.wait_for(chaos_probe.consumer_lag(infra.kafka_bootstrap, namespace), 60)
    except Exception as exc:
        lag = repr(exc)[:200]
    store = await chaos_probe.store_latencies(client, {s: shop.url(s) for s in SERVICES})
    print(f"chaos: +{time.monotonic() - since:.0f} s states {dict(states)} lag {lag} store {store}", flush=True)


async def settled(client: httpx.AsyncClient, shop: Shop, seen: dict[str, dict[str, Any]], placed: list[Placed]) -> bool:
    """No reservation still held: terminal orders must have given their stock back or delivered it."""
    admin = {"Authorization": f"Bearer {ADMIN['catalog']}"}
    for product in {o.product_id for o in placed}:
        r = await client.get(shop.url("catalog") + f"/v1/admin/products/{product}", headers=admin)
        if r.status_code != 200 or r.json()["stock_reserved"] != 0:
            return False
    return True


def cancel_reason(events: OrderEventsSubscriber, order_id: str) -> str:
    """Why an order was cancelled, as its events say: the payment's failure reason (declined, fraud) or the
    cancellation's (payment_timeout, ...), e.g. `(payment_failed:fraud_suspected)`."""
    reasons = []
    for s in events.for_order(order_id):
        kind = type(s.event).__name__
        if kind in ("OrderCancelled", "PaymentFailed"):
            reason = getattr(s.event, "reason", "")
            reasons.append(str(getattr(reason, "value", reason)))
    return f"({':'.join(dict.fromkeys(reasons))})" if reasons else ""


def judge(
    report: Report,
    placed: list[Placed],
    seen: dict[str, dict[str, Any]],
    events: OrderEventsSubscriber,
    recorder: StripeRecorder,
) -> None:
    for o in placed:
        view = seen.get(o.order_id)
        if view is None or view.get("status") == "missing":
            report.lost.append(o.order_id)
            report.lost_why[o.order_id] = "no order view (404)" if view else "order view never answered"
            continue
        status = str(view.get("status"))
        report.outcomes[f"{o.fate}->{status}{cancel_reason(events, o.order_id) if status == 'cancelled' else ''}"] += 1
        if status not in TERMINAL:
            report.stuck[o.order_id] = status
        kinds = Counter(type(s.event).__name__ for s in events.for_order(o.order_id))
        if "OrderPlaced" not in kinds:
            report.lost.append(o.order_id)
            report.lost_why[o.order_id] = f"no OrderPlaced on Kafka; cart says {status}, events seen {dict(kinds)}"
        for kind, label in (("PaymentCaptured", "captures"), ("ShipmentCreated", "shipments")):
            if kinds[kind] > 1:
                report.duplicated.setdefault(label, []).append(o.order_id)
        if recorder.intents[o.order_id] > 1:
            report.duplicated.setdefault("payment_intents", []).append(o.order_id)
        refunded = sum(
            s.event.amount.amount for s in events.for_order(o.order_id) if type(s.event).__name__ == "PaymentRefunded"
        )
        total = int(view.get("total", {}).get("amount", 0))
        if refunded > total:
            report.duplicated.setdefault("refunds", []).append(o.order_id)
    for label in ("orders", "payment_intents", "captures", "shipments", "refunds"):
        report.duplicated.setdefault(label, [])


async def check_stock(
    client: httpx.AsyncClient,
    shop: Shop,
    report: Report,
    placed: list[Placed],
    seen: dict[str, dict[str, Any]],
    initial: dict[str, int],
    events: Any,
) -> None:
    # The units an order holds are those of its OrderPlaced, not what the client asked for. The add is sent
    # with an Idempotency-Key, so a retry after a lost answer must not add again: a difference is a finding.
    delivered: Counter[str] = Counter()
    for o in placed:
        placed_events = [s.event for s in events.for_order(o.order_id) if type(s.event).__name__ == "OrderPlaced"]
        lines = placed_events[0].lines if placed_events else []
        held = sum(line.quantity for line in lines if line.product_id == o.product_id) if lines else o.quantity
        if held != o.quantity:
            report.errors["cart line differs from the add asked (a retried add applied twice)"] += 1
        if seen.get(o.order_id, {}).get("status") == "delivered":
            delivered[o.product_id] += held
    admin = {"Authorization": f"Bearer {ADMIN['catalog']}"}
    for product, start in initial.items():
        r = await client.get(shop.url("catalog") + f"/v1/admin/products/{product}", headers=admin)
        stock = r.json()
        want = (start - delivered[product], 0, start - delivered[product])
        got = (stock["stock_on_hand"], stock["stock_reserved"], stock["stock_available"])
        if got != want:
            report.stock_mismatches[product] = f"on hand/reserved/available {got}, expected {want}"


async def seed_products(client: httpx.AsyncClient, shop: Shop, cfg: Config) -> list[str]:
    ids = []
    admin = {"Authorization": f"Bearer {ADMIN['catalog']}"}
    for i in range(cfg.products):
        body = {
            "sku": f"CHAOS-{i}-{uuid.uuid4().hex[:6].upper()}",
            "name": f"Chaos product {i}",
            "description": "A product for the chaos run",
            "category": "chaos",
            "price": {"amount": 1000 + 100 * i, "currency": "EUR"},
            "stock_on_hand": cfg.stock_per_product,
            "images": [{"url": "https://example.com/p.jpg", "alt": "product"}],
        }
        r = await client.post(shop.url("catalog") + "/v1/admin/products", json=body, headers=admin)
        assert r.status_code in (200, 201), r.text
        ids.append(str(r.json()["product_id"]))
    # The cart prices from its read model of ProductChanged: wait until every product reached it.
    deadline = time.monotonic() + 60
    for pid in ids:
        while True:
            r = await client.post(shop.url("cart") + "/v1/carts", json={})
            body = r.json()
            added = await client.post(
                shop.url("cart") + f"/v1/carts/{body['cart_id']}/items",
                json={"product_id": pid, "quantity": 1},
                headers={"X-Cart-Token": body["cart_token"]},
            )
            if added.status_code in (200, 201):
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"the cart never learnt product {pid}")
            await asyncio.sleep(0.5)
    return ids


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--orders", type=int, default=300)
    p.add_argument("--concurrency", type=int, default=25)
    p.add_argument("--own-stack", action="store_true", help="run and kill an own Kafka/FerretDB/stripe-mock")
    p.add_argument("--no-infra-kills", action="store_true")
    p.add_argument("--port-base", type=int, default=19412)
    p.add_argument("--home", type=Path, default=None)
    p.add_argument("--terminal-timeout", type=float, default=420.0)
    p.add_argument("--unpaid-timeout", type=float, default=180.0)
    p.add_argument("--fault-pause", type=float, default=15.0, help="seconds between two kills")
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    cfg = Config(
        orders=a.orders,
        concurrency=a.concurrency,
        own_stack=a.own_stack,
        infra_kills=not a.no_infra_kills,
        port_base=a.port_base,
        home=a.home,
        terminal_timeout_s=a.terminal_timeout,
        unpaid_timeout_s=a.unpaid_timeout,
        fault_pause_s=a.fault_pause,
    )
    report = asyncio.run(run(cfg))
    print(report.text())
    if a.json:
        print(json.dumps({"accepted": report.accepted, "lost": report.lost, "stuck": report.stuck}))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
