"""Run the five Kasse services as local processes on 127.0.0.1 (what `make up` / `make down` call).

    python deploy/local/shop.py start    # idempotent: starts what is not running, waits for /readyz
    python deploy/local/shop.py stop     # stops only the processes it started (pid files)
    python deploy/local/shop.py status
    python deploy/local/shop.py logs [service] [-n N]

Run it inside the workspace environment (`uv run python deploy/local/shop.py …`): each service is its
console script (`kasse-<name>`). The local stack (deploy/local/stack.py) must be running; its
endpoints are passed to the services. State lives under $KASSE_HOME (default <repo>/.kasse):
run/services/<name>.pid and logs/<name>.log.

Local-only secrets (admin tokens, stripe-mock's test key, the webhook secret) have obvious dev
values here and can be overridden from the environment; production takes them from Secrets.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HOME = Path(os.environ.get("KASSE_HOME", REPO / ".kasse"))
RUN = HOME / "run" / "services"
LOGS = HOME / "logs"


@dataclass(frozen=True)
class Service:
    name: str
    port: int
    docs: str = "/docs"


SERVICES = (
    Service("catalog", 8001),
    Service("cart", 8002),
    Service("payment", 8003),
    Service("shipping", 8004),
    Service("metrics", 8005),
)

DEV_SECRETS = {
    "KASSE_CATALOG_ADMIN_TOKEN": "dev-catalog-admin",
    "KASSE_CART_ADMIN_TOKEN": "dev-cart-admin",
    "KASSE_PAYMENT_ADMIN_TOKEN": "dev-payment-admin",
    "KASSE_SHIPPING_ADMIN_TOKEN": "dev-shipping-admin",
    "KASSE_METRICS_ADMIN_TOKEN": "dev-metrics-admin",
    "KASSE_PAYMENT_STRIPE_API_KEY": "sk_test_123",  # stripe-mock accepts any test key
    "KASSE_PAYMENT_STRIPE_WEBHOOK_SECRET": "whsec_local_dev",
    "KASSE_PAYMENT_INTERNAL_TOKEN": "dev-internal",
    "KASSE_CART_PAYMENT_INTERNAL_TOKEN": "dev-internal",
}


def stack_env() -> dict[str, str]:
    out = subprocess.run(
        [sys.executable, str(REPO / "deploy" / "local" / "stack.py"), "env"],
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        sys.exit(f"cannot read the local stack's endpoints: {out.stderr.strip() or out.stdout.strip()}")
    env: dict[str, str] = {}
    for line in out.stdout.splitlines():
        line = line.strip().removeprefix("export ")
        if "=" in line:
            key, value = line.split("=", 1)
            env[key] = value.strip("'\"")
    return env


def service_env(base: dict[str, str]) -> dict[str, str]:
    env = {**os.environ, **base}
    for key, value in DEV_SECRETS.items():
        env.setdefault(key, value)
    env.setdefault("KASSE_CART_PAYMENT_BASE_URL", "http://127.0.0.1:8003")
    env.setdefault("KASSE_LOG_LEVEL", "INFO")
    # Demo pacing: payments confirm server-side with Stripe's test card (there is no storefront to
    # do 3-D Secure), parcels move in seconds, idle carts are abandoned after two minutes.
    env.setdefault("KASSE_PAYMENT_CONFIRMATION_MODE", "server")
    env.setdefault("KASSE_SHIPPING_CARRIER_DISPATCH_AFTER_S", "15")
    env.setdefault("KASSE_SHIPPING_CARRIER_DELIVER_AFTER_S", "30")
    env.setdefault("KASSE_SHIPPING_CARRIER_SCAN_INTERVAL_S", "2")
    env.setdefault("KASSE_CART_ABANDONMENT_IDLE_S", "120")
    env.setdefault("KASSE_CART_ABANDONMENT_CHECK_INTERVAL_S", "10")
    return env


def pid_file(service: Service) -> Path:
    return RUN / f"{service.name}.pid"


def running_pid(service: Service) -> int | None:
    path = pid_file(service)
    if not path.exists():
        return None
    try:
        pid = int(path.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except (ValueError, OSError):
        return None
    return pid if f"kasse-{service.name}" in cmdline else None


def ready(service: Service, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{service.port}/readyz", timeout=timeout) as r:
            return bool(r.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def executable(service: Service) -> str:
    found = shutil.which(f"kasse-{service.name}")
    if found is None:
        sys.exit(f"kasse-{service.name} is not installed: run `uv sync` (or `make up`, which does)")
    return found


def start(seed: bool = True) -> None:
    RUN.mkdir(parents=True, exist_ok=True)
    LOGS.mkdir(parents=True, exist_ok=True)
    env = service_env(stack_env())
    for service in SERVICES:
        if running_pid(service):
            print(f"  {service.name:9s} already running")
            continue
        log = open(LOGS / f"{service.name}.log", "ab")
        proc = subprocess.Popen(
            [executable(service)], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        pid_file(service).write_text(str(proc.pid))
        print(f"  {service.name:9s} started (pid {proc.pid})")
    deadline = time.monotonic() + 90
    for service in SERVICES:
        while not ready(service):
            pid = running_pid(service)
            if pid is None or time.monotonic() > deadline:
                tail = (LOGS / f"{service.name}.log").read_text(errors="replace")[-2500:]
                sys.exit(f"{service.name} did not become ready on :{service.port}. Log tail:\n{tail}")
            time.sleep(0.3)
        print(f"  {service.name:9s} ready on http://127.0.0.1:{service.port}")
    if seed:
        print("Loading the sample catalogue…")
        subprocess.run([sys.executable, "-m", "kasse_catalog.seed"], env=env, check=True)
    print_urls()


def print_urls() -> None:
    print("\nKasse is running:")
    print("  dashboard      http://127.0.0.1:8005/dashboard")
    for service in SERVICES:
        print(f"  {service.name:9s} API docs  http://127.0.0.1:{service.port}{service.docs}")
    print("Stop it with `make down`.")


def stop() -> None:
    for service in reversed(SERVICES):
        pid = running_pid(service)
        if pid is None:
            pid_file(service).unlink(missing_ok=True)
            continue
        os.killpg(pid, signal.SIGTERM)  # graceful: drain consumers and the outbox
        deadline = time.monotonic() + 30
        while running_pid(service) and time.monotonic() < deadline:
            time.sleep(0.2)
        if running_pid(service):
            os.killpg(pid, signal.SIGKILL)
        pid_file(service).unlink(missing_ok=True)
        print(f"  {service.name:9s} stopped")


def status() -> int:
    code = 0
    rows = []
    for service in SERVICES:
        pid = running_pid(service)
        state = "ready" if pid and ready(service) else ("starting/unready" if pid else "stopped")
        code = code if state == "ready" else 3
        rows.append({"service": service.name, "state": state, "pid": pid, "port": service.port})
    for row in rows:
        print(f"  {row['service']:9s} {row['state']:17s} pid={row['pid']} http://127.0.0.1:{row['port']}")
    return code


def logs(name: str | None, lines: int) -> None:
    names = [name] if name else [s.name for s in SERVICES]
    for n in names:
        path = LOGS / f"{n}.log"
        if path.exists():
            print(f"==> {path} <==")
            print("\n".join(path.read_text(errors="replace").splitlines()[-lines:]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p_start = sub.add_parser("start")
    p_start.add_argument("--no-seed", action="store_true")
    sub.add_parser("stop")
    sub.add_parser("status")
    p_logs = sub.add_parser("logs")
    p_logs.add_argument("service", nargs="?")
    p_logs.add_argument("-n", type=int, default=50)
    args = parser.parse_args()
    if args.command == "start":
        start(seed=not args.no_seed)
    elif args.command == "stop":
        stop()
    elif args.command == "status":
        sys.exit(status())
    else:
        logs(args.service, args.n)


if __name__ == "__main__":
    main()
