"""Where the real Kafka, Mongo-protocol store and stripe-mock come from, decided once per test session.

1. Endpoints in the environment: `KASSE_KAFKA_BOOTSTRAP`, `KASSE_MONGO_URI`, `KASSE_STRIPE_API_BASE`
   (all three; a CI service or your own stack).
2. Else testcontainers, when a Docker engine answers: apache/kafka, mongo and stripe/stripe-mock.
3. Else the local stack of `deploy/local/stack.py` (Kafka from Maven Central jars, FerretDB and
   stripe-mock built with Go), started here and left running for the next session.
If none can be had, the test session fails and says why: integration tests are never skipped.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

ENV_KAFKA = "KASSE_KAFKA_BOOTSTRAP"
ENV_MONGO = "KASSE_MONGO_URI"
ENV_STRIPE = "KASSE_STRIPE_API_BASE"


class InfrastructureUnavailable(RuntimeError):
    pass


@dataclass(frozen=True)
class Infrastructure:
    kafka_bootstrap: str
    mongo_uri: str
    stripe_api_base: str
    origin: str  # "environment", "testcontainers" or "local stack"

    def env(self) -> dict[str, str]:
        return {ENV_KAFKA: self.kafka_bootstrap, ENV_MONGO: self.mongo_uri, ENV_STRIPE: self.stripe_api_base}


def find_repo_root(start: Path) -> Path:
    for candidate in (start, *start.parents):
        if (candidate / "deploy" / "local" / "stack.py").is_file():
            return candidate
    raise InfrastructureUnavailable(f"no deploy/local/stack.py above {start}: cannot start the local stack")


def load_stack_module(repo_root: Path) -> ModuleType:
    path = repo_root / "deploy" / "local" / "stack.py"
    spec = importlib.util.spec_from_file_location("kasse_local_stack", path)
    if spec is None or spec.loader is None:
        raise InfrastructureUnavailable(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def docker_engine_answers() -> bool:
    if os.environ.get("KASSE_TEST_NO_DOCKER"):
        return False
    sock = Path("/var/run/docker.sock")
    if not (os.environ.get("DOCKER_HOST") or sock.exists()):
        return False
    if shutil.which("docker") is None:
        return _socket_pings(sock)
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _socket_pings(sock: Path) -> bool:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(3)
            s.connect(str(sock))
            s.sendall(b"GET /_ping HTTP/1.0\r\n\r\n")
            return b"OK" in s.recv(1024)
    except OSError:
        return False


def from_environment() -> Infrastructure | None:
    values = [os.environ.get(k) for k in (ENV_KAFKA, ENV_MONGO, ENV_STRIPE)]
    if all(values):
        kafka, mongo, stripe = values
        return Infrastructure(str(kafka), str(mongo), str(stripe), "environment")
    if any(values):
        missing = [k for k, v in zip((ENV_KAFKA, ENV_MONGO, ENV_STRIPE), values, strict=True) if not v]
        raise InfrastructureUnavailable(f"set all three endpoints or none; missing: {', '.join(missing)}")
    return None


def from_testcontainers(stack: ExitStack) -> Infrastructure:
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.waiting_utils import wait_for_logs
    from testcontainers.kafka import KafkaContainer
    from testcontainers.mongodb import MongoDbContainer

    kafka: Any = stack.enter_context(KafkaContainer("apache/kafka:4.1.1").with_kraft())
    mongo: Any = stack.enter_context(MongoDbContainer("mongo:7"))
    stripe: Any = stack.enter_context(DockerContainer("stripe/stripe-mock:v0.203.0").with_exposed_ports(12111))
    wait_for_logs(stripe, "Listening for HTTP", timeout=60)
    return Infrastructure(
        kafka.get_bootstrap_server(),
        mongo.get_connection_url(),
        f"http://{stripe.get_container_host_ip()}:{stripe.get_exposed_port(12111)}",
        "testcontainers",
    )


def from_local_stack(repo_root: Path) -> Infrastructure:
    stack = load_stack_module(repo_root)
    endpoints: dict[str, str] = stack.start()
    return Infrastructure(endpoints[ENV_KAFKA], endpoints[ENV_MONGO], endpoints[ENV_STRIPE], "local stack")


def acquire(repo_root: Path, stack: ExitStack) -> Infrastructure:
    reasons = []
    found = from_environment()
    if found:
        return found
    if docker_engine_answers():
        try:
            return from_testcontainers(stack)
        except Exception as exc:  # fall through to the local stack, but say why
            reasons.append(f"testcontainers: {exc!r}")
    else:
        reasons.append("testcontainers: no Docker engine answers")
    try:
        return from_local_stack(repo_root)
    except BaseException as exc:  # SystemExit from the stack script included
        reasons.append(f"local stack: {exc!r}")
    raise InfrastructureUnavailable(
        "no real infrastructure for integration tests:\n  - "
        + "\n  - ".join(reasons)
        + f"\nGive endpoints ({ENV_KAFKA}, {ENV_MONGO}, {ENV_STRIPE}), start Docker, or fix the local stack "
        "(python3 deploy/local/stack.py start)."
    )
