"""Migrating is a step of its own (`lineguard db ...`); the results service only checks the revision and refuses."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import inspect, text

from lineguard.config import LineConfig
from lineguard.natsserver import EmbeddedNats
from lineguard.runtime.service import run_service
from lineguard.services.results.db import (
    SchemaNotCurrent,
    current_revision,
    head_revision,
    make_engine,
    upgrade_database,
)
from lineguard.services.results.service import prepare_database, setup
from lineguard.testing import throwaway_database

LINEGUARD = str(Path(sys.executable).with_name("lineguard"))


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'lineguard.db'}"
    else:
        with throwaway_database() as url:
            yield url


def lineguard(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([LINEGUARD, *args], capture_output=True, text=True, timeout=120, check=False)


def test_db_upgrade_current_and_downgrade_from_the_command_line(empty_url: str) -> None:
    before = lineguard("db", "current", "--url", empty_url)
    assert before.returncode == 1 and "empty" in before.stdout and "lineguard db upgrade" in before.stdout

    up = lineguard("db", "upgrade", "--url", empty_url)
    assert up.returncode == 0, up.stderr
    assert f"database at {head_revision()} (was empty)" in up.stdout
    now = lineguard("db", "current", "--url", empty_url)
    assert now.returncode == 0 and f"{head_revision()} (head: current)" in now.stdout

    down = lineguard("db", "downgrade", "0001", "--url", empty_url)
    assert down.returncode == 0, down.stderr
    behind = lineguard("db", "current", "--url", empty_url)
    assert behind.returncode == 1 and "0001" in behind.stdout and "behind" in behind.stdout

    unknown = lineguard("db", "downgrade", "nope", "--url", empty_url)
    assert unknown.returncode == 2 and "unknown revision 'nope'" in unknown.stderr


def test_a_database_from_a_newer_lineguard_is_refused_in_one_line_and_left_as_it_is(empty_url: str) -> None:
    assert lineguard("db", "upgrade", "--url", empty_url).returncode == 0
    engine = make_engine(empty_url)
    try:
        with engine.begin() as conn:  # as a newer lineguard's migration leaves it
            conn.execute(text("UPDATE alembic_version SET version_num = '0099'"))
        for command in (("db", "downgrade", "0001"), ("db", "upgrade")):
            refused = lineguard(*command, "--url", empty_url)
            assert refused.returncode == 1, refused.stderr
            assert refused.stderr.strip() == (
                f"error: the database is at schema revision 0099, which this lineguard (head {head_revision()}) does "
                f"not know: a newer lineguard migrated it, and only that lineguard's image can take it back (its "
                f"`lineguard db downgrade {head_revision()}`)"
            )
        assert current_revision(engine) == "0099" and "inspections" in inspect(engine).get_table_names()
    finally:
        engine.dispose()


def test_db_upgrade_takes_the_url_from_the_line_config(tmp_path: Path, line_config_dict) -> None:
    import yaml

    url = f"sqlite:///{tmp_path / 'from-config.db'}"
    config = tmp_path / "line.yaml"
    config.write_text(yaml.safe_dump(line_config_dict(database_url=url)))
    assert lineguard("db", "upgrade", "--config", str(config)).returncode == 0
    engine = make_engine(url)
    try:
        assert current_revision(engine) == head_revision()
    finally:
        engine.dispose()
    bad = lineguard("db", "upgrade", "--config", str(tmp_path / "missing.yaml"))
    assert bad.returncode == 2 and "cannot read the file" in bad.stderr


async def test_the_service_refuses_an_empty_database_and_creates_nothing(empty_url: str) -> None:
    with pytest.raises(SchemaNotCurrent, match=r"no lineguard schema .* run `lineguard db upgrade` as the migrator"):
        await prepare_database(empty_url)
    engine = make_engine(empty_url)
    try:
        assert inspect(engine).get_table_names() == []  # the writer ran no DDL
    finally:
        engine.dispose()


async def test_the_service_refuses_a_schema_behind_and_one_it_does_not_know(empty_url: str) -> None:
    upgrade_database(empty_url, "0001")
    with pytest.raises(SchemaNotCurrent, match=rf"at schema revision 0001, behind this lineguard's {head_revision()}"):
        await prepare_database(empty_url)
    upgrade_database(empty_url)
    engine = await prepare_database(empty_url)  # current: accepted
    try:
        with engine.begin() as conn:
            conn.execute(text("UPDATE alembic_version SET version_num = '9999_from_the_future'"))
    finally:
        engine.dispose()
    with pytest.raises(SchemaNotCurrent, match=r"9999_from_the_future, which this lineguard .* does not know"):
        await prepare_database(empty_url)


async def test_the_running_service_stops_at_start_on_a_schema_behind(
    fresh_nats: EmbeddedNats, tmp_path: Path, line_config_dict
) -> None:
    url = f"sqlite:///{tmp_path / 'lineguard.db'}"
    upgrade_database(url, "0001")
    config = LineConfig(**line_config_dict(nats_url=fresh_nats.url, database_url=url))
    with pytest.raises(SchemaNotCurrent, match="lineguard db upgrade"):
        await run_service("results", config, setup)


def test_the_documented_roles_migrate_write_and_read_with_no_more_rights(postgres_url: str) -> None:
    # The three roles of docs/mes-schema.md on a database of this test's own; roles are the server's, so unique.
    import uuid

    import psycopg
    from sqlalchemy import make_url
    from sqlalchemy.exc import ProgrammingError

    from lineguard.services.results.drift import store_state
    from lineguard.services.results.store import record_plc_ack, write_decision
    from lineguard.testing.postgres import ADMIN_URL_ENV, DEFAULT_ADMIN
    from lineguard.testing.records import sample_ack, sample_decision
    from lineguard.v1.common_pb2 import Part
    from lineguard.v1.drift_pb2 import DriftLevel, DriftState

    admin = __import__("os").environ.get(ADMIN_URL_ENV, DEFAULT_ADMIN)
    suffix = uuid.uuid4().hex[:8]
    migrator, writer, reader = (f"lg_{r}_{suffix}" for r in ("migrator", "writer", "reader"))
    with throwaway_database() as url:
        name = make_url(url).database
        db_admin = admin.rsplit("/", 1)[0] + f"/{name}"
        with psycopg.connect(db_admin, autocommit=True) as conn:
            for role in (migrator, writer, reader):
                conn.execute(f"CREATE ROLE {role} LOGIN")
            conn.execute(f"GRANT CREATE, USAGE ON SCHEMA public TO {migrator}")
            conn.execute(f"GRANT USAGE ON SCHEMA public TO {writer}, {reader}")
            conn.execute(f"SET ROLE {migrator}")
            conn.execute(
                f"ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT, INSERT, UPDATE ON TABLES TO {writer}"
            )
            conn.execute(f"ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE ON SEQUENCES TO {writer}")
            conn.execute(f"ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO {reader}")
        as_role = {
            r: make_url(url).set(username=r).render_as_string(hide_password=False) for r in (migrator, writer, reader)
        }
        try:
            upgrade_database(as_role[migrator])
            engine = make_engine(as_role[writer])
            try:
                decision = sample_decision()
                assert write_decision(engine, decision) is True
                assert record_plc_ack(engine, sample_ack(decision)) is True
                for samples in (5, 9):  # a station's drift state, replaced: the writer has no DELETE
                    store_state(
                        engine, DriftState(part=Part(station="s1"), level=DriftLevel.DRIFT_LEVEL_OK, samples=samples)
                    )
                with engine.connect() as conn:
                    assert conn.execute(text("SELECT station, samples FROM drift_states")).all() == [("s1", 9)]
                with pytest.raises(ProgrammingError, match="permission denied"), engine.begin() as conn:
                    conn.execute(text("CREATE TABLE mine (x int)"))
            finally:
                engine.dispose()
            engine = make_engine(as_role[reader])
            try:
                with engine.connect() as conn:
                    assert conn.execute(text("SELECT count(*) FROM inspections")).scalar_one() == 1
                with pytest.raises(ProgrammingError, match="permission denied"), engine.begin() as conn:
                    conn.execute(text("DELETE FROM inspections"))
            finally:
                engine.dispose()
        finally:
            with psycopg.connect(db_admin, autocommit=True) as conn:
                for role in (migrator, writer, reader):
                    conn.execute(f"DROP OWNED BY {role}")
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                for role in (migrator, writer, reader):
                    conn.execute(f"DROP ROLE IF EXISTS {role}")
