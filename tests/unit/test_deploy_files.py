"""The deployment files stay true to the code (they are checked here, not run)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import yaml

from lineguard.config import load_config

ROOT = Path(__file__).resolve().parents[2]
SERVICES = {"capture", "inference", "ocr", "decision", "gateway", "results"}


def test_compose_runs_each_service_by_its_console_script() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    for name in SERVICES:
        command = compose["services"][name]["command"]
        assert command == [f"lineguard-{name}"] and command[0] in scripts


def test_the_deployed_line_config_is_valid() -> None:
    cfg = load_config(ROOT / "deploy" / "line.yaml")
    assert cfg.database.url.startswith("postgresql")


def test_compose_nats_carries_the_inline_frames() -> None:
    import re

    from lineguard.config import NatsSettings

    conf = (ROOT / "deploy" / "nats.conf").read_text()
    size = re.search(r"max_payload:\s*(\d+)MB", conf)
    assert size and int(size.group(1)) * 1024 * 1024 > NatsSettings().inline_image_max_bytes


def test_compose_nats_config_is_valid_for_nats_server(tmp_path: Path) -> None:
    """deploy/nats.conf with what `lineguard nats creds` writes, laid out as compose mounts it (/etc/nats/...)."""
    import shutil
    import subprocess

    from lineguard.bus.credentials import write_credentials
    from lineguard.natsserver import nats_server_binary

    layout = write_credentials(tmp_path / "secrets-out", "l1", hosts=["nats"])
    etc = tmp_path / "etc" / "nats"
    shutil.copytree(layout.root / "server", etc / "secrets")
    conf = (ROOT / "deploy" / "nats.conf").read_text().replace("/etc/nats/", f"{etc}/")
    (etc / "nats.conf").write_text(conf)
    check = subprocess.run(
        [nats_server_binary(), "-c", str(etc / "nats.conf"), "-t"], capture_output=True, text=True, timeout=30
    )
    assert check.returncode == 0, check.stdout + check.stderr


def test_deployed_nats_is_secured() -> None:
    """TLS and sign-in on the server, monitoring on loopback only; every service mounts its own seed and the CA."""
    conf = (ROOT / "deploy" / "nats.conf").read_text()
    assert "tls {" in conf and 'include "secrets/authorization.conf"' in conf
    assert "http: 127.0.0.1:8222" in conf and "http_port" not in conf
    cfg = load_config(ROOT / "deploy" / "line.yaml")
    assert cfg.nats.credentials_dir == "/run/secrets/nats" and cfg.nats.tls and cfg.nats.tls.ca_file
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    for name in [*SERVICES, "nats-provision"]:
        identity = "admin" if name == "nats-provision" else name
        targets = {s["target"] for s in compose["services"][name]["secrets"] if isinstance(s, dict)}
        assert targets == {f"/run/secrets/nats/{identity}.nk", "/run/secrets/nats/ca.pem"}, name


def test_compose_migrates_in_a_step_of_its_own_before_the_writer_starts() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert compose["services"]["migrate"]["command"] == ["lineguard", "db", "upgrade"]
    assert compose["services"]["results"]["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}


def test_compose_streams_fit_the_jetstream_store() -> None:
    """Every line stream at deploy/line.yaml's limit fits nats.conf's JetStream store, with room for the model
    registry's and the recipes' buckets."""
    from lineguard.testing.containers import jetstream_store_bytes, reserved_stream_bytes

    store = jetstream_store_bytes((ROOT / "deploy" / "nats.conf").read_text())
    reserved = reserved_stream_bytes(load_config(ROOT / "deploy" / "line.yaml").nats)
    assert reserved <= 0.85 * store, f"the line's streams reserve {reserved} of the {store} bytes JetStream may use"
