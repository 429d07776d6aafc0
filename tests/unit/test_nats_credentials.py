"""`lineguard nats creds / config`: the files a deployment gets, their modes, rotation; the table the docs show."""

from __future__ import annotations

import stat
import subprocess
from pathlib import Path

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from lineguard.bus.credentials import Layout, read_public_key, seed_file
from lineguard.bus.permissions import IDENTITIES, markdown_table
from lineguard.cli import app
from lineguard.config import NatsTlsSettings
from lineguard.natsserver import nats_server_binary

ROOT = Path(__file__).resolve().parents[2]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_creds_writes_private_seeds_and_a_server_config_nats_server_accepts(tmp_path: Path) -> None:
    out = tmp_path / "nats"
    result = CliRunner().invoke(app, ["nats", "creds", str(out), "--host", "nats", "--host", "10.0.0.5"])
    assert result.exit_code == 0, result.output
    layout = Layout(out)
    for identity in IDENTITIES:
        assert mode(seed_file(layout.clients, identity)) == 0o600
    assert mode(layout.server_key) == 0o600 and mode(layout.ca_key) == 0o600
    keys = {identity: read_public_key(seed_file(layout.clients, identity)) for identity in IDENTITIES}
    authorization = layout.authorization.read_text()
    assert all(authorization.count(key) == 1 for key in keys.values())
    seeds = [seed_file(layout.clients, i).read_text().strip() for i in IDENTITIES]
    assert not [seed for seed in seeds if seed in authorization]  # public keys only: no seed in what the server gets
    conf = tmp_path / "etc" / "nats.conf"
    conf.parent.mkdir()
    result = CliRunner().invoke(app, ["nats", "config", str(out), "--out", str(conf)])
    assert result.exit_code == 0, result.output
    check = subprocess.run([nats_server_binary(), "-c", str(conf), "-t"], capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "http" not in conf.read_text()  # monitoring off unless asked for


def test_a_rerun_keeps_the_keys_and_rotate_replaces_only_the_one_named(tmp_path: Path) -> None:
    out = tmp_path / "nats"
    runner = CliRunner()
    assert runner.invoke(app, ["nats", "creds", str(out)]).exit_code == 0
    before = {i: seed_file(Layout(out).clients, i).read_bytes() for i in IDENTITIES}
    cert = Layout(out).server_cert.read_bytes()
    assert runner.invoke(app, ["nats", "creds", str(out)]).exit_code == 0
    assert {i: seed_file(Layout(out).clients, i).read_bytes() for i in IDENTITIES} == before
    assert runner.invoke(app, ["nats", "creds", str(out), "--rotate", "gateway"]).exit_code == 0
    after = {i: seed_file(Layout(out).clients, i).read_bytes() for i in IDENTITIES}
    assert [i for i in IDENTITIES if after[i] != before[i]] == ["gateway"]
    assert read_public_key(seed_file(Layout(out).clients, "gateway")) in Layout(out).authorization.read_text()
    assert Layout(out).server_cert.read_bytes() == cert
    refused = runner.invoke(app, ["nats", "creds", str(out), "--rotate", "mallory"])
    assert refused.exit_code == 1 and "mallory" in refused.output


def test_docs_show_the_permissions_table_of_the_code() -> None:
    assert markdown_table("l1") in (ROOT / "docs" / "security.md").read_text()


def test_a_client_certificate_comes_with_its_key() -> None:
    with pytest.raises(ValidationError, match="cert_file and key_file go together"):
        NatsTlsSettings(cert_file="client.pem")
