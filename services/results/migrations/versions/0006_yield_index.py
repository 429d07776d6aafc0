"""The decided_at index covers what yield and shift questions read (PostgreSQL's INCLUDE), so an hourly yield
over a day of a million-row table reads the index alone, not each inspection's wide row.

SQLite has no INCLUDE: its index stays as it is. The index is built in the migration's transaction, which holds
writes to inspections for the build (seconds for a million rows): the writer waits, acks nothing meanwhile and
loses nothing.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-09 10:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INCLUDED = ["line", "station", "verdict", "shift_day", "shift"]  # schema.YIELD_COLUMNS as of this revision


def _decided_at_index(include: list[str]) -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.drop_index(op.f("ix_inspections_decided_at"), table_name="inspections")
    op.create_index(op.f("ix_inspections_decided_at"), "inspections", ["decided_at"], postgresql_include=include)


def upgrade() -> None:
    _decided_at_index(INCLUDED)


def downgrade() -> None:
    _decided_at_index([])
