"""`make bench` (storefront part): product and cart page requests/s and p99 with the real services
behind, against a bare FastAPI route rendering a static template, in the same run.

    uv run python services/storefront/bench/bench.py [--seconds 10] [--concurrency 16]

Starts its own shop with the storefront (kasse_testkit's e2e harness, on the local stack, loopback
only) and the bare route (uvicorn, one worker, like the storefront), loads the sample catalogue,
then drives each target with a closed loop of concurrent clients for a fixed time. Goal: the
storefront's pages reach >= 0.4x the bare route's req/s with p99 < 100 ms. On the shared 2-core
machine the services, the load generator and the storefront compete for the same cores: noisy.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

from kasse_catalog.seed import sample_catalog
from kasse_testkit import Namespace, ServiceProcess, free_port
from kasse_testkit.e2e.shop import ADMIN, Shop
from kasse_testkit.infrastructure import from_environment, from_local_stack

HERE = Path(__file__).parent
REPO = HERE.resolve().parents[2]


async def drive(
    url: str, seconds: float, concurrency: int, cookies: httpx.Cookies | None = None
) -> tuple[float, float, int]:
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=10, limits=limits, cookies=cookies) as client:

        async def worker() -> None:
            nonlocal errors
            while time.perf_counter() < deadline:
                start = time.perf_counter()
                r = await client.get(url)
                latencies.append(time.perf_counter() - start)
                if r.status_code != 200:
                    errors += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    p99 = statistics.quantiles(latencies, n=100)[98] if len(latencies) > 100 else max(latencies)
    return len(latencies) / elapsed, p99 * 1000, errors


async def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    repo = REPO
    infra = from_environment() or from_local_stack(repo)
    logs = Path(tempfile.mkdtemp())
    shop = Shop(infra, Namespace("bench" + uuid.uuid4().hex[:6]), logs, with_storefront=True)
    port = free_port()
    bare = ServiceProcess(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "bare_app:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--app-dir",
            str(HERE),
        ],
        {},
        port=port,
        ready_path="/",
        log_path=logs / "bare.log",
    )
    await shop.start()
    await bare.start()
    try:
        base = shop.url("storefront")
        async with httpx.AsyncClient(timeout=30) as admin:
            r = await admin.post(
                shop.url("catalog") + "/v1/admin/products/import",
                json=sample_catalog(),
                headers={"Authorization": f"Bearer {ADMIN['catalog']}"},
            )
            r.raise_for_status()
        async with httpx.AsyncClient(base_url=base, timeout=30, follow_redirects=True) as shopper:
            page = await shopper.get("/p/damascus-chef-s-knife-20-cm")
            csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
            pid = re.search(r'name="product_id" value="([^"]+)"', page.text)
            assert csrf and pid
            for _ in range(60):
                added = await shopper.post("/cart/items", data={"csrf": csrf[1], "product_id": pid[1]})
                if "flash ok" in added.text:
                    break
                await asyncio.sleep(0.5)
            cookies = shopper.cookies
        targets = [
            ("bare route (static template)", f"http://127.0.0.1:{port}/", None),
            ("storefront product page", base + "/p/damascus-chef-s-knife-20-cm", None),
            ("storefront cart page", base + "/cart", cookies),
        ]
        results = {}
        for name, url, jar in targets:
            await drive(url, 1.5, args.concurrency, jar)  # warm-up: pools, caches
            results[name] = await drive(url, args.seconds, args.concurrency, jar)
        bare_rps = results["bare route (static template)"][0]
        print(f"{'target':32s} {'req/s':>9s} {'p99 ms':>9s} {'x bare':>7s} {'errors':>7s}")
        met = True
        for name, (rps, p99, errors) in results.items():
            ratio = rps / bare_rps
            print(f"{name:32s} {rps:9.1f} {p99:9.1f} {ratio:7.2f} {errors:7d}")
            if name.startswith("storefront"):
                met &= ratio >= 0.4 and p99 < 100
        print(
            f"concurrency {args.concurrency}, {args.seconds:.0f} s per target; goal (>= 0.4x bare at p99 < 100 ms):",
            "met" if met else "NOT met",
        )
    finally:
        await bare.stop()
        await shop.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
