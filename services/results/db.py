"""Connecting to the MES database, migrating its schema (the migrator's step) and checking it (the writer's).

The store uses a synchronous engine, called from the service through
`asyncio.to_thread`: Alembic is synchronous anyway, the same engine serves
migrations, the store and the tests, and the drivers installed are the sync ones
(pysqlite, psycopg). One short transaction per message costs a thread hop of
microseconds, which the bus's pull loop never notices."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import URL, Connection, Engine, create_engine, event, make_url, text

MIGRATIONS = Path(__file__).with_name("migrations")
SQLITE_BUSY_TIMEOUT_MS = 10_000
# Any fixed number: every replica that starts at once takes the same lock, so one migrates.
_MIGRATION_LOCK = 0x6C67_7265  # "lgre"
SQLITE_BEGIN = "lineguard_sqlite_begin"


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine for `url` (sqlite:///file.db or postgresql+psycopg://...)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        _create_private(parsed.database)
        engine = create_engine(url, **kwargs)
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    # pre_ping: a database restarted under us costs a reconnect, not a failed write.
    return create_engine(url, pool_pre_ping=True, **kwargs)


def safe_url(url: str | URL) -> str:
    """`url` as a log or a message may show it: the password as ***."""
    return make_url(url).render_as_string(hide_password=True)


def _create_private(database: str | None) -> None:
    # The file holds the plant's results: owner-only from its creation (0600), and its -wal / -shm,
    # which SQLite creates with the main file's mode, follow. An existing file keeps the mode its owner gave it.
    if database in (None, "", ":memory:") or database.startswith("file:"):
        return
    path = Path(database).expanduser()
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # The sqlite3 driver's own transaction handling (before Python 3.12's autocommit=False)
    # does not BEGIN before DDL: a migration that failed halfway would stay half applied.
    # SQLAlchemy emits BEGIN itself instead (_sqlite_begin).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        # WAL: readers (the dashboard, an MES query) never block the writer, nor it them.
        cursor.execute("PRAGMA journal_mode=WAL")
        # A second writer (the ack consumer, a migration) waits instead of failing at once.
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        # FULL, not NORMAL: a message is acked after commit, so the commit must survive power loss.
        cursor.execute("PRAGMA synchronous=FULL")
    finally:
        cursor.close()


def _sqlite_begin(conn: Connection) -> None:
    # DEFERRED for everyone (a reader must not hold the write lock); IMMEDIATE where asked
    # (a migration takes the write lock up front, so two at once run one after the other).
    conn.exec_driver_sql(f"BEGIN {conn.get_execution_options().get(SQLITE_BEGIN, 'DEFERRED')}")


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None, f"no migrations found in {MIGRATIONS}"
    return head


def known_revisions() -> list[str]:
    """Every revision this lineguard ships, oldest first."""
    script = ScriptDirectory.from_config(alembic_config())
    return [r.revision for r in reversed(list(script.walk_revisions()))]


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


class SchemaNotCurrent(RuntimeError):
    """The database is not at the revision this lineguard writes; the text says what to run."""


def check_schema(engine: Engine) -> str:
    """The database's revision if it is this lineguard's head, else SchemaNotCurrent saying what to do.

    The writer never migrates (its role has no DDL rights): migrating is its own step,
    `lineguard db upgrade`, run before the writer starts (compose's one-shot service, a
    Helm pre-upgrade hook, LocalLine)."""
    at, head = current_revision(engine), head_revision()
    if at == head:
        return head
    where = safe_url(engine.url)
    if at is None:
        raise SchemaNotCurrent(
            f"the database {where} has no lineguard schema (no alembic_version): "
            f"run `lineguard db upgrade` as the migrator before starting the results service"
        )
    if at in known_revisions():
        raise SchemaNotCurrent(
            f"the database {where} is at schema revision {at}, behind this lineguard's {head}: "
            f"run `lineguard db upgrade` as the migrator before starting the results service"
        )
    raise SchemaNotCurrent(
        f"the database {where} is at schema revision {at}, which this lineguard (head {head}) does not know: "
        f"a newer lineguard migrated it; run that version, or take the schema back with its `lineguard db downgrade`"
    )


# Alembic's `context` (what env.py configures and runs) is one per process: two upgrades on two threads would
# run each other's migrations on each other's connections. One at a time here; replicas in other processes are
# serialised by the database (PostgreSQL's advisory lock, SQLite's BEGIN IMMEDIATE).
_ALEMBIC = threading.Lock()


def upgrade_database(url: str, revision: str = "head") -> str | None:
    """Create or migrate the database at `url` to `revision`; returns the revision it is at.

    Safe to call at every start and from several replicas at once (PostgreSQL
    serialises them with an advisory lock; a database already current is left as is)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    config = alembic_config()
    engine = make_engine(url)
    try:
        # One transaction for the whole upgrade, on SQLite too: all of it applies, or none.
        with _ALEMBIC, engine.connect() as conn, conn.execution_options(**{SQLITE_BEGIN: "IMMEDIATE"}).begin():
            if engine.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})
            config.attributes["connection"] = conn
            command.upgrade(config, revision)
        return current_revision(engine)
    finally:
        engine.dispose()


def downgrade_database(url: str, revision: str) -> None:
    """Take the schema back to `revision` ("base" = empty); for tests and rollbacks."""
    config = alembic_config()
    engine = make_engine(url)
    try:
        with _ALEMBIC, engine.connect() as conn, conn.execution_options(**{SQLITE_BEGIN: "IMMEDIATE"}).begin():
            config.attributes["connection"] = conn
            command.downgrade(config, revision)
    finally:
        engine.dispose()
