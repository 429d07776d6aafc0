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


def test_compose_nats_config_is_valid_for_nats_server() -> None:
    import subprocess

    from lineguard.natsserver import nats_server_binary

    check = subprocess.run(
        [nats_server_binary(), "-c", str(ROOT / "deploy" / "nats.conf"), "-t"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert check.returncode == 0, check.stdout + check.stderr


def test_compose_migrates_in_a_step_of_its_own_before_the_writer_starts() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert compose["services"]["migrate"]["command"] == ["lineguard", "db", "upgrade"]
    assert compose["services"]["results"]["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}
