"""Fixtures of the offline deploy checks (deploy/tests): the pinned tools, rendering the chart.

Tools come from the registries and are installed by the repo's own scripts, never downloaded here:
- helm: built from the Go module proxy by deploy/tools/install-helm.sh into .kasse/bin/helm;
- the Compose Specification schema: from the npm package dclint, by deploy/tools/install-compose-schema.sh;
- hadolint, shellcheck, kubernetes-validate, jsonschema: PyPI dev dependencies (uv sync).
A missing tool FAILS the tests with the command that installs it; nothing is skipped.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
CHART = DEPLOY / "helm" / "kasse"
PRODUCTION_VALUES = CHART / "ci" / "production-values.yaml"
KUBE_VERSION = "1.31.0"  # what helm renders for (.Capabilities); a version kubernetes-validate ships schemas for
# Manifests are validated against the chart's minimum Kubernetes (Chart.yaml kubeVersion), 1.31, and
# the newest schemas the pinned kubernetes-validate ships.
KUBE_VALIDATE_VERSIONS = ("1.27.0", "1.31.0", "1.37.0")
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

VALUE_SETS = {
    # The Stripe secrets are required (the services fail closed without them).
    "default": ["--set", "secrets.stripeApiKey=sk_test_abc,secrets.stripeWebhookSecret=whsec_abc"],
    "production": ["-f", str(PRODUCTION_VALUES)],
    # SASL with the chart-managed Secret (the topic Job then gets the password from a hook Secret),
    # and the Ingress with the default per-service hosts.
    "sasl-managed-secret": [
        "--set",
        "kafka.securityProtocol=SASL_SSL,kafka.sasl.mechanism=SCRAM-SHA-256,kafka.sasl.username=kasse",
        "--set",
        "secrets.kafkaSaslPassword=s3cret,secrets.stripeApiKey=sk_test_abc,secrets.stripeWebhookSecret=whsec_abc,"
        "ingress.enabled=true",
    ],
}


def tool(name: str, install_hint: str, env_var: str | None = None, default: Path | None = None) -> str:
    """The path of a tool, or fail the test saying how to install it."""
    candidates: list[Path] = []
    if env_var and os.environ.get(env_var):
        candidates.append(Path(os.environ[env_var]))
    if default is not None:
        candidates.append(default)
    candidates.append(Path(sys.executable).parent / name)  # console scripts of the uv environment
    for c in candidates:
        if c.is_file() and os.access(c, os.X_OK):
            return str(c)
    found = shutil.which(name)
    if found:
        return found
    pytest.fail(f"{name} is not installed: {install_hint}", pytrace=False)


@pytest.fixture(scope="session")
def helm() -> str:
    path = tool(
        "helm",
        "run deploy/tools/install-helm.sh (builds the pinned helm from the Go module proxy into .kasse/bin)",
        env_var="KASSE_HELM",
        default=REPO / ".kasse" / "bin" / "helm",
    )
    out = subprocess.run([path, "version", "--short"], capture_output=True, text=True, check=False)
    if out.returncode != 0 or not out.stdout.startswith("v3."):
        pytest.fail(f"{path} is not a working Helm 3 ({out.stdout}{out.stderr}): rerun deploy/tools/install-helm.sh")
    return path


def run_helm(helm: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [helm, *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        # No kubeconfig, no repositories, no cache outside a temp dir: fully offline.
        env={
            **os.environ,
            "KUBECONFIG": "/nonexistent",
            "HELM_CACHE_HOME": "/tmp/kasse-helm/cache",
            "HELM_CONFIG_HOME": "/tmp/kasse-helm/config",
            "HELM_DATA_HOME": "/tmp/kasse-helm/data",
        },
    )


@pytest.fixture(scope="session")
def render(helm: str) -> Callable[..., list[dict[str, Any]]]:
    """helm template the chart with extra args; returns the manifests (fails the test on an error)."""
    cache: dict[tuple[str, ...], list[dict[str, Any]]] = {}

    def _render(*args: str) -> list[dict[str, Any]]:
        if args not in cache:
            out = run_helm(
                helm, "template", "kasse", str(CHART), "--namespace", "shop", "--kube-version", KUBE_VERSION, *args
            )
            assert out.returncode == 0, f"helm template {' '.join(args)} failed:\n{out.stderr}"
            cache[args] = [d for d in yaml.safe_load_all(out.stdout) if d]
        return cache[args]

    return _render


def by_kind(manifests: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [m for m in manifests if m.get("kind") == kind]


@pytest.fixture(scope="session")
def helpers() -> Any:
    """Plain functions for the test modules (importlib mode has no sibling imports)."""

    class H:
        REPO = REPO
        DEPLOY = DEPLOY
        CHART = CHART
        KUBE_VERSION = KUBE_VERSION
        KUBE_VALIDATE_VERSIONS = KUBE_VALIDATE_VERSIONS
        SERVICES = SERVICES
        PORTS = PORTS
        VALUE_SETS = VALUE_SETS
        by_kind = staticmethod(by_kind)
        run_helm = staticmethod(run_helm)
        tool = staticmethod(tool)

    return H
