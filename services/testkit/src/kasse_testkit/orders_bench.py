"""Orders bench (`make bench-orders`, part of `make bench`): a burst of concurrent orders, no faults.

    uv run python -m kasse_testkit.orders_bench --orders 100

The five services run as real processes on the stack `make bench` uses (the environment's endpoints, else
the local stack), with their own topics and databases (deleted at the end); with `--own-stack` (what
`make bench-orders` does) on a Kafka, FerretDB and stripe-mock of their own (ports from `--port-base`,
19712), started for the run and purged after it, so the figures do not share a store with other work.
Loopback only, bounded by `--timeout`, stops by itself.

Each shopper first fills and checks out its own cart (not timed); then all N orders are placed at the
same moment through the cart's HTTP API (Idempotency-Key, distinct shopper IPs forwarded as the storefront
does), and each is paid as soon as Stripe has its PaymentIntent: the recording proxy in front of
stripe-mock plays Stripe, which sends the signed `payment_intent.succeeded` webhook. Every step is timed
by when it became visible outside: the HTTP answer, the events on Kafka (a plain subscriber), the intent at
Stripe. The goal (issue 12): all N orders reach payment — their intent exists at Stripe — within 60 s.

Prints `orders-bench: ...` (one line) and where the time goes, step by step (p50/p99/max in seconds):
  accept    order POST sent -> HTTP 201
  outbox    HTTP 201 -> OrderPlaced on Kafka (the cart's outbox relay)
  stock     OrderPlaced -> StockReserved on Kafka (catalog)
  intent    the later of the two on Kafka -> PaymentIntent created at Stripe (payment: screen, create)
  webhook   intent created -> webhook acknowledged by payment (the shopper paying, sent at once here)
  capture   webhook acknowledged -> PaymentCaptured on Kafka (payment's outbox)
  ship      PaymentCaptured -> ShipmentCreated on Kafka (shipping)
  dispatch  ShipmentCreated -> ShipmentDispatched (the simulated carrier's delay, --dispatch-after)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from kasse_testkit import Namespace, free_port, wait_until
from kasse_testkit.chaos import (
    ORDER_TOPICS,
    Checkout,
    Config,
    OwnStack,
    Placed,
    Report,
    StripeRecorder,
    place_order,
    prepare_cart,
    seed_products,
    serve,
)
from kasse_testkit.e2e.shop import Shop
from kasse_testkit.e2e.subscriber import OrderEventsSubscriber
from kasse_testkit.infrastructure import Infrastructure, find_repo_root, from_environment, from_local_stack

GOAL_REACH_PAYMENT_S = 60.0
STEPS = ("accept", "outbox", "stock", "intent", "webhook", "capture", "ship", "dispatch")


@dataclass
class Timeline:
    """One order's moments (monotonic seconds); None: not reached."""

    sent: float
    accepted: float | None = None
    placed_on_kafka: float | None = None
    reserved_on_kafka: float | None = None
    intent_created: float | None = None
    webhook_acknowledged: float | None = None
    captured_on_kafka: float | None = None
    shipment_on_kafka: float | None = None
    dispatched_on_kafka: float | None = None

    def steps(self) -> dict[str, float | None]:
        ready = (
            max(self.placed_on_kafka, self.reserved_on_kafka)
            if self.placed_on_kafka is not None and self.reserved_on_kafka is not None
            else None
        )
        pairs = {
            "accept": (self.sent, self.accepted),
            "outbox": (self.accepted, self.placed_on_kafka),
            "stock": (self.placed_on_kafka, self.reserved_on_kafka),
            "intent": (ready, self.intent_created),
            "webhook": (self.intent_created, self.webhook_acknowledged),
            "capture": (self.webhook_acknowledged, self.captured_on_kafka),
            "ship": (self.captured_on_kafka, self.shipment_on_kafka),
            "dispatch": (self.shipment_on_kafka, self.dispatched_on_kafka),
        }
        return {k: (b - a if a is not None and b is not None else None) for k, (a, b) in pairs.items()}


def quantile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def spread(values: list[float]) -> str:
    if not values:
        return "n/a"
    return f"p50 {statistics.median(values):.2f} p99 {quantile(values, 0.99):.2f} max {max(values):.2f}"


async def pay_when_intent_exists(
    client: httpx.AsyncClient, shop: Shop, recorder: StripeRecorder, order: Placed, timeline: Timeline, deadline: float
) -> None:
    """Stripe's side: once the intent exists, the shopper pays and Stripe sends the signed webhook."""
    try:
        await wait_until(lambda: order.order_id in recorder.created_intents, timeout=deadline - time.monotonic())
    except AssertionError:
        return  # never reached payment: the summary says so
    intent = recorder.created_intents[order.order_id]
    obj: dict[str, Any] = {
        "id": intent["id"],
        "object": "payment_intent",
        "metadata": {"order_id": order.order_id},
        "amount": intent["amount"],
        "amount_received": intent["amount"],
        "currency": intent["currency"],
        "status": "succeeded",
    }
    while time.monotonic() < deadline:
        try:
            r = await shop.stripe_webhook(client, "payment_intent.succeeded", obj)
            if r.status_code == 200:
                timeline.webhook_acknowledged = time.monotonic()
                return
        except httpx.HTTPError:
            pass
        await asyncio.sleep(1.0)  # Stripe retries a webhook that was not acknowledged


async def run(
    orders: int, timeout_s: float, dispatch_after_s: float, infra: Infrastructure
) -> tuple[dict[str, Timeline], float, Report]:
    random.seed(12)
    report = Report()
    recorder = StripeRecorder(infra.stripe_api_base)
    proxy_port = free_port()
    proxy, proxy_task = await serve(recorder.app, proxy_port)
    proxied = Infrastructure(infra.kafka_bootstrap, infra.mongo_uri, f"http://127.0.0.1:{proxy_port}", infra.origin)
    namespace = Namespace("obench" + uuid.uuid4().hex[:8])
    log_dir = Path(tempfile.mkdtemp(prefix="kasse-orders-bench-"))
    shop = Shop(
        proxied,
        namespace,
        log_dir,
        settings={
            "KASSE_SHIPPING_CARRIER_DISPATCH_AFTER_S": str(dispatch_after_s),
            "KASSE_SHIPPING_CARRIER_DELIVER_AFTER_S": "60",
        },
    )
    timelines: dict[str, Timeline] = {}
    t0 = time.monotonic()
    print(f"orders-bench: starting the five services (logs in {log_dir})", flush=True)
    try:
        await shop.start()
        limits = httpx.Limits(max_connections=orders + 20, max_keepalive_connections=orders + 20)
        async with (
            httpx.AsyncClient(timeout=30, limits=limits) as client,
            OrderEventsSubscriber(proxied.kafka_bootstrap, [namespace.topic(t) for t in ORDER_TOPICS]) as events,
        ):
            products = await seed_products(client, shop, Config(products=5, stock_per_product=100_000))
            deadline = time.monotonic() + timeout_s
            sem = asyncio.Semaphore(20)

            async def prepare(n: int) -> Checkout | None:
                async with sem:
                    return await prepare_cart(
                        client, shop, report, random.choice(products), random.randint(1, 3), n, deadline
                    )

            carts = [c for c in await asyncio.gather(*(prepare(n) for n in range(orders))) if c is not None]
            print(f"orders-bench: {len(carts)} carts checked out; placing {len(carts)} orders at once", flush=True)

            async def journey(checkout: Checkout) -> None:
                timeline = Timeline(sent=time.monotonic())
                order = await place_order(client, shop, report, checkout, "pay", deadline)
                if order is None:
                    return
                timeline.accepted = order.placed_at
                timelines[order.order_id] = timeline
                await pay_when_intent_exists(client, shop, recorder, order, timeline, deadline)

            t0 = time.monotonic()
            await asyncio.gather(*(journey(c) for c in carts))

            def fill() -> bool:
                for order_id, tl in timelines.items():
                    seen: dict[str, float] = {}
                    for s in events.for_order(order_id):
                        seen.setdefault(type(s.event).__name__, s.received)
                    tl.placed_on_kafka = seen.get("OrderPlaced")
                    tl.reserved_on_kafka = seen.get("StockReserved")
                    tl.intent_created = recorder.intent_created_at.get(order_id)
                    tl.captured_on_kafka = seen.get("PaymentCaptured")
                    tl.shipment_on_kafka = seen.get("ShipmentCreated")
                    tl.dispatched_on_kafka = seen.get("ShipmentDispatched")
                return all(tl.dispatched_on_kafka is not None for tl in timelines.values())

            try:
                await wait_until(fill, timeout=max(0.0, deadline - time.monotonic()), interval=0.5)
            except AssertionError:
                print("orders-bench: not every order was shipped within --timeout", flush=True)
    finally:
        await shop.stop()
        proxy.should_exit = True
        await proxy_task
        await recorder.client.aclose()
    return timelines, t0, report


def summary(orders: int, timelines: dict[str, Timeline], t0: float, report: Report) -> list[str]:
    def reached(attr: str) -> list[float]:
        return [v - t0 for tl in timelines.values() if (v := getattr(tl, attr)) is not None]

    def all_by(attr: str) -> str:
        values = reached(attr)
        return f"{max(values):.1f}" if values and len(values) == orders else f"never({len(values)}/{orders})"

    placed_to_paid = [
        tl.captured_on_kafka - tl.accepted
        for tl in timelines.values()
        if tl.captured_on_kafka is not None and tl.accepted is not None
    ]
    placed_to_shipped = [
        tl.dispatched_on_kafka - tl.accepted
        for tl in timelines.values()
        if tl.dispatched_on_kafka is not None and tl.accepted is not None
    ]
    paid, shipped = reached("captured_on_kafka"), reached("dispatched_on_kafka")
    per_min_paid = len(paid) / (max(paid) / 60) if paid else 0.0
    per_min_shipped = len(shipped) / (max(shipped) / 60) if shipped else 0.0
    intents = reached("intent_created")
    goal = "met" if len(intents) == orders and max(intents) <= GOAL_REACH_PAYMENT_S else "MISSED"
    lines = [
        f"orders-bench: orders={orders} placed={len(timelines)} all_placed_s={all_by('accepted')} "
        f"all_reached_payment_s={all_by('intent_created')} (goal {GOAL_REACH_PAYMENT_S:.0f} s: {goal}) "
        f"all_paid_s={all_by('captured_on_kafka')} all_shipped_s={all_by('dispatched_on_kafka')} "
        f"placed_to_paid_p50={statistics.median(placed_to_paid) if placed_to_paid else float('nan'):.1f} "
        f"p99={quantile(placed_to_paid, 0.99):.1f} "
        f"placed_to_shipped_p50={statistics.median(placed_to_shipped) if placed_to_shipped else float('nan'):.1f} "
        f"p99={quantile(placed_to_shipped, 0.99):.1f} "
        f"orders_per_min_paid={per_min_paid:.0f} orders_per_min_shipped={per_min_shipped:.0f} "
        f"(seconds from the burst; load {' '.join(f'{x:.1f}' for x in os.getloadavg())})",
        "orders-bench: where the time goes, per order (s):",
    ]
    for step in STEPS:
        values = [v for tl in timelines.values() if (v := tl.steps()[step]) is not None]
        lines.append(f"orders-bench:   {step:9s} {spread(values)} (n={len(values)})")
    if report.errors:
        lines.append(f"orders-bench: client retries {dict(report.errors)}")
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--orders", type=int, default=100)
    p.add_argument("--timeout", type=float, default=300.0, help="give up on orders not shipped by then (s)")
    p.add_argument("--dispatch-after", type=float, default=1.0, help="the simulated carrier's dispatch delay (s)")
    p.add_argument("--own-stack", action="store_true", help="a Kafka, FerretDB and stripe-mock of its own")
    p.add_argument("--port-base", type=int, default=19712, help="own stack: kafka, controller, ferretdb, stripe +0..4")
    a = p.parse_args(argv)
    stack: OwnStack | None = None
    if a.own_stack:
        stack = OwnStack(Config(own_stack=True, port_base=a.port_base))
        print(f"orders-bench: own stack in {stack.home} (ports from {a.port_base})", flush=True)
        try:
            env = stack.start()
            infra = Infrastructure(
                env["KASSE_KAFKA_BOOTSTRAP"], env["KASSE_MONGO_URI"], env["KASSE_STRIPE_API_BASE"], "orders-bench"
            )
            timelines, t0, report = asyncio.run(run(a.orders, a.timeout, a.dispatch_after, infra))
        finally:
            stack.stop()
    else:
        infra = from_environment() or from_local_stack(find_repo_root(Path(__file__).resolve()))
        timelines, t0, report = asyncio.run(run(a.orders, a.timeout, a.dispatch_after, infra))
    for line in summary(a.orders, timelines, t0, report):
        print(line, flush=True)
    return 0 if len(timelines) == a.orders else 1


if __name__ == "__main__":
    sys.exit(main())
