"""docker-compose.yml against the Compose Specification's JSON schema, and the stack's promises: a migration and
NATS provisioning first, services that wait on health, loopback ports, a password from a secret, the PLC a demo."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ["capture", "inference", "ocr", "decision", "gateway", "results"]


def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def schema_errors(document: dict[str, Any]) -> list[str]:
    schema = json.loads((ROOT / "deploy" / "schemas" / "compose-spec.json").read_text())
    validator = jsonschema.Draft201909Validator(schema)
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(document)]


def test_compose_file_is_valid_against_the_compose_specification() -> None:
    assert schema_errors(compose()) == []


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (lambda c: c["services"]["results"].update(helthcheck={"test": ["CMD", "true"]}), "helthcheck"),
        (lambda c: c["services"]["migrate"]["depends_on"]["postgres"].update(condition="done"), "done"),
        (lambda c: c["services"]["nats"].update(ports=[{"published": "x", "target": "y"}]), "ports"),
    ],
)
def test_a_broken_compose_file_fails_the_schema_naming_what(change: Any, named: str) -> None:
    broken = copy.deepcopy(compose())
    change(broken)
    errors = schema_errors(broken)
    assert errors and any(named in e for e in errors), errors


def test_every_service_waits_for_the_migration_and_the_streams_and_serves_a_health_check() -> None:
    services = compose()["services"]
    for name in SERVICES:
        depends = services[name]["depends_on"]
        assert depends["migrate"] == {"condition": "service_completed_successfully"}, name
        assert depends["nats-provision"] == {"condition": "service_completed_successfully"}, name
        assert "/readyz" in " ".join(services[name]["healthcheck"]["test"]), name
        assert services[name]["image"] == f"localhost/lineguard/{name}:0.1.0"
    assert services["migrate"]["depends_on"]["postgres"] == {"condition": "service_healthy"}
    assert services["nats-provision"]["depends_on"]["nats"] == {"condition": "service_healthy"}
    demo = services["plc-sim"]
    assert demo["profiles"] == ["demo"]
    assert all(demo["depends_on"][name] == {"condition": "service_healthy"} for name in SERVICES)


def test_ports_are_on_loopback_but_the_plc_networks_and_postgres_has_a_password() -> None:
    services = compose()["services"]
    for name, service in services.items():
        for port in service.get("ports", []):
            host = port.rsplit(":", 2)[0]
            expected = "${PLC_NETWORK_ADDRESS:-127.0.0.1}" if name == "gateway" else "127.0.0.1"
            assert host == expected, (name, port)
    postgres = services["postgres"]["environment"]
    assert "POSTGRES_HOST_AUTH_METHOD" not in postgres
    assert postgres["POSTGRES_PASSWORD_FILE"] == "/run/secrets/postgres-password"
    line = yaml.safe_load((ROOT / "deploy" / "line.yaml").read_text())
    assert line["database"]["password_file"] == "/run/secrets/postgres-password"
    for name in ("migrate", "results"):
        assert "postgres-password" in services[name]["secrets"], name
