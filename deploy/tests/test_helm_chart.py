"""The Helm chart renders, lints, and every manifest validates against the Kubernetes schemas, offline.

Built-in kinds: kubernetes-validate (PyPI; ships the Kubernetes OpenAPI schemas) in strict mode.
CRDs (ServiceMonitor, Strimzi KafkaTopic): kubernetes-validate has no schemas for them, so they are
validated against the hand-written subsets in crd_schemas/ (the fields the chart sets).
Needs helm: deploy/tools/install-helm.sh.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from kasse_contracts.topics import INTERNAL_TOPICS, TOPICS, dead_letter_topic

pytestmark = pytest.mark.unit

HERE = Path(__file__).resolve().parent
CRD_SCHEMAS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): HERE
    / "crd_schemas"
    / "monitoring.coreos.com_v1_ServiceMonitor.json",
    ("monitoring.coreos.com/v1", "PrometheusRule"): HERE
    / "crd_schemas"
    / "monitoring.coreos.com_v1_PrometheusRule.json",
    ("kafka.strimzi.io/v1beta2", "KafkaTopic"): HERE / "crd_schemas" / "kafka.strimzi.io_v1beta2_KafkaTopic.json",
}


def validate_manifest(doc: dict[str, Any], kube_version: str) -> None:
    key = (doc.get("apiVersion"), doc.get("kind"))
    if key in CRD_SCHEMAS:
        schema = json.loads(CRD_SCHEMAS[key].read_text())
        jsonschema.Draft7Validator(schema).validate(doc)
        return
    # strict: unknown fields are errors too (a typo in a template would otherwise pass silently).
    kubernetes_validate.validate(doc, kube_version, strict=True)


@pytest.mark.parametrize("values", ["default", "production", "sasl-managed-secret"])
def test_helm_lint(helm: str, helpers: Any, values: str) -> None:
    out = helpers.run_helm(
        helm,
        "lint",
        "--strict",
        str(helpers.CHART),
        "--kube-version",
        helpers.KUBE_VERSION,
        *helpers.VALUE_SETS[values],
    )
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize("values", ["default", "production", "sasl-managed-secret"])
def test_every_rendered_manifest_validates(render: Any, helpers: Any, values: str) -> None:
    manifests = render(*helpers.VALUE_SETS[values])
    assert manifests
    errors = []
    for version in helpers.KUBE_VALIDATE_VERSIONS:
        for doc in manifests:
            where = f"[k8s {version}] {doc['kind']}/{doc['metadata']['name']}"
            try:
                validate_manifest(doc, version)
            except (kubernetes_validate.ValidationError, jsonschema.ValidationError) as e:
                errors.append(f"{where}: {getattr(e, 'message', e)} at {list(e.path)}")
            except kubernetes_validate.SchemaNotFoundError:
                errors.append(f"{where}: no schema for {doc['apiVersion']}")
    assert not errors, "\n".join(errors)


def test_chart_minimum_kubernetes_is_validated(helpers: Any) -> None:
    chart = yaml.safe_load((helpers.CHART / "Chart.yaml").read_text())
    assert chart["kubeVersion"] == f">={helpers.KUBE_VALIDATE_VERSIONS[0]}-0"


def test_crd_schemas_reject_what_they_should() -> None:
    """The hand-written CRD schemas are not vacuous."""
    topic = {
        "apiVersion": "kafka.strimzi.io/v1beta2",
        "kind": "KafkaTopic",
        "metadata": {"name": "t", "labels": {"strimzi.io/cluster": "k"}},
        "spec": {"partitions": 6, "replicas": 3},
    }
    validate_manifest(topic, "1.31.0")
    for bad in (
        {**topic, "spec": {"partitions": 0, "replicas": 3}},
        {**topic, "spec": {"partitions": 6, "replicas": 3, "retention": 1}},
        {**topic, "metadata": {"name": "t", "labels": {}}},
    ):
        with pytest.raises(jsonschema.ValidationError):
            validate_manifest(bad, "1.31.0")
    monitor = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": {"name": "m"},
        "spec": {"selector": {"matchLabels": {"a": "b"}}, "endpoints": [{"port": "http", "interval": "30 s"}]},
    }
    with pytest.raises(jsonschema.ValidationError):
        validate_manifest(monitor, "1.31.0")


def test_strict_kubernetes_validation_catches_a_typo(render: Any) -> None:
    deployment = next(
        m
        for m in render("--set", "secrets.stripeApiKey=sk_test_a,secrets.stripeWebhookSecret=whsec_a")
        if m["kind"] == "Deployment"
    )
    broken = json.loads(json.dumps(deployment))
    broken["spec"]["template"]["spec"]["containers"][0]["livenessProbes"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        validate_manifest(broken, "1.31.0")


@pytest.mark.parametrize("values", ["default", "production", "sasl-managed-secret"])
def test_deployments_are_hardened_and_probed(render: Any, helpers: Any, values: str) -> None:
    manifests = render(*helpers.VALUE_SETS[values])
    deployments = {
        d["metadata"]["labels"]["app.kubernetes.io/component"]: d for d in helpers.by_kind(manifests, "Deployment")
    }
    assert set(deployments) == set(helpers.SERVICES)
    for name, d in deployments.items():
        pod = d["spec"]["template"]["spec"]
        (c,) = pod["containers"]
        assert c["ports"][0]["containerPort"] == helpers.PORTS[name]
        assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert c["startupProbe"]["httpGet"]["path"] == "/healthz"
        assert c["resources"]["requests"] and c["resources"]["limits"]["memory"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        assert c["securityContext"]["readOnlyRootFilesystem"] is True
        assert c["securityContext"]["allowPrivilegeEscalation"] is False
        assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
        assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"]
        assert pod["terminationGracePeriodSeconds"] >= 30
        assert pod["topologySpreadConstraints"]
        assert pod["enableServiceLinks"] is False
        assert pod["automountServiceAccountToken"] is False
        assert not c["image"].endswith(":latest") and ":" in c["image"]
        env = {e["name"]: e for e in c["env"]}
        assert "secretKeyRef" in env["KASSE_MONGO_URI"]["valueFrom"]
        # The storefront has no admin API; its one secret signs the session cookies.
        secret = "KASSE_STOREFRONT_SESSION_SECRET" if name == "storefront" else f"KASSE_{name.upper()}_ADMIN_TOKEN"
        assert secret in env
        # Every secret is a reference, never a literal value in the Deployment.
        for e in c["env"]:
            if any(w in e["name"] for w in ("TOKEN", "PASSWORD", "SECRET", "API_KEY", "MONGO_URI")):
                assert "valueFrom" in e and "value" not in e, e
    pay = {e["name"] for e in deployments["payment"]["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert {
        "KASSE_PAYMENT_STRIPE_API_KEY",
        "KASSE_PAYMENT_STRIPE_WEBHOOK_SECRET",
        "KASSE_PAYMENT_INTERNAL_TOKEN",
    } <= pay
    cart = {e["name"] for e in deployments["cart"]["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert "KASSE_CART_PAYMENT_INTERNAL_TOKEN" in cart


@pytest.mark.parametrize("values", ["default", "production"])
def test_each_metrics_pod_is_its_own_static_group_member(render: Any, helpers: Any, values: str) -> None:
    """Every replica's group.instance.id is its pod name: unique per replica (Kafka fences a duplicate) and
    kept when the container restarts in its pod (it takes its partitions back at once)."""
    manifests = render(*helpers.VALUE_SETS[values])
    for d in helpers.by_kind(manifests, "Deployment"):
        name = d["metadata"]["labels"]["app.kubernetes.io/component"]
        env = [e["name"] for e in d["spec"]["template"]["spec"]["containers"][0]["env"]]
        if name != "metrics":
            assert "KASSE_METRICS_GROUP_INSTANCE_ID" not in env, name
            continue
        (c,) = d["spec"]["template"]["spec"]["containers"]
        by_name = {e["name"]: e for e in c["env"]}
        assert by_name["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
        assert by_name["KASSE_METRICS_GROUP_INSTANCE_ID"]["value"] == "$(POD_NAME)"
        # Kubernetes expands $(VAR) only from variables listed before it.
        assert env.index("POD_NAME") < env.index("KASSE_METRICS_GROUP_INSTANCE_ID")
    for cm in helpers.by_kind(manifests, "ConfigMap"):
        # One value for every pod of the Deployment: would be every replica's id.
        assert "KASSE_METRICS_GROUP_INSTANCE_ID" not in (cm.get("data") or {}), cm["metadata"]["name"]


@pytest.mark.parametrize("values", ["default", "production"])
def test_configmaps_carry_the_settings(render: Any, helpers: Any, values: str) -> None:
    manifests = render(*helpers.VALUE_SETS[values])
    cms = {c["metadata"]["name"]: c["data"] for c in helpers.by_kind(manifests, "ConfigMap")}
    shared = cms["kasse-shared"]
    assert shared["KASSE_HTTP_HOST"] == "0.0.0.0"
    assert shared["KASSE_KAFKA_BOOTSTRAP"]
    for name in helpers.SERVICES:
        assert cms[f"kasse-{name}"][f"KASSE_{name.upper()}_HTTP_PORT"] == str(helpers.PORTS[name])
    assert cms["kasse-cart"]["KASSE_CART_PAYMENT_BASE_URL"] == "http://kasse-payment:8003"
    # No secret in a ConfigMap.
    for data in cms.values():
        for key in data:
            assert not any(w in key for w in ("TOKEN", "PASSWORD", "API_KEY", "MONGO_URI")), key


def test_default_install_creates_the_secret_and_the_topic_job(render: Any, helpers: Any) -> None:
    manifests = render(*helpers.VALUE_SETS["default"])
    (secret,) = helpers.by_kind(manifests, "Secret")
    assert {
        "mongodb-uri",
        "payment-internal-token",
        "stripe-api-key",
        "stripe-webhook-secret",
        "storefront-session-secret",
        *(f"{s}-admin-token" for s in helpers.SERVICES if s != "storefront"),
    } <= set(secret["data"])
    # every service runs in production and finds each secret it needs (none optional: fail closed)
    for deployment in helpers.by_kind(manifests, "Deployment"):
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            for env in container.get("env", []):
                assert not env.get("valueFrom", {}).get("secretKeyRef", {}).get("optional"), env
    (shared,) = [c for c in helpers.by_kind(manifests, "ConfigMap") if "KASSE_KAFKA_BOOTSTRAP" in c["data"]]
    assert shared["data"]["KASSE_PROFILE"] == "production" and shared["data"]["KASSE_TRUSTED_PROXIES"] == ""
    (job,) = helpers.by_kind(manifests, "Job")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    (c,) = job["spec"]["template"]["spec"]["containers"]
    assert c["args"] == ["topics"]
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["KASSE_KAFKA_BOOTSTRAP"] == "kafka:9092" and env["KASSE_TOPIC_REPLICATION_FACTOR"] == "3"
    assert not helpers.by_kind(manifests, "KafkaTopic")
    assert not helpers.by_kind(manifests, "ServiceMonitor")
    assert not helpers.by_kind(manifests, "PrometheusRule")
    assert len(helpers.by_kind(manifests, "PodDisruptionBudget")) == len(helpers.SERVICES)
    assert len(helpers.by_kind(manifests, "NetworkPolicy")) == len(helpers.SERVICES)
    assert len(helpers.by_kind(manifests, "ServiceAccount")) == len(helpers.SERVICES)
    (test_pod,) = helpers.by_kind(manifests, "Pod")  # `helm test`: every service's /readyz
    assert test_pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    urls = test_pod["spec"]["containers"][0]["args"][3:]
    assert urls == [f"http://kasse-{s}:{helpers.PORTS[s]}/readyz" for s in helpers.SERVICES]


def test_production_values_turn_everything_on(render: Any, helpers: Any) -> None:
    manifests = render(*helpers.VALUE_SETS["production"])
    # existingSecret: the chart creates no Secret and every reference points at the existing one.
    assert not helpers.by_kind(manifests, "Secret")
    for d in helpers.by_kind(manifests, "Deployment"):
        (c,) = d["spec"]["template"]["spec"]["containers"]
        refs = {e["valueFrom"]["secretKeyRef"]["name"] for e in c["env"] if "secretKeyRef" in e.get("valueFrom", {})}
        assert refs == {"kasse-production"}
        env = {e["name"] for e in c["env"]}
        assert "KASSE_KAFKA_SASL_PASSWORD" in env
        assert {"name": "kafka-ca", "mountPath": "/etc/kasse/kafka-ca", "readOnly": True} in c["volumeMounts"]
        assert "replicas" not in d["spec"]  # the HPA owns it
    shared = next(c for c in helpers.by_kind(manifests, "ConfigMap") if c["metadata"]["name"] == "kasse-shared")["data"]
    assert shared["KASSE_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    assert shared["KASSE_KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-512"
    assert shared["SSL_CERT_FILE"] == "/etc/kasse/kafka-ca/ca.crt"
    assert shared["OTEL_EXPORTER_OTLP_ENDPOINT"].startswith("http://")
    (ingress,) = helpers.by_kind(manifests, "Ingress")
    assert ingress["spec"]["tls"][0]["secretName"] == "kasse-tls"
    paths = {
        (r["host"], p["path"], p["pathType"], p["backend"]["service"]["name"])
        for r in ingress["spec"]["rules"]
        for p in r["http"]["paths"]
    }
    # The routes: the storefront's pages, Stripe's webhook and the staff's KPI dashboard; no raw API
    # (issue 14: the old single-host example routed to paths that do not exist, e.g. /v1/shipments).
    assert paths == {
        ("api.shop.example.com", "/v1/webhooks/stripe", "Exact", "kasse-payment"),
        ("shop.example.com", "/", "Prefix", "kasse-storefront"),
        ("kpis.shop.example.com", "/", "Prefix", "kasse-metrics"),
    }
    hpas = {
        h["spec"]["scaleTargetRef"]["name"]: h["spec"] for h in helpers.by_kind(manifests, "HorizontalPodAutoscaler")
    }
    assert set(hpas) == {f"kasse-{s}" for s in helpers.SERVICES}
    assert hpas["kasse-metrics"]["maxReplicas"] <= 6
    assert len(helpers.by_kind(manifests, "ServiceMonitor")) == len(helpers.SERVICES)
    # the operator is told when a webhook endpoint is disabled (issue 18)
    rules = helpers.by_kind(manifests, "PrometheusRule")
    alerts = {r["alert"]: r for rule in rules for g in rule["spec"]["groups"] for r in g["rules"]}
    assert "kasse_webhooks_endpoints_disabled_total" in alerts["KasseWebhookEndpointDisabled"]["expr"]
    assert "KasseWebhookDeliveriesFailing" in alerts
    # dead letters waiting to be redriven, an outbox that does not drain, consumers restarted (issue 12)
    assert "kasse_dead_letters_waiting" in alerts["KasseDeadLettersWaiting"]["expr"]
    assert "kasse_outbox_oldest_event_age_seconds" in alerts["KasseOutboxStuck"]["expr"]
    assert "kasse_consumer_restarts" in alerts["KasseConsumerRestarting"]["expr"]
    assert not helpers.by_kind(manifests, "Job")  # Strimzi creates the topics


def expected_topics() -> dict[str, dict[str, Any]]:
    out = {}
    for t in (*TOPICS.values(), *INTERNAL_TOPICS.values()):
        config = {"retention.ms": str(t.retention_ms)}
        if t.compacted:
            config["cleanup.policy"] = "compact"
        out[t.name] = {"partitions": t.partitions, "config": config}
    for s in ("catalog", "cart", "payment", "shipping", "metrics"):
        out[dead_letter_topic(s)] = {"partitions": 1, "config": {"retention.ms": str(14 * 24 * 3600 * 1000)}}
    return out


def test_strimzi_topics_are_the_contract_topics(render: Any, helpers: Any) -> None:
    manifests = render(*helpers.VALUE_SETS["production"])
    rendered = {
        t["spec"]["topicName"]: {"partitions": t["spec"]["partitions"], "config": t["spec"]["config"], "t": t}
        for t in helpers.by_kind(manifests, "KafkaTopic")
    }
    expected = {f"prod.{name}": spec for name, spec in expected_topics().items()}
    assert set(rendered) == set(expected)
    for name, spec in expected.items():
        assert rendered[name]["partitions"] == spec["partitions"], name
        assert rendered[name]["config"] == spec["config"], name
        t = rendered[name]["t"]
        assert t["spec"]["replicas"] == 3
        assert t["metadata"]["labels"]["strimzi.io/cluster"] == "kafka"
        assert t["metadata"]["namespace"] == "kafka"


def test_topics_json_is_fresh(helpers: Any) -> None:
    """files/topics.json (read by the chart) is generated from the contracts; stale = fail."""
    out = subprocess.run(
        [sys.executable, str(helpers.DEPLOY / "tools" / "gen_topics.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    data = json.loads((helpers.CHART / "files" / "topics.json").read_text())
    assert {t["name"] for t in data["topics"]} == set(expected_topics())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "services.metrics.replicaCount=7"], "at most 6 replicas own a partition"),
        (
            [
                "--set",
                "services.metrics.autoscaling.enabled=true",
                "--set",
                "services.metrics.autoscaling.maxReplicas=12",
            ],
            "at most 6 replicas own a partition",
        ),
        (["--set", "kafka.securityProtocol=SASL_SSL"], "needs kafka.sasl.mechanism"),
        (["--set", "kafka.sasl.mechanism=PLAIN", "--set", "kafka.sasl.username=u"], "use SASL_SSL"),
        (["--set", "kafka.securityProtocol=TLS"], "securityProtocol"),
        (["--set", "kafka.bootstrapServers=kafka"], "bootstrapServers"),
        (["--set", "defaults.terminationGracePeriodSeconds=10"], "terminationGracePeriodSeconds"),
        (["--set", "services.checkout.port=1"], "checkout"),
        (["--set", "topics.strimzi.enabled=true"], "choose one way"),
        (["--set", "ingress.enabled=true", "--set", "ingress.tls.enabled=true"], "secretName"),
        (["--set", "secrets.stripeApiKey=pk_live_oops"], "stripeApiKey"),
    ],
)
def test_bad_values_are_refused_with_a_reason(helm: str, helpers: Any, args: list[str], message: str) -> None:
    out = helpers.run_helm(
        helm,
        "template",
        "kasse",
        str(helpers.CHART),
        "--kube-version",
        helpers.KUBE_VERSION,
        *helpers.VALUE_SETS["default"],
        *args,
    )
    assert out.returncode != 0, f"helm template {args} should fail"
    assert message in out.stderr, out.stderr


@pytest.mark.parametrize("missing", ["stripeApiKey", "stripeWebhookSecret"])
def test_the_stripe_secrets_are_required(helm: str, helpers: Any, missing: str) -> None:
    given = {"stripeApiKey": "sk_test_abc", "stripeWebhookSecret": "whsec_abc"}
    given.pop(missing)
    sets = ",".join(f"secrets.{k}={v}" for k, v in given.items())
    out = helpers.run_helm(
        helm, "template", "kasse", str(helpers.CHART), "--kube-version", helpers.KUBE_VERSION, "--set", sets
    )
    assert out.returncode != 0 and f"secrets.{missing} is required" in out.stderr, out.stderr


def test_values_schema_is_valid_and_accepts_the_shipped_values(helpers: Any) -> None:
    schema = json.loads((helpers.CHART / "values.schema.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    defaults = yaml.safe_load((helpers.CHART / "values.yaml").read_text())
    jsonschema.Draft7Validator(schema).validate(defaults)


def test_ci_values_files_exist(helpers: Any) -> None:
    assert (helpers.CHART / "ci" / "production-values.yaml").is_file()


def test_sasl_with_the_chart_managed_secret(render: Any, helpers: Any) -> None:
    manifests = render(*helpers.VALUE_SETS["sasl-managed-secret"])
    secrets = {s["metadata"]["name"]: s for s in helpers.by_kind(manifests, "Secret")}
    assert "kafka-sasl-password" in secrets["kasse-secrets"]["data"]
    # Hooks run before the release's Secret exists: the Job's password comes from its own hook Secret.
    hook = secrets["kasse-topics"]
    assert hook["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert int(hook["metadata"]["annotations"]["helm.sh/hook-weight"]) < 0
    (job,) = helpers.by_kind(manifests, "Job")
    env = {e["name"]: e for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["KASSE_KAFKA_SASL_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "kasse-topics"
    assert env["KASSE_KAFKA_SASL_MECHANISM"]["value"] == "SCRAM-SHA-256"
    for d in helpers.by_kind(manifests, "Deployment"):
        env = {e["name"]: e for e in d["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert env["KASSE_KAFKA_SASL_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
            "name": "kasse-secrets",
            "key": "kafka-sasl-password",
        }
    (ingress,) = helpers.by_kind(manifests, "Ingress")
    hosts = {r["host"] for r in ingress["spec"]["rules"]}
    assert hosts == {"payment.kasse.example.com", "shop.kasse.example.com"}
    for rule in ingress["spec"]["rules"]:
        for path in rule["http"]["paths"]:
            if rule["host"] == "shop.kasse.example.com":  # the storefront's pages
                assert path["backend"]["service"]["name"].endswith("-storefront") and path["path"] == "/"
            else:
                assert path["path"] == "/v1/webhooks/stripe", "of the APIs only Stripe's webhook is public"
