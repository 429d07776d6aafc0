"""A test's look into a database by plain SQL, as an MES team would query it (docs/mes-schema.md)."""

from __future__ import annotations

import sqlalchemy as sa


def rows(url: str, sql: str) -> list[sa.Row]:
    """Every row `sql` returns from the database at `url`, on a connection of its own (closed after)."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return list(conn.execute(sa.text(sql)))
    finally:
        engine.dispose()
