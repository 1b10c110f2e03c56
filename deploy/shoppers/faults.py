"""Run-time fault switches of the running shop, and a tiny CLI to flip them.

    python deploy/shoppers/faults.py show
    python deploy/shoppers/faults.py decline-rate 0.3        # 30% of payments are declined from now on
    python deploy/shoppers/faults.py slow-carrier on|off     # parcels dispatch and arrive late
    python deploy/shoppers/faults.py pause metrics           # a consumer stops reading Kafka (lag grows)
    python deploy/shoppers/faults.py resume metrics

The switches live in the shoppers' process (Locust) and are served on its web UI as
`GET/PUT /kasse/faults` (default http://127.0.0.1:8089, or --url / KASSE_SHOPPERS_WEB_URL):

- decline rate: Stripe's verdict reaches Kasse through signed webhooks that the simulator sends, so
  the simulator decides how many payments fail (`payment_intent.payment_failed`, a real decline code).
- slow carrier: shipping's `PUT /v1/admin/carrier` with the carrier's timings.
- paused consumer: each service's guarded `POST /v1/admin/consumer/pause|resume`.

When the shoppers are not running, `pause`, `resume`, `slow-carrier` and `show` go straight to the
services; the decline rate needs the shoppers, since they are the ones paying.

Standard library only, so plain `python3` runs it too.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from shopper_mix import SERVICE_PORTS, Endpoints

CONSUMER_STATES = ("paused", "running")


def call(method: str, url: str, headers: dict[str, str] | None = None, body: Any = None, timeout: float = 5.0):
    """(status, parsed body or text); status 0 when nothing answered."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers={**(headers or {})})
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            raw = response.read().decode(errors="replace")
            status = response.status
    except urllib.error.HTTPError as exc:
        raw = exc.read().decode(errors="replace")
        status = exc.code
    except (urllib.error.URLError, OSError) as exc:
        return 0, f"{url} did not answer: {getattr(exc, 'reason', exc)}"
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, raw


def _why(body: Any) -> str:
    if isinstance(body, dict):
        return str(body.get("detail") or body.get("title") or body)
    return str(body)[:300]


@dataclass
class Switchboard:
    """The fault switches; one per shoppers' process (the web routes and the users share it)."""

    endpoints: Endpoints
    decline_rate: float = 0.05
    slow_carrier: bool | None = None  # None: never switched from here
    carrier_note: str = ""
    history: list[str] = field(default_factory=list)
    carrier_before: tuple[float, float] | None = None  # the timings in force before "slow carrier on"

    # -- the decline rate (the simulator's own) ------------------------------------------------
    def set_decline_rate(self, rate: float) -> str:
        if not 0 <= rate <= 1:
            raise ValueError(f"the decline rate is a fraction within 0..1, not {rate}")
        self.decline_rate = rate
        return f"decline rate now {rate:.0%}"

    # -- the carrier ---------------------------------------------------------------------------
    def carrier(self) -> Any:
        """Shipping's current carrier timings (GET /v1/admin/carrier)."""
        status, answer = call(
            "GET", self.endpoints.urls["shipping"] + "/v1/admin/carrier", self.endpoints.admin("shipping"), timeout=3
        )
        if status == 200 and isinstance(answer, dict):
            return answer
        return {"error": f"HTTP {status}: {_why(answer)}" if status else answer}

    def set_slow_carrier(self, on: bool) -> tuple[bool, str]:
        if on:
            current = self.carrier()
            if "dispatch_after_s" in current and self.slow_carrier is not True:
                self.carrier_before = (float(current["dispatch_after_s"]), float(current["deliver_after_s"]))
            dispatch, deliver = self.endpoints.carrier_slow
        else:
            dispatch, deliver = self.carrier_before or self.endpoints.carrier_normal
        body = {"dispatch_after_s": dispatch, "deliver_after_s": deliver}
        status, answer = call(
            "PUT",
            self.endpoints.urls["shipping"] + "/v1/admin/carrier",
            self.endpoints.admin("shipping"),
            body,
        )
        if 200 <= status < 300:
            self.slow_carrier = on
            self.carrier_note = f"dispatch after {dispatch:g} s, deliver after {deliver:g} s"
            return True, f"slow carrier {'on' if on else 'off'}: {self.carrier_note}"
        if status in (404, 405):
            self.carrier_note = "shipping has no PUT /v1/admin/carrier yet"
            return False, (
                f"slow carrier not switched: shipping answered HTTP {status} to PUT /v1/admin/carrier, so it "
                "cannot change the carrier's timings at run time yet (restart it with "
                "KASSE_SHIPPING_CARRIER_DISPATCH_AFTER_S / _DELIVER_AFTER_S instead)"
            )
        if status == 0:
            return False, f"slow carrier not switched: {answer}"
        return False, f"slow carrier not switched: shipping answered HTTP {status}: {_why(answer)}"

    # -- consumers -----------------------------------------------------------------------------
    def consumer(self, service: str) -> Any:
        status, answer = call(
            "GET", self.endpoints.urls[service] + "/v1/admin/consumer", self.endpoints.admin(service), timeout=3
        )
        return answer if status == 200 else {"error": f"HTTP {status}: {_why(answer)}" if status else answer}

    def set_consumer(self, service: str, state: str) -> tuple[bool, str]:
        if service not in SERVICE_PORTS:
            return False, f"unknown service {service!r}: one of {', '.join(SERVICE_PORTS)}"
        if state not in CONSUMER_STATES:
            return False, f"a consumer is 'paused' or 'running', not {state!r}"
        action = "pause" if state == "paused" else "resume"
        status, answer = call(
            "POST",
            self.endpoints.urls[service] + f"/v1/admin/consumer/{action}",
            self.endpoints.admin(service),
        )
        if 200 <= status < 300:
            return True, f"{service} consumer {state}"
        return False, f"{service} consumer not {state}: " + (f"HTTP {status}: {_why(answer)}" if status else answer)

    # -- all at once ---------------------------------------------------------------------------
    def show(self, with_consumers: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {
            "decline_rate": self.decline_rate,
            "slow_carrier": self.slow_carrier,
            "carrier": self.carrier_note,
        }
        if with_consumers:
            out["carrier"] = self.carrier()
            out["consumers"] = {name: self.consumer(name) for name in SERVICE_PORTS}
        return out

    def apply(self, changes: dict[str, Any]) -> tuple[list[str], list[str]]:
        """Apply a partial change: {"decline_rate": 0.3, "slow_carrier": true, "consumers": {"metrics": "paused"}}.
        Returns (done, errors)."""
        done: list[str] = []
        errors: list[str] = []
        unknown = set(changes) - {"decline_rate", "slow_carrier", "consumers"}
        if unknown:
            errors.append(f"unknown switches {sorted(unknown)}: decline_rate, slow_carrier, consumers")
        if "decline_rate" in changes:
            try:
                done.append(self.set_decline_rate(float(changes["decline_rate"])))
            except (TypeError, ValueError) as exc:
                errors.append(str(exc))
        if "slow_carrier" in changes:
            if not isinstance(changes["slow_carrier"], bool):
                errors.append("slow_carrier is true or false")
            else:
                ok, message = self.set_slow_carrier(changes["slow_carrier"])
                (done if ok else errors).append(message)
        consumers = changes.get("consumers", {})
        if not isinstance(consumers, dict):
            errors.append('consumers is an object such as {"metrics": "paused"}')
            consumers = {}
        for service, state in consumers.items():
            ok, message = self.set_consumer(str(service), str(state))
            (done if ok else errors).append(message)
        self.history.extend(done)
        return done, errors


# -- the CLI ------------------------------------------------------------------------------------
def changes_of(args: argparse.Namespace) -> dict[str, Any]:
    if args.command == "decline-rate":
        return {"decline_rate": args.rate}
    if args.command == "slow-carrier":
        return {"slow_carrier": args.state == "on"}
    if args.command in ("pause", "resume"):
        return {"consumers": {args.service: "paused" if args.command == "pause" else "running"}}
    return {}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--url",
        default=os.environ.get("KASSE_SHOPPERS_WEB_URL", "http://127.0.0.1:8089"),
        help="the shoppers' web UI (Locust)",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("show", help="the switches and every service's consumer")
    p_rate = sub.add_parser("decline-rate", help="fraction of payments declined from now on (0..1)")
    p_rate.add_argument("rate", type=float)
    p_slow = sub.add_parser("slow-carrier", help="parcels dispatch and arrive late")
    p_slow.add_argument("state", choices=("on", "off"))
    for name in ("pause", "resume"):
        p = sub.add_parser(name, help=f"{name} a service's Kafka consumer")
        p.add_argument("service", choices=tuple(SERVICE_PORTS))
    args = parser.parse_args(argv)

    changes = changes_of(args)
    url = args.url.rstrip("/") + "/kasse/faults"
    status, answer = call("PUT" if changes else "GET", url, body=changes if changes else None, timeout=20)
    if status == 0:
        if args.command == "decline-rate":
            print(f"the shoppers are not running ({answer}); the decline rate is theirs to apply", file=sys.stderr)
            return 2
        print("(the shoppers are not running: going straight to the services)\n", file=sys.stderr)
        board = Switchboard(Endpoints.load())
        done, errors = board.apply(changes)
        answer = {**board.show(with_consumers=args.command == "show"), "done": done, "errors": errors}
        answer.pop("decline_rate", None)
        status = 200 if not errors else 502
    if not isinstance(answer, dict):
        print(f"{url} answered HTTP {status}: {answer}", file=sys.stderr)
        return 1
    for line in answer.get("done", []):
        print(f"ok: {line}")
    for line in answer.get("errors", []):
        print(f"FAILED: {line}", file=sys.stderr)
    if args.command == "show":
        print(json.dumps({k: v for k, v in answer.items() if k not in ("done", "errors")}, indent=2))
    return 0 if 200 <= status < 300 and not answer.get("errors") else 1


if __name__ == "__main__":
    sys.exit(main())
