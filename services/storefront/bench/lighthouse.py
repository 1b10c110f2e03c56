"""`make lighthouse`: Lighthouse (mobile profile) on the storefront's home, search, product, cart and
checkout pages, with the real services behind it on the local stack; prints the four scores per page.

Starts its own shop (kasse_testkit's e2e harness: the services and the storefront as processes, on
free ports, in their own topics and databases), loads the sample catalogue, puts a product in a
cart so the cart and checkout pages have something to show, and runs Lighthouse against Debian's
Chromium (CHROME_PATH) with that shopper's cookie. Goals: performance >= 95, accessibility 100,
best practices >= 95, SEO >= 95. Timings on a shared 2-core machine are noisy.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

from shopper import PRODUCT_PAGE, load, shopper_with_a_cart  # this folder (the script's, on sys.path)

from kasse_testkit import Namespace
from kasse_testkit.e2e.shop import Shop
from kasse_testkit.infrastructure import from_environment, from_local_stack

HERE = Path(__file__).parent
REPO = HERE.resolve().parents[2]
LIGHTHOUSE = HERE / "lighthouse" / "node_modules" / ".bin" / "lighthouse"
GOALS = {"performance": 95, "accessibility": 100, "best-practices": 95, "seo": 95}
CHROME_FLAGS = (
    "--headless --no-sandbox --disable-gpu --disable-background-networking --disable-component-update --disable-sync"
)


PAGE_TIMEOUT_S = 240


def run_lighthouse(url: str, cookie: str) -> dict[str, int]:
    with tempfile.TemporaryDirectory() as out:
        report = Path(out) / "report.json"
        cmd = [
            str(LIGHTHOUSE),
            url,
            "--quiet",
            "--output=json",
            f"--output-path={report}",
            f"--chrome-flags={CHROME_FLAGS}",
            "--only-categories=performance,accessibility,best-practices,seo",
            f"--extra-headers={json.dumps({'Cookie': cookie})}",
        ]
        env = {**os.environ, "CHROME_PATH": os.environ.get("CHROME_PATH", "/usr/bin/chromium")}
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=PAGE_TIMEOUT_S, check=False)
        if done.returncode != 0 or not report.exists():
            raise RuntimeError(f"lighthouse failed on {url}: {done.stderr[-1000:]}")
        data = json.loads(report.read_text())
    if data.get("runtimeError"):
        raise RuntimeError(f"lighthouse could not load {url}: {data['runtimeError'].get('message')}")
    scores = {k: round((v["score"] or 0) * 100) for k, v in data["categories"].items()}
    audits = data["audits"]
    # What limits performance, in the page's own terms (simulated mobile: slow 4G, 4x CPU slowdown).
    for key in ("server-response-time", "first-contentful-paint", "largest-contentful-paint", "total-blocking-time"):
        scores[key] = round(audits.get(key, {}).get("numericValue") or 0)
    return scores


async def measure(url: str, cookie: str, attempts: int = 2) -> dict[str, int] | str:
    """The page's scores, or why there are none: one page failing (a time-out on a loaded machine) does
    not stop the others from being measured and printed."""
    why = ""
    for _ in range(attempts):
        try:
            return await asyncio.to_thread(run_lighthouse, url, cookie)
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            why = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
    return why


async def main() -> int:
    if not os.path.exists(LIGHTHOUSE):  # noqa: ASYNC240 (once, before anything starts)
        sys.exit(f"{LIGHTHOUSE} missing: run `make lighthouse` (npm ci of the pinned Lighthouse)")
    repo = REPO
    infra = from_environment() or from_local_stack(repo)
    shop = Shop(infra, Namespace("lh" + uuid.uuid4().hex[:8]), Path(tempfile.mkdtemp()), with_storefront=True)
    await shop.start()
    try:
        base = shop.url("storefront")
        cookie = "; ".join(f"{k}={v}" for k, v in (await shopper_with_a_cart(shop)).items())
        pages = {
            "home": "/",
            "search": "/search?q=knife",
            "product": PRODUCT_PAGE,
            "cart": "/cart",
            "checkout": "/checkout",
        }
        print(f"load average before: {load()}", flush=True)
        print(
            f"{'page':10s} " + " ".join(f"{k:>15s}" for k in GOALS) + "   TTFB / FCP / LCP / TBT ms (simulated)",
            flush=True,
        )
        met = True
        for name, path in pages.items():
            scores = await measure(base + path, cookie)
            if isinstance(scores, str):
                met = False
                print(f"{name:10s} not measured: {scores}", flush=True)
                continue
            met &= all(scores.get(k, 0) >= goal for k, goal in GOALS.items())
            timings = " / ".join(
                str(scores[k])
                for k in (
                    "server-response-time",
                    "first-contentful-paint",
                    "largest-contentful-paint",
                    "total-blocking-time",
                )
            )
            print(f"{name:10s} " + " ".join(f"{scores.get(k, 0):>15d}" for k in GOALS) + f"   {timings}", flush=True)
        print(f"load average after: {load()}")
        print("goals (perf >= 95, a11y 100, best practices >= 95, SEO >= 95):", "met" if met else "NOT met")
    finally:
        await shop.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
