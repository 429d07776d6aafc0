"""yield_hours: parts per verdict for each UTC hour, line, station and shift, kept by the writer.

An hourly yield over a day of a million-row table read each of the day's ~33,000 inspections (by 0006's covering
index at best, 14 ms alone on a quiet machine, and 40-100 ms at p99 under load, over the API's 50 ms target;
docs/benchmarks.md). The writer now adds each new inspection to its hour's row in the very transaction that
inserts it (batch.py), so the count is exact: a redelivery adds nothing, a rolled-back batch takes its counts
back with it. The API reads whole hours here and only the partial hours at a range's ends from the inspections.

The hours already recorded are counted here from the inspections, in the migration's transaction (writes to
inspections wait for it: seconds for a million rows). The hour is stored as the writer binds it: a timestamp on
PostgreSQL, SQLAlchemy's 'YYYY-MM-DD HH:MM:SS.ffffff' text on SQLite.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-11 09:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_COUNTS = """count(*),
       sum(CASE WHEN verdict = 'PASS' THEN 1 ELSE 0 END),
       sum(CASE WHEN verdict = 'FAIL' THEN 1 ELSE 0 END),
       sum(CASE WHEN verdict = 'REWORK' THEN 1 ELSE 0 END),
       sum(CASE WHEN verdict = 'ERROR' THEN 1 ELSE 0 END)"""
_HOUR = {
    "postgresql": "date_trunc('hour', decided_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'",
    "sqlite": "strftime('%Y-%m-%d %H:00:00.000000', decided_at)",
}
_SLOT = {
    "postgresql": "CASE WHEN shift IS NULL THEN '' ELSE to_char(shift_day, 'YYYY-MM-DD') || ' ' || shift END",
    "sqlite": "CASE WHEN shift IS NULL THEN '' ELSE shift_day || ' ' || shift END",
}


def upgrade() -> None:
    op.create_table(
        "yield_hours",
        sa.Column(
            "hour",
            sa.DateTime(timezone=True),
            nullable=False,
            comment="the start of the UTC hour the parts were decided",
        ),
        sa.Column("line", sa.String(length=64), nullable=False),
        sa.Column("station", sa.String(length=64), nullable=False),
        sa.Column(
            "slot",
            sa.String(length=48),
            nullable=False,
            comment="'<shift_day> <shift>', '' when no shift (a primary key holds no NULL)",
        ),
        sa.Column("shift_day", sa.Date(), nullable=True, comment="as the inspections'; NULL when no shift"),
        sa.Column("shift", sa.String(length=32), nullable=True, comment="as the inspections'; NULL when no shift"),
        sa.Column(
            "parts", sa.BigInteger(), nullable=False, comment="inspections counted: passed + failed + rework + errors"
        ),
        sa.Column("passed", sa.BigInteger(), nullable=False),
        sa.Column("failed", sa.BigInteger(), nullable=False),
        sa.Column("rework", sa.BigInteger(), nullable=False),
        sa.Column("errors", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("hour", "line", "station", "slot", name=op.f("pk_yield_hours")),
    )
    dialect = op.get_bind().dialect.name
    hour, slot = _HOUR[dialect], _SLOT[dialect]
    op.execute(
        "INSERT INTO yield_hours (hour, line, station, slot, shift_day, shift, parts, passed, failed, rework, errors) "
        f"SELECT {hour}, line, station, {slot}, shift_day, shift, {_COUNTS} FROM inspections "
        f"GROUP BY {hour}, line, station, {slot}, shift_day, shift"
    )


def downgrade() -> None:
    op.drop_table("yield_hours")
