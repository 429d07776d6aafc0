"""plc_results: what each PLC was given, stored whether or not the inspection's row is there yet.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 08:56:10

An ack could only update an existing inspections row, so one that arrived before its
decision had to wait for it; under PostgreSQL's READ COMMITTED it could also be taken
as recorded while the row stayed NULL. The report now has a row of its own, and the
inspection's plc_* columns are copied from it. Rows already reported are copied in, so
the first delivery recorded stays the one kept.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

VERDICTS = "'PASS', 'FAIL', 'REWORK', 'ERROR'"


def upgrade() -> None:
    op.create_table(
        "plc_results",
        sa.Column(
            "inspection_id",
            sa.String(length=36),
            nullable=False,
            comment="the inspection; its row may not be written yet",
        ),
        sa.Column(
            "plc_verdict", sa.String(length=8), nullable=False, comment="what the PLC was given (or was to be given)"
        ),
        sa.Column(
            "plc_delivered_at",
            sa.DateTime(timezone=True),
            nullable=True,
            comment="verdict reached the PLC (UTC); NULL: it did not",
        ),
        sa.CheckConstraint(f"plc_verdict IN ({VERDICTS})", name=op.f("ck_plc_results_plc_verdict")),
        sa.PrimaryKeyConstraint("inspection_id", name=op.f("pk_plc_results")),
    )
    op.execute(
        "INSERT INTO plc_results (inspection_id, plc_verdict, plc_delivered_at) "
        "SELECT inspection_id, plc_verdict, plc_delivered_at FROM inspections WHERE plc_verdict IS NOT NULL"
    )


def downgrade() -> None:
    # The inspections' plc_* columns keep what was copied into them; reports of parts without a row are lost.
    op.drop_table("plc_results")
