"""A throwaway PostgreSQL database per test run, dropped afterwards (or, for a test of both dialects, SQLite's file)."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
from sqlalchemy.engine import make_url

ADMIN_URL_ENV = "LINEGUARD_TEST_PG"
DEFAULT_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


@contextlib.contextmanager
def throwaway_database(admin_url: str | None = None) -> Iterator[str]:
    """Create an empty database, yield its SQLAlchemy URL, drop it on exit."""
    admin = admin_url or os.environ.get(ADMIN_URL_ENV, DEFAULT_ADMIN)
    name = f"lineguard_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = admin.rsplit("/", 1)[0]
    try:
        yield f"{base.replace('postgresql://', 'postgresql+psycopg://', 1)}/{name}"
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def empty_database(dialect: str, folder: Path) -> Iterator[str]:
    """An empty database's URL: "sqlite", a new file in `folder`; "postgresql", a throwaway_database."""
    if dialect == "sqlite":
        yield f"sqlite:///{folder / 'lineguard.db'}"
    elif dialect == "postgresql":
        with throwaway_database() as url:
            yield url
    else:
        raise ValueError(f"dialect {dialect!r}: sqlite or postgresql")


def _admin(sql: str, *params: object) -> None:
    with psycopg.connect(os.environ.get(ADMIN_URL_ENV, DEFAULT_ADMIN), autocommit=True) as conn:
        conn.execute(sql, params)


def take_database_away(url: str) -> None:
    """An outage of one database (a throwaway one, never the server): new connections refused, open ones cut."""
    name = make_url(url).database
    _admin(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
    cut_connections(url)


def cut_connections(url: str, *, busy_only: bool = False) -> list[str]:
    """pg_terminate_backend on the connections to one database; the state each was in when cut.

    busy_only: only those running a statement or inside a transaction ('active', 'idle in transaction'),
    that is, a writer cut mid-batch."""
    states = ("active", "idle in transaction") if busy_only else None
    with psycopg.connect(os.environ.get(ADMIN_URL_ENV, DEFAULT_ADMIN), autocommit=True) as conn:
        # The backends chosen first, then cut one by one: within one WHERE clause PostgreSQL may call
        # pg_terminate_backend before the other conditions, on any backend of the server.
        found = conn.execute(
            "SELECT pid, state FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (make_url(url).database,),
        ).fetchall()
        return [
            state or ""
            for pid, state in found
            if (states is None or state in states)
            and conn.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone() == (True,)
        ]


def give_database_back(url: str) -> None:
    _admin(f'ALTER DATABASE "{make_url(url).database}" ALLOW_CONNECTIONS true')
