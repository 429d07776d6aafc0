"""The drift watch's tables (docs/drift.md): each station's baselines, its latest drift state, its self-test runs.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-08 10:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

LEVELS = "'OK', 'WARNING', 'ALERT'"


def upgrade() -> None:
    op.create_table(
        "drift_baselines",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("station", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("source", sa.Text(), nullable=False, comment="what it was taken from: a period or a folder"),
        sa.Column("samples", sa.Integer(), nullable=False, comment="parts (or images) it was taken from"),
        sa.Column("features", sa.JSON(), nullable=False, comment="{feature: {edges, expected, mean}}"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_drift_baselines")),
    )
    op.create_index(op.f("ix_drift_baselines_station"), "drift_baselines", ["station"])
    op.create_table(
        "drift_states",
        sa.Column("station", sa.String(length=64), nullable=False),
        sa.Column("shift", sa.String(length=32), nullable=True, comment="NULL when the line has no calendar"),
        sa.Column("level", sa.String(length=8), nullable=False, comment="OK, WARNING or ALERT"),
        sa.Column("samples", sa.Integer(), nullable=False),
        sa.Column("baseline", sa.String(length=32), nullable=False, comment="'training' or a drift_baselines id"),
        sa.Column("features", sa.JSON(), nullable=False, comment="[{feature, psi, level, baseline_mean, ...}]"),
        sa.Column("selftest", sa.Text(), nullable=False, comment="why the last self-test raises the alert, or ''"),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("computed_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(f"level IN ({LEVELS})", name=op.f("ck_drift_states_level")),
        sa.PrimaryKeyConstraint("station", name=op.f("pk_drift_states")),
    )
    op.create_table(
        "selftest_runs",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("station", sa.String(length=64), nullable=False),
        sa.Column("request_id", sa.String(length=64), nullable=False, comment="the command's id; '' when scheduled"),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("changed", sa.Boolean(), nullable=False, comment="a golden part did not get its expected outcome"),
        sa.Column("cases", sa.JSON(), nullable=False, comment="[{name, expected, verdict, reason_codes, changed}]"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_selftest_runs")),
    )
    op.create_index(op.f("ix_selftest_runs_station_started_at"), "selftest_runs", ["station", "started_at"])


def downgrade() -> None:
    op.drop_index(op.f("ix_selftest_runs_station_started_at"), table_name="selftest_runs")
    op.drop_table("selftest_runs")
    op.drop_table("drift_states")
    op.drop_index(op.f("ix_drift_baselines_station"), table_name="drift_baselines")
    op.drop_table("drift_baselines")
