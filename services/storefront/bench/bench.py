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
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
from shopper import PRODUCT_PAGE, load, shopper_with_a_cart  # this folder (the script's, on sys.path)

from kasse_testkit import Namespace, ServiceProcess, free_port
from kasse_testkit.e2e.shop import Shop
from kasse_testkit.infrastructure import from_environment, from_local_stack

HERE = Path(__file__).parent
REPO = HERE.resolve().parents[2]


async def drive(
    url: str, seconds: float, concurrency: int, cookies: httpx.Cookies | None = None, pids: tuple[int, ...] = ()
) -> tuple[float, float, int, list[float]]:
    """(successful req/s, p99 ms over all requests, errors, CPU ms per request of each of `pids`). A
    request that fails — non-200, time-out, connection error — counts as an error and with its time in
    the p99, and never stops the run."""
    cpu_before = [cpu_seconds(p) for p in pids]
    latencies: list[float] = []
    ok = errors = 0
    deadline = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=10, limits=limits, cookies=cookies) as client:

        async def worker() -> None:
            nonlocal ok, errors
            while time.perf_counter() < deadline:
                start = time.perf_counter()
                try:
                    r = await client.get(url)
                    good = r.status_code == 200
                except httpx.HTTPError:
                    good = False
                latencies.append(time.perf_counter() - start)
                ok += good
                errors += not good

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    n = max(1, len(latencies))
    cpu = [(cpu_seconds(p) - before) * 1000 / n for p, before in zip(pids, cpu_before, strict=True)]
    if not latencies:
        return 0.0, float("nan"), errors, cpu
    p99 = statistics.quantiles(latencies, n=100)[98] if len(latencies) >= 100 else max(latencies)
    return ok / elapsed, p99 * 1000, errors, cpu


TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of a process and its children (uvicorn's workers), from /proc: what a
    request costs, whatever else the shared machine is doing at the time."""
    total = 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / TICK
        for task in Path(f"/proc/{pid}/task").iterdir():
            for child in (task / "children").read_text().split():
                total += cpu_seconds(int(child))
    except (FileNotFoundError, ProcessLookupError):
        pass
    return total


def pid_of(service: ServiceProcess) -> int:
    assert service.process is not None, "started above"
    return service.process.pid


def row(name: str, result: tuple[float, float, int, list[float]], bare_rps: float) -> None:
    rps, p99, errors, cpu = result
    ratio = rps / bare_rps if bare_rps else 0.0
    web, services = (cpu[0], sum(cpu[1:])) if cpu else (0.0, 0.0)
    print(f"{name:32s} {rps:9.1f} {p99:9.1f} {ratio:7.2f} {errors:7d} {web:9.2f} {services:9.2f}", flush=True)


async def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--workers", type=int, default=1, help="storefront uvicorn workers (as the bare route: 1)")
    args = parser.parse_args()
    repo = REPO
    infra = from_environment() or from_local_stack(repo)
    logs = Path(tempfile.mkdtemp())
    shop = Shop(
        infra,
        Namespace("bench" + uuid.uuid4().hex[:6]),
        logs,
        with_storefront=True,
        settings={"KASSE_STOREFRONT_WORKERS": str(args.workers)},
    )
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
        cookies = await shopper_with_a_cart(shop)
        targets = [
            ("storefront product page", base + PRODUCT_PAGE, None),
            ("storefront cart page", base + "/cart", cookies),
        ]
        print(f"load average before: {load()}; storefront workers: {args.workers}", flush=True)
        print(
            f"{'target':32s} {'req/s':>9s} {'p99 ms':>9s} {'x bare':>7s} {'errors':>7s} "
            f"{'web cpu':>9s} {'svc cpu':>9s}  (CPU ms per request: the web process; the services behind)",
            flush=True,
        )
        web_pid = pid_of(shop.processes["storefront"])
        service_pids = tuple(pid_of(shop.processes[s]) for s in ("catalog", "cart", "shipping", "payment"))
        bare_pid = pid_of(bare)
        # The yardstick before and after the pages: on a shared machine the load moves during the run.
        bare_url = f"http://127.0.0.1:{port}/"
        await drive(bare_url, 1.5, args.concurrency)  # warm-up
        bare_runs = [await drive(bare_url, args.seconds, args.concurrency, pids=(bare_pid,))]
        row("bare route (static template)", bare_runs[0], bare_runs[0][0])
        pages = {}
        for name, url, jar in targets:
            await drive(url, 1.5, args.concurrency, jar)  # warm-up: pools, caches
            pages[name] = await drive(url, args.seconds, args.concurrency, jar, (web_pid, *service_pids))
            row(name, pages[name], bare_runs[0][0])
        bare_runs.append(await drive(bare_url, args.seconds, args.concurrency, pids=(bare_pid,)))
        row("bare route, again", bare_runs[1], bare_runs[0][0])
        bare_rps = statistics.mean(r[0] for r in bare_runs)
        met = True
        for name, (rps, p99, errors, _cpu) in pages.items():
            ratio = rps / bare_rps if bare_rps else 0.0
            met &= ratio >= 0.4 and p99 < 100 and errors == 0
            print(f"{name:32s} {ratio:.2f}x the bare route's mean {bare_rps:.1f} req/s, p99 {p99:.0f} ms", flush=True)
        print(
            f"concurrency {args.concurrency}, {args.seconds:.0f} s per target; load average after: {load()}; "
            "goal (>= 0.4x bare at p99 < 100 ms, no errors):",
            "met" if met else "NOT met",
            flush=True,
        )
    finally:
        await bare.stop()
        await shop.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
