"""A throwaway PostgreSQL database per test run, dropped afterwards."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator

import psycopg

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
