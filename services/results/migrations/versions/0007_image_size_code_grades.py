"""Each archived image's width and height, and each code read's print-quality grades (the overall letter and, per
parameter, the measured value and its letter, as the OCR result carries them).

The overall letter is a column of its own so that "which parts had a code graded C or worse this shift" is a plain
`grade IN ('C', 'D', 'F')` beside the shift's inspections (docs/mes-schema.md); the per-parameter figures are JSON,
as their set depends on the symbology (fixed_pattern_damage is DataMatrix's only). Rows before 0007 keep NULL: their
sizes and grades were never stored, and a guess would read as a measurement.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-10 09:00:00

Columns are added in place (see 0003's docstring): no table is rebuilt, so nothing cascades on SQLite.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "inspection_images",
        sa.Column(
            "width", sa.Integer(), nullable=True, comment="of the stored image, pixels; NULL for rows before 0007"
        ),
    )
    op.add_column(
        "inspection_images",
        sa.Column("height", sa.Integer(), nullable=True, comment="pixels; NULL for rows before 0007"),
    )
    op.add_column(
        "codes",
        sa.Column(
            "grade",
            sa.String(length=1),
            nullable=True,
            comment="overall print-quality letter A-F (the lowest parameter's); NULL: not graded (1D codes)",
        ),
    )
    op.add_column(
        "codes",
        sa.Column(
            "quality",
            sa.JSON(),
            nullable=True,
            comment='each print-quality parameter\'s measured value, {"modulation": 0.41, ...}; NULL: not graded',
        ),
    )
    op.add_column(
        "codes",
        sa.Column(
            "quality_grades",
            sa.JSON(),
            nullable=True,
            comment='each print-quality parameter\'s letter, {"modulation": "B", ...}; NULL: not graded',
        ),
    )


def downgrade() -> None:
    # In place, never a rebuilt table (see the module's docstring).
    for name in ("quality_grades", "quality", "grade"):
        op.drop_column("codes", name)
    for name in ("height", "width"):
        op.drop_column("inspection_images", name)
