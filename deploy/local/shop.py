"""Run the Kasse services (the five, webhooks and the storefront) as local processes on 127.0.0.1.

    python deploy/local/shop.py start    # idempotent: starts what is not running, waits for /readyz
    python deploy/local/shop.py start --no-shoppers   # the shop without the simulated shoppers
    python deploy/local/shop.py stop     # stops only the processes it started (pid files): shoppers first
    python deploy/local/shop.py stop --only-shoppers
    python deploy/local/shop.py status
    python deploy/local/shop.py logs [service] [-n N]

Run it inside the workspace environment (`uv run python deploy/local/shop.py …`): each service is its
console script (`kasse-<name>`). The local stack (deploy/local/stack.py) must be running; its
endpoints are passed to the services. State lives under $KASSE_HOME (default <repo>/.kasse):
run/services/<name>.pid and logs/<name>.log.

After the catalogue is loaded, `start` also starts the simulated shoppers (deploy/shoppers: Locust,
autostarted, web UI and fault switches on 127.0.0.1:8089) as one more managed process,
run/services/shoppers.pid and logs/shoppers.log. They stop by themselves after
KASSE_SHOPPERS_RUN_TIME (8h); KASSE_SHOPPERS_USERS (8) and KASSE_SHOPPERS_SPAWN_RATE (2) size them.

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
    Service("webhooks", 8006),
    Service("storefront", 8000, docs="/"),  # last: its /readyz asks catalog and cart
)

DEV_SECRETS = {
    "KASSE_CATALOG_ADMIN_TOKEN": "dev-catalog-admin",
    "KASSE_CART_ADMIN_TOKEN": "dev-cart-admin",
    "KASSE_PAYMENT_ADMIN_TOKEN": "dev-payment-admin",
    "KASSE_SHIPPING_ADMIN_TOKEN": "dev-shipping-admin",
    "KASSE_METRICS_ADMIN_TOKEN": "dev-metrics-admin",
    "KASSE_WEBHOOKS_ADMIN_TOKEN": "dev-webhooks-admin",
    "KASSE_PAYMENT_STRIPE_API_KEY": "sk_test_123",  # stripe-mock accepts any test key
    "KASSE_PAYMENT_STRIPE_WEBHOOK_SECRET": "whsec_local_dev",
    "KASSE_PAYMENT_INTERNAL_TOKEN": "dev-internal",
    "KASSE_CART_PAYMENT_INTERNAL_TOKEN": "dev-internal",
    # The storefront's test-payment page (development profile only) plays Stripe's webhook.
    "KASSE_STOREFRONT_TEST_PAYMENT_WEBHOOK_SECRET": "whsec_local_dev",
    "KASSE_STOREFRONT_TEST_PAYMENT_INTERNAL_TOKEN": "dev-internal",
}


@dataclass(frozen=True)
class Shoppers:
    """The simulated shoppers (Locust): one more managed process, started after the catalogue."""

    name: str = "shoppers"
    locustfile: Path = REPO / "deploy" / "shoppers" / "locustfile.py"

    @property
    def port(self) -> int:
        return int(os.environ.get("KASSE_SHOPPERS_WEB_PORT", "8089"))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "locust",
            "-f",
            str(self.locustfile),
            "--host",
            "http://127.0.0.1:8001",
            "--web-host",
            "127.0.0.1",
            "--web-port",
            str(self.port),
            "--autostart",  # start at once, keep the web UI (and its fault switches) up
            "--autoquit",
            "10",  # exit 10 s after the run time is over
            "--users",
            os.environ.get("KASSE_SHOPPERS_USERS", "8"),
            "--spawn-rate",
            os.environ.get("KASSE_SHOPPERS_SPAWN_RATE", "2"),
            "--run-time",
            os.environ.get("KASSE_SHOPPERS_RUN_TIME", "8h"),
            "--only-summary",
        ]


SHOPPERS = Shoppers()


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
    # A developer's machine: dev secrets are allowed (production fails closed without the operator's).
    env.setdefault("KASSE_PROFILE", "development")
    # The simulated shoppers (deploy/shoppers) stand in for the storefront, a proxy that forwards each
    # visitor's IP; trusting loopback here is a local-demo choice (the default trusts no proxy).
    env.setdefault("KASSE_TRUSTED_PROXIES", "127.0.0.1")
    for key, value in DEV_SECRETS.items():
        env.setdefault(key, value)
    env.setdefault("KASSE_PROFILE", "development")  # make up is the local demo: never production
    env.setdefault("KASSE_CART_PAYMENT_BASE_URL", "http://127.0.0.1:8003")
    env.setdefault("KASSE_LOG_LEVEL", "INFO")
    # Demo pacing: payments confirm server-side with Stripe's test card (there is no storefront to
    # do 3-D Secure), parcels move in seconds, idle carts are abandoned after two minutes,
    # unpaid orders expire after three.
    env.setdefault("KASSE_PAYMENT_CONFIRMATION_MODE", "server")
    env.setdefault("KASSE_SHIPPING_CARRIER_DISPATCH_AFTER_S", "15")
    env.setdefault("KASSE_SHIPPING_CARRIER_DELIVER_AFTER_S", "30")
    env.setdefault("KASSE_SHIPPING_CARRIER_SCAN_INTERVAL_S", "2")
    env.setdefault("KASSE_CART_ABANDONMENT_IDLE_S", "120")
    env.setdefault("KASSE_CART_ABANDONMENT_CHECK_INTERVAL_S", "10")
    # A webhook receiver on this machine (contracts/examples/webhook_receiver.py) may be registered.
    env.setdefault("KASSE_WEBHOOKS_ALLOWED_NETWORKS", '["127.0.0.1/32"]')
    env.setdefault("KASSE_WEBHOOKS_PROFILE", "development")  # plain http to that local receiver
    env.setdefault("KASSE_CART_UNPAID_ORDER_TIMEOUT_S", "180")
    env.setdefault("KASSE_CART_UNPAID_CHECK_INTERVAL_S", "10")
    return env


def pid_file(service: Service | Shoppers) -> Path:
    return RUN / f"{service.name}.pid"


def running_pid(service: Service | Shoppers) -> int | None:
    """The pid in the pid file, if that process is still the one started (not a reused pid)."""
    path = pid_file(service)
    if not path.exists():
        return None
    try:
        pid = int(path.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except (ValueError, OSError):
        return None
    if isinstance(service, Shoppers):
        return pid if "locust" in cmdline and str(service.locustfile) in cmdline else None
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


def shoppers_ready(timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"{SHOPPERS.url}/kasse/stats", timeout=timeout) as r:
            return bool(r.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def port_taken(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def start_shoppers(env: dict[str, str]) -> None:
    if running_pid(SHOPPERS):
        print(f"  {SHOPPERS.name:9s} already running")
        return
    if port_taken(SHOPPERS.port):
        print(
            f"  {SHOPPERS.name:9s} not started: something else listens on 127.0.0.1:{SHOPPERS.port} "
            "(set KASSE_SHOPPERS_WEB_PORT)"
        )
        return
    # A share of the visits goes through the storefront's pages (KASSE_SHOPPERS_P_STOREFRONT).
    storefront = next(s for s in SERVICES if s.name == "storefront")
    env = {**env}
    env.setdefault("KASSE_SHOPPERS_STOREFRONT_URL", f"http://127.0.0.1:{storefront.port}")
    log = open(LOGS / f"{SHOPPERS.name}.log", "ab")
    proc = subprocess.Popen(
        SHOPPERS.command(), env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=REPO
    )
    pid_file(SHOPPERS).write_text(str(proc.pid))
    print(f"  {SHOPPERS.name:9s} started (pid {proc.pid})")
    deadline = time.monotonic() + 60
    while not shoppers_ready():
        if proc.poll() is not None or time.monotonic() > deadline:
            if proc.poll() is None:
                stop_process(SHOPPERS, grace=5)
            tail = (LOGS / f"{SHOPPERS.name}.log").read_text(errors="replace")[-2500:]
            sys.exit(
                f"the shoppers did not come up on {SHOPPERS.url} (the shop itself is running; "
                f"`start --no-shoppers` skips them). Log tail:\n{tail}"
            )
        time.sleep(0.3)
    print(f"  {SHOPPERS.name:9s} shopping; web UI on {SHOPPERS.url}")


def start(seed: bool = True, shoppers: bool = True) -> None:
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
    if shoppers:
        start_shoppers(env)
    print_urls()


def print_urls() -> None:
    print("\nKasse is running:")
    print("  shop           http://127.0.0.1:8000/  (the storefront)")
    print("  dashboard      http://127.0.0.1:8005/dashboard")
    for service in SERVICES:
        if service.name == "storefront":
            continue
        print(f"  {service.name:9s} API docs  http://127.0.0.1:{service.port}{service.docs}")
    if running_pid(SHOPPERS):
        print(f"  shoppers       {SHOPPERS.url}  (Locust; fault switches: {SHOPPERS.url}/kasse/faults,")
        print("                 or `uv run python deploy/shoppers/faults.py show`)")
    print("Stop it with `make down`.")


def stop_process(target: Service | Shoppers, grace: float) -> None:
    pid = running_pid(target)
    if pid is None:
        pid_file(target).unlink(missing_ok=True)
        return
    os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while running_pid(target) and time.monotonic() < deadline:
        time.sleep(0.2)
    if running_pid(target):
        os.killpg(pid, signal.SIGKILL)
    pid_file(target).unlink(missing_ok=True)
    print(f"  {target.name:9s} stopped")


def stop(only_shoppers: bool = False) -> None:
    stop_process(SHOPPERS, grace=15)  # first: no new journeys while the services drain
    if only_shoppers:
        return
    for service in reversed(SERVICES):
        stop_process(service, grace=30)  # graceful: drain consumers and the outbox


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
    # The shoppers are optional (start --no-shoppers) and stop by themselves: not a failure.
    pid = running_pid(SHOPPERS)
    state = "shopping" if pid and shoppers_ready() else ("starting/unready" if pid else "stopped")
    print(f"  {SHOPPERS.name:9s} {state:17s} pid={pid} {SHOPPERS.url}")
    return code


def logs(name: str | None, lines: int) -> None:
    names = [name] if name else [*(s.name for s in SERVICES), SHOPPERS.name]
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
    p_start.add_argument("--no-shoppers", action="store_true", help="do not start the simulated shoppers")
    p_stop = sub.add_parser("stop")
    p_stop.add_argument("--only-shoppers", action="store_true", help="stop the simulated shoppers, not the shop")
    sub.add_parser("status")
    p_logs = sub.add_parser("logs")
    p_logs.add_argument("service", nargs="?")
    p_logs.add_argument("-n", type=int, default=50)
    args = parser.parse_args()
    if args.command == "start":
        start(seed=not args.no_seed, shoppers=not args.no_shoppers)
    elif args.command == "stop":
        stop(only_shoppers=args.only_shoppers)
    elif args.command == "status":
        sys.exit(status())
    else:
        logs(args.service, args.n)


if __name__ == "__main__":
    main()
