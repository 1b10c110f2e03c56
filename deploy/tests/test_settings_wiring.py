"""Every KASSE_* variable the chart and the Compose file set is one a service actually reads.

The services' settings ignore unknown variables (pydantic-settings, extra="ignore"), so a misspelt
or renamed variable would silently do nothing in production. This reads the settings classes.
"""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import AliasChoices

from kasse_common.settings import SHARED_PREFIX, ServiceSettings

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
SERVICES = ("catalog", "cart", "payment", "shipping", "metrics", "webhooks", "storefront")
# Set on purpose although no settings field reads them (yet), with the reason.
NOT_READ: dict[str, str] = {}


def settings_class(service: str) -> type[ServiceSettings]:
    module = importlib.import_module(f"kasse_{service}.settings")
    (cls,) = [
        c
        for _, c in inspect.getmembers(module, inspect.isclass)
        if issubclass(c, ServiceSettings) and c is not ServiceSettings and c.__module__ == module.__name__
    ]
    return cls


def names_read(service: str) -> set[str]:
    """The environment variables the service's settings read."""
    cls = settings_class(service)
    prefix = str(cls.model_config.get("env_prefix", "")).upper()
    names = set()
    for field, info in cls.model_fields.items():
        names.add(f"{prefix}{field.upper()}")
        alias = info.validation_alias
        choices = alias.choices if isinstance(alias, AliasChoices) else [alias] if alias else []
        names |= {str(c).upper() for c in choices if isinstance(c, str)}
    # Shared fallbacks: unprefixed KASSE_<FIELD> for every field (see kasse_common.settings).
    names |= {f"{SHARED_PREFIX}{field.upper()}" for field in cls.model_fields}
    return names


def check(service: str, names: set[str], where: str) -> list[str]:
    read = names_read(service)
    return [
        f"{where}: {service} does not read {n}"
        for n in sorted(names)
        if n.startswith(SHARED_PREFIX) and n not in read and n not in NOT_READ and n != "KASSE_IMAGE_SERVICE"
    ]


@pytest.mark.parametrize("values", ["default", "production", "sasl-managed-secret"])
def test_chart_sets_only_variables_the_services_read(render: Any, helpers: Any, values: str) -> None:
    manifests = render(*helpers.VALUE_SETS[values])
    configmaps = {c["metadata"]["name"]: c.get("data", {}) for c in helpers.by_kind(manifests, "ConfigMap")}
    errors = []
    for d in helpers.by_kind(manifests, "Deployment"):
        service = d["metadata"]["labels"]["app.kubernetes.io/component"]
        (c,) = d["spec"]["template"]["spec"]["containers"]
        names = {e["name"] for e in c.get("env", [])}
        for source in c.get("envFrom", []):
            names |= set(configmaps[source["configMapRef"]["name"]])
        errors += check(service, names, f"chart ({values})")
    for job in helpers.by_kind(manifests, "Job"):
        names = {e["name"] for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
        unknown = {n for n in names if n.startswith(SHARED_PREFIX)} - names_read("catalog")
        errors += [f"topic Job sets {n}, which the settings do not read" for n in sorted(unknown)]
    assert not errors, "\n".join(errors)


def test_compose_sets_only_variables_the_services_read() -> None:
    compose = yaml.safe_load((REPO / "deploy" / "compose" / "docker-compose.yml").read_text())
    errors = []
    for service in SERVICES:
        errors += check(service, set(compose["services"][service]["environment"]), "docker-compose.yml")
    errors += check("catalog", set(compose["services"]["topic-init"]["environment"]), "docker-compose.yml topic-init")
    assert not errors, "\n".join(errors)


def test_the_ports_are_the_services_defaults(helpers: Any) -> None:
    for service, port in helpers.PORTS.items():
        assert settings_class(service).model_fields["http_port"].default == port, service


def test_the_check_catches_a_misspelt_variable() -> None:
    assert check("cart", {"KASSE_CART_PAYMENT_BASE_URLX"}, "x")
    assert not check("cart", {"KASSE_CART_PAYMENT_BASE_URL", "KASSE_MONGO_URI", "OTEL_EXPORTER_OTLP_ENDPOINT"}, "x")
