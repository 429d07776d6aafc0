"""Files and secrets (issue 13): what a line writes is owner-only, and the database password never reaches a log."""

from __future__ import annotations

import asyncio
import os
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import make_url, text

from lineguard.config import LineConfig
from lineguard.config.model import DatabaseSettings
from lineguard.natsserver import EmbeddedNats
from lineguard.runtime.service import run_service
from lineguard.services.results.db import make_engine, safe_url, upgrade_database
from lineguard.services.results.service import setup
from lineguard.services.results.store import write_decision
from lineguard.sim.lineconfig import demo_config_dict, write_config
from lineguard.testing import throwaway_database
from lineguard.testing.postgres import ADMIN_URL_ENV, DEFAULT_ADMIN
from lineguard.testing.records import sample_decision


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(autouse=True)
def usual_umask() -> Iterator[None]:
    # 022, the usual one: what it lets through (0644) is what these files must not be.
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_write_config_makes_line_yaml_owner_only_even_over_an_older_file(tmp_path: Path) -> None:
    path = tmp_path / "line.yaml"
    path.write_text("old: 1\n")
    path.chmod(0o644)
    raw = demo_config_dict(nats_url="nats://127.0.0.1:4222", database_url="sqlite://", opcua_endpoint="opc.tcp://x/")
    write_config(path, raw)
    assert mode(path) == 0o600
    fresh = write_config(tmp_path / "new.yaml", raw)
    assert mode(fresh) == 0o600


def test_the_sqlite_file_and_its_wal_are_owner_only_from_creation(tmp_path: Path) -> None:
    db = tmp_path / "data" / "lineguard.db"
    url = f"sqlite:///{db}"
    upgrade_database(url)
    engine = make_engine(url)
    try:
        assert write_decision(engine, sample_decision()) is True
        with engine.connect() as conn:  # the WAL and its index exist while a connection is open
            conn.execute(text("SELECT count(*) FROM inspections"))
            side = [p for p in (Path(f"{db}-wal"), Path(f"{db}-shm")) if p.exists()]
            assert side, "WAL mode makes -wal / -shm"
            assert {p.name: mode(p) for p in side} == {p.name: 0o600 for p in side}
    finally:
        engine.dispose()
    assert mode(db) == 0o600


def test_an_existing_database_file_keeps_the_mode_its_owner_gave_it(tmp_path: Path) -> None:
    db = tmp_path / "shared.db"
    db.touch()
    db.chmod(0o640)  # a group (the MES reader) must read it
    upgrade_database(f"sqlite:///{db}")
    assert mode(db) == 0o640


def test_the_password_comes_from_a_file_or_the_environment_and_is_never_shown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = tmp_path / "db-password"
    secret.write_text("s3cr3t-from-file\n")
    settings = DatabaseSettings(url="postgresql+psycopg://lg@db/lineguard", password_file=str(secret))
    assert make_url(settings.connect_url()).password == "s3cr3t-from-file"
    assert "s3cr3t" not in safe_url(settings.connect_url())
    assert "s3cr3t" not in repr(settings)

    monkeypatch.setenv("LINEGUARD_DATABASE__URL", "postgresql+psycopg://lg@db/lineguard")
    monkeypatch.setenv("LINEGUARD_DATABASE__PASSWORD", "s3cr3t-from-env")
    config = LineConfig(**demo_config_dict(nats_url="nats://x:4222", database_url="sqlite://", opcua_endpoint="o"))
    assert make_url(config.database.connect_url()).password == "s3cr3t-from-env"
    assert "s3cr3t" not in repr(config) and "s3cr3t" not in config.model_dump_json()

    with pytest.raises(ValueError, match="give one"):
        DatabaseSettings(password="a", password_file=str(secret))
    with pytest.raises(ValueError, match=r"password_file .*missing"):
        DatabaseSettings(password_file=str(tmp_path / "missing")).connect_url()


async def test_the_results_service_signs_in_with_a_password_file_and_never_logs_it(
    fresh_nats: EmbeddedNats, tmp_path: Path, line_config_dict, capfd: pytest.CaptureFixture[str], caplog
) -> None:
    admin = os.environ.get(ADMIN_URL_ENV, DEFAULT_ADMIN)
    role, password = f"lg_writer_{uuid.uuid4().hex[:8]}", f"pw-{uuid.uuid4().hex}"
    with throwaway_database() as url:
        name = make_url(url).database
        db_admin = admin.rsplit("/", 1)[0] + f"/{name}"
        upgrade_database(url)  # the migrator's step, as the server's admin
        with psycopg.connect(db_admin, autocommit=True) as conn:
            conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
            conn.execute(f"GRANT USAGE ON SCHEMA public TO {role}")
            conn.execute(f"GRANT SELECT, INSERT, UPDATE ON ALL TABLES IN SCHEMA public TO {role}")
            conn.execute(f"GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {role}")
        try:
            secret = tmp_path / "db-password"
            secret.write_text(password)
            secret.chmod(0o600)
            # Over 127.0.0.1: with a trust pg_hba the server does not check it, so the URL built is checked too.
            as_role = make_url(url).set(username=role, host="127.0.0.1", password=None)
            raw = line_config_dict(nats_url=fresh_nats.url, database_url=as_role.render_as_string(hide_password=False))
            raw["database"]["password_file"] = str(secret)
            config = LineConfig(**raw)
            assert make_url(config.database.connect_url()).password == password
            stopping = asyncio.Event()
            ready = asyncio.Event()
            service = asyncio.create_task(run_service("results", config, setup, stopping=stopping, ready=ready))
            await asyncio.wait_for(ready.wait(), 60)
            engine = make_engine(config.database.connect_url())
            try:
                with engine.connect() as conn:
                    assert conn.execute(text("SELECT current_user")).scalar_one() == role
            finally:
                engine.dispose()
            stopping.set()
            await asyncio.wait_for(service, 15)
        finally:
            with psycopg.connect(db_admin, autocommit=True) as conn:
                conn.execute(f"DROP OWNED BY {role}")
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                conn.execute(f"DROP ROLE IF EXISTS {role}")
    out, err = capfd.readouterr()
    logs = out + err + caplog.text
    assert "database ready" in logs  # the run's logs were captured
    assert password not in logs
