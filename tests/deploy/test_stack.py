"""The CPU images built with podman and the stack run from them (docs/deploy.md, What CI runs): the NATS credentials
made by the tools image (its own permissions table, the one the services' code was built with), NATS, the migration and
provisioning, the six services as containers with tracing on, the simulated PLC triggering parts, their rows read back
from PostgreSQL (the host's, a throwaway database) and each part's trace holding spans of all six services; and a
database that is away keeps the results service unready, waiting, not crash-looping."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml

from lineguard.natsserver import free_port
from lineguard.services.results.api.tokens import create_token
from lineguard.testing.containers import (
    ROOT,
    Stack,
    build_images,
    compose_secret_mounts,
    compose_service,
    deploy_tests_enabled,
    http_status,
    readable_by_the_image,
    stack,
    wait_ready,
)
from lineguard.testing.otlp import OtlpReceiver
from lineguard.testing.postgres import give_database_back, take_database_away, throwaway_database

pytestmark = [
    pytest.mark.deploy,
    pytest.mark.skipif(
        not deploy_tests_enabled(), reason="builds and runs images: LINEGUARD_DEPLOY_TESTS=1 (CI runs it)"
    ),
    pytest.mark.timeout(900),  # a fresh build here takes 5 min (docs/deploy.md, What CI runs)
]
SERVICES = ["capture", "inference", "ocr", "decision", "gateway", "results"]


@pytest.fixture(scope="module")
def images() -> None:
    build_images()


@dataclass
class Box:
    """One edge box's files: deploy/line.yaml and deploy/nats.conf made to run on the host's network, the secrets."""

    folder: Path
    config: Path
    nats_conf: Path
    secrets: Path
    pki: Path
    images: Path
    health_ports: dict[str, int]
    api_port: int
    database_url: str


def make_box(folder: Path, database_url: str, running: Stack, tracing: str | None = None) -> Box:
    """`tracing`: the OTLP endpoint the services export to (none: tracing off)."""
    secrets = folder / "secrets"
    secrets.mkdir()
    # As docs/deploy.md says to: `lineguard nats creds` from the tools image, so the server's authorization is the
    # permissions table of the code the services run, not of whatever lineguard the host has.
    readable_by_the_image(secrets)
    creds = running.run(
        "nats-creds",
        "tools",
        ["lineguard", "nats", "creds", "/secrets/nats", "--host", "127.0.0.1", "--host", "localhost"],
        mounts=[(secrets, "/secrets")],
    )
    assert creds.wait(60) == 0, f"lineguard nats creds failed:\n{creds.logs()}"
    (secrets / "opcua-plc-password").write_text("plc-password-for-the-test\n")
    # Mounted as compose mounts it; the host's PostgreSQL trusts loopback, so the config names no password file.
    (secrets / "postgres-password").write_text("unused-by-a-trusting-server\n")
    nats_port, monitor_port, opcua_port = free_port(), free_port(), free_port()
    # The host's network: every port its own, every address loopback (compose gives each container its own).
    line: dict[str, Any] = yaml.safe_load((ROOT / "deploy" / "line.yaml").read_text())
    line["nats"]["url"] = f"nats://127.0.0.1:{nats_port}"
    line["database"] = {"url": database_url}
    if tracing:
        line["tracing"] = {"endpoint": tracing}
    line["stations"][0]["plc"]["endpoint"] = f"opc.tcp://127.0.0.1:{opcua_port}/lineguard/"
    health_ports = {name: free_port() for name in SERVICES}
    for name, port in health_ports.items():
        line["services"][name] = {"http_host": "127.0.0.1", "http_port": port}
    api_port = free_port()
    line["api"] = {**line["api"], "host": "127.0.0.1", "port": api_port}
    config = folder / "line.yaml"
    config.write_text(yaml.safe_dump(line))
    conf = (
        (ROOT / "deploy" / "nats.conf").read_text().replace("http: 127.0.0.1:8222", f"http: 127.0.0.1:{monitor_port}")
    )
    nats_conf = folder / "nats.conf"
    nats_conf.write_text(f"{conf}\nport: {nats_port}\n")
    pki, images = folder / "opcua-pki", folder / "images"
    pki.mkdir()
    images.mkdir()
    (folder / "nats-data").mkdir()
    for path in (secrets, pki, images, folder / "nats-data", config, nats_conf):
        readable_by_the_image(path)
    return Box(
        folder, config, nats_conf, secrets, pki, images, {**health_ports, "nats": monitor_port}, api_port, database_url
    )


def start_nats(box: Box, running: Stack) -> None:
    nats = compose_service("nats")
    running.run(
        "nats",
        "tools",
        nats["command"],
        mounts=[
            (box.folder / "nats-data", "/var/lib/lineguard/nats"),
            (box.nats_conf, "/etc/nats/nats.conf"),
            (box.secrets / "nats" / "server", "/etc/nats/secrets"),
        ],
    )
    wait_ready(f"http://127.0.0.1:{box.health_ports['nats']}/healthz?js-enabled-only=true", 60, running)


def one_shot(box: Box, running: Stack, name: str) -> None:
    """A compose one-shot (nats-provision, migrate) run to its end: it must succeed."""
    step = running.run(
        name,
        "tools",
        compose_service(name)["command"],
        mounts=[(box.config, "/etc/lineguard/line.yaml"), *compose_secret_mounts(name, box.secrets)],
    )
    code = step.wait(180)
    assert code == 0, f"{name} exited {code}:\n{step.logs()}"


def start_service(box: Box, running: Stack, name: str) -> None:
    mounts = [(box.config, "/etc/lineguard/line.yaml"), *compose_secret_mounts(name, box.secrets)]
    if name == "gateway":
        mounts.append((box.pki, "/var/lib/lineguard/opcua"))
    if name in ("results", "api"):  # compose's `images` volume: the results service writes it, the API reads it
        mounts.append((box.images, "/var/lib/lineguard/images"))
    running.run(
        name,
        "results" if name == "api" else name,
        compose_service(name)["command"],
        mounts=mounts,
        env={"LINEGUARD_HEALTH_PORT": str(box.health_ports.get(name, box.api_port))},
        restart="on-failure",
    )


def api_get(box: Box, path: str, token: str) -> Any:
    request = urllib.request.Request(
        f"http://127.0.0.1:{box.api_port}{path}", headers={"Authorization": f"Bearer {token}"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.read()


@pytest.fixture
def database() -> Iterator[str]:
    with throwaway_database() as url:
        yield url


def test_the_stack_runs_from_the_images_and_writes_each_triggered_part(
    images: None, tmp_path: Path, database: str
) -> None:
    with OtlpReceiver() as receiver, stack() as running:
        box = make_box(tmp_path, database, running, tracing=receiver.endpoint)
        start_nats(box, running)
        one_shot(box, running, "nats-provision")
        one_shot(box, running, "migrate")
        for name in SERVICES:
            start_service(box, running, name)
        for name in SERVICES:
            wait_ready(f"http://127.0.0.1:{box.health_ports[name]}/readyz", 180, running)
        gateway = next(c for c in running.containers if c.name.endswith("-gateway"))
        assert gateway.healthcheck(), "the image's HEALTHCHECK (/healthz) fails on a serving gateway"
        # The demo profile's PLC, with its flags, against this box's OPC UA port.
        plc = compose_service("plc-sim")
        endpoint = yaml.safe_load(box.config.read_text())["stations"][0]["plc"]["endpoint"]
        command = [
            f"--endpoint={endpoint}"
            if arg.startswith("--endpoint=")
            else "--parts=6"
            if arg.startswith("--parts=")
            else arg
            for arg in plc["command"]
        ]
        trigger = running.run(
            "plc-sim",
            "tools",
            command,
            mounts=[(box.pki, "/var/lib/lineguard/opcua"), *compose_secret_mounts("plc-sim", box.secrets)],
        )
        code = trigger.wait(300)
        output = trigger.logs()
        assert code == 0, f"the simulated PLC exited {code}:\n{output}\n{running.logs()}"
        summary = json.loads(output.strip().splitlines()[-1])
        assert summary["results"] == 6 and not summary["missing"] and not summary["duplicates"], summary
        ids = summary["inspection_ids"]
        engine = sa.create_engine(database)
        try:
            deadline = time.monotonic() + 60
            rows: list[Any] = []
            while time.monotonic() < deadline:
                with engine.connect() as conn:
                    rows = conn.execute(
                        sa.text(
                            "SELECT inspection_id, verdict, trace_id FROM inspections WHERE inspection_id = ANY(:ids)"
                        ),
                        {"ids": ids},
                    ).all()
                if len(rows) == len(ids):
                    break
                time.sleep(0.5)
        finally:
            engine.dispose()
        assert sorted(str(r.inspection_id) for r in rows) == sorted(ids), f"rows {rows}\n{running.logs()}"
        assert all(c.restarts == 0 for c in running.containers), running.logs()
        # Tracing on in the images (the tracing extra): each part's trace, named by its row, has spans of all six
        # services' containers (their batches leave within a few seconds).
        wanted = {f"lineguard-{name}" for name in SERVICES}
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            traces = receiver.traces()
            if all(wanted <= {span.service for span in traces.get(row.trace_id, [])} for row in rows):
                break
            time.sleep(1)
        missing = {
            str(row.inspection_id): sorted(wanted - {span.service for span in traces.get(row.trace_id, [])})
            for row in rows
        }
        assert not any(missing.values()), f"traces lack spans of {missing}; refused: {receiver.refused}"
        # Compose's `api` container (the MES API and the dashboard, on the database and the archive alone): the rows
        # and the images the results container wrote, through it, with a reader token.
        start_service(box, running, "api")
        wait_ready(f"http://127.0.0.1:{box.api_port}/healthz", 120, running)
        engine = sa.create_engine(database)
        try:
            token = create_token(engine, "reader", "mes")
        finally:
            engine.dispose()
        listed = json.loads(api_get(box, "/v1/inspections?limit=50", token))
        assert set(ids) <= {item["inspection_id"] for item in listed["items"]}, listed
        images = json.loads(api_get(box, f"/v1/inspections/{ids[0]}/images", token))
        assert images and all(i["href"] for i in images), images
        stored = api_get(box, images[0]["href"], token)
        assert stored[:2] == b"\xff\xd8" or stored[:8] == b"\x89PNG\r\n\x1a\n", stored[:16]
        assert all(c.restarts == 0 for c in running.containers), running.logs()


def test_a_stack_whose_database_is_away_keeps_results_unready_and_waiting_not_crash_looping(
    images: None, tmp_path: Path, database: str
) -> None:
    with stack() as running:
        box = make_box(tmp_path, database, running)
        start_nats(box, running)
        one_shot(box, running, "nats-provision")
        one_shot(box, running, "migrate")
        take_database_away(database)
        try:
            start_service(box, running, "results")
            results = running.containers[-1]
            readyz = f"http://127.0.0.1:{box.health_ports['results']}/readyz"
            # Longer than the give-up the service had (10 tries, about 30 s) before it waited for as long as it takes.
            deadline = time.monotonic() + 45
            seen: set[tuple[int, str]] = set()
            while time.monotonic() < deadline:
                seen.add(http_status(readyz))
                time.sleep(1)
            # Nothing answers for the moment before its health server starts; then it says why it is not ready.
            assert (503, "not ready: waiting for the database\n") in seen, seen
            assert seen <= {(0, ""), (503, "not ready: waiting for the database\n")}, seen
            assert results.running and results.restarts == 0, results.logs()
            assert "Traceback" not in results.logs(), results.logs()
        finally:
            give_database_back(database)
        wait_ready(readyz, 60, running)
        assert results.restarts == 0, results.logs()
