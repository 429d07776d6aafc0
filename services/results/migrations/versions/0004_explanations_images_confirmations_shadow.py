"""What the issues on decisions, the archive and the screen need stored: each verdict's explanation, its recipe's
sha256, the frame's image quality and the part's trace id on `inspections`; the archived images of an inspection;
people's confirmations of verdicts; the verdicts a shadow (candidate) model would have given; a `quality` role for
API tokens (it confirms verdicts).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 11:50:00

Columns are added in place (see 0003's docstring: a rebuilt `inspections` would cascade-delete its children). Only
`api_tokens`, which nothing references, is rebuilt on SQLite to change its role check.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

VERDICTS = "'PASS', 'FAIL', 'REWORK', 'ERROR'"
IMAGE_KINDS = "'image', 'thumbnail', 'overlay'"


def _inspection_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["inspection_id"],
        ["inspections.inspection_id"],
        name=op.f(f"fk_{table}_inspection_id_inspections"),
        ondelete="CASCADE",
    )


def upgrade() -> None:
    op.add_column(
        "inspections",
        sa.Column(
            "explanation",
            sa.JSON(),
            nullable=True,
            comment="the rules that fired, worst first: [{reason, verdict, text, ...}]; NULL for rows before 0004",
        ),
    )
    op.add_column(
        "inspections",
        sa.Column(
            "recipe_sha256",
            sa.String(length=64),
            nullable=True,
            comment="sha256 of the recipe version that judged the part; NULL when not known",
        ),
    )
    op.add_column(
        "inspections",
        sa.Column(
            "image_quality",
            sa.JSON(),
            nullable=True,
            comment='the frame\'s {"brightness": .., "contrast": .., "sharpness": ..}; NULL when not measured',
        ),
    )
    op.add_column(
        "inspections",
        sa.Column(
            "trace_id", sa.String(length=32), nullable=True, comment="OpenTelemetry trace id (hex); NULL: tracing off"
        ),
    )

    op.create_table(
        "inspection_images",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("inspection_id", sa.String(length=36), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False, comment="image, thumbnail or overlay"),
        sa.Column("uri", sa.Text(), nullable=False, comment="file:// or s3:// address in the archive"),
        sa.Column("content_type", sa.String(length=32), nullable=False, comment="e.g. image/png, image/jpeg"),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False, comment="of the stored bytes"),
        sa.Column("stored_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "deleted_at", sa.DateTime(timezone=True), nullable=True, comment="removed by retention; NULL while kept"
        ),
        sa.CheckConstraint(f"kind IN ({IMAGE_KINDS})", name=op.f("ck_inspection_images_kind")),
        _inspection_fk("inspection_images"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_inspection_images")),
    )
    op.create_index(op.f("ix_inspection_images_inspection_id"), "inspection_images", ["inspection_id"])
    op.create_index(op.f("ix_inspection_images_stored_at"), "inspection_images", ["stored_at"])

    op.create_table(
        "verdict_confirmations",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("inspection_id", sa.String(length=36), nullable=False),
        sa.Column("verdict", sa.String(length=8), nullable=False, comment="the verdict the person says is true"),
        sa.Column("confirmed_by", sa.String(length=128), nullable=False, comment="the person (token name or user)"),
        sa.Column("confirmed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("comment", sa.Text(), nullable=False, comment="why; may be empty for a plain confirmation"),
        sa.CheckConstraint(f"verdict IN ({VERDICTS})", name=op.f("ck_verdict_confirmations_verdict")),
        _inspection_fk("verdict_confirmations"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_verdict_confirmations")),
    )
    op.create_index(op.f("ix_verdict_confirmations_inspection_id"), "verdict_confirmations", ["inspection_id"])

    op.create_table(
        "shadow_verdicts",
        sa.Column("inspection_id", sa.String(length=36), nullable=False, comment="the live inspection"),
        sa.Column("model_id", sa.String(length=128), nullable=False, comment="the candidate model"),
        sa.Column("model_version", sa.String(length=64), nullable=False),
        sa.Column("verdict", sa.String(length=8), nullable=False, comment="what the candidate would have given"),
        sa.Column("reason_codes", sa.Text(), nullable=False, comment="comma-separated, worst first"),
        sa.Column("detections", sa.JSON(), nullable=False, comment="[{class_name, score, x1, y1, x2, y2}, ...]"),
        sa.Column("inference_ms", sa.Float(), nullable=True, comment="the candidate's model time"),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(f"verdict IN ({VERDICTS})", name=op.f("ck_shadow_verdicts_verdict")),
        _inspection_fk("shadow_verdicts"),
        sa.PrimaryKeyConstraint("inspection_id", "model_id", "model_version", name=op.f("pk_shadow_verdicts")),
    )
    op.create_index(op.f("ix_shadow_verdicts_model_id_model_version"), "shadow_verdicts", ["model_id", "model_version"])

    with op.batch_alter_table("api_tokens") as batch:
        batch.drop_constraint(op.f("ck_api_tokens_role"), type_="check")
        batch.create_check_constraint(op.f("ck_api_tokens_role"), "role IN ('reader', 'quality', 'admin')")
        batch.alter_column(
            "role", existing_type=sa.String(length=8), existing_nullable=False, comment="reader, quality or admin"
        )


def downgrade() -> None:
    op.execute("DELETE FROM api_tokens WHERE role = 'quality'")
    with op.batch_alter_table("api_tokens") as batch:
        batch.drop_constraint(op.f("ck_api_tokens_role"), type_="check")
        batch.create_check_constraint(op.f("ck_api_tokens_role"), "role IN ('reader', 'admin')")
        batch.alter_column(
            "role", existing_type=sa.String(length=8), existing_nullable=False, comment="reader or admin"
        )
    op.drop_index(op.f("ix_shadow_verdicts_model_id_model_version"), table_name="shadow_verdicts")
    op.drop_table("shadow_verdicts")
    op.drop_index(op.f("ix_verdict_confirmations_inspection_id"), table_name="verdict_confirmations")
    op.drop_table("verdict_confirmations")
    op.drop_index(op.f("ix_inspection_images_stored_at"), table_name="inspection_images")
    op.drop_index(op.f("ix_inspection_images_inspection_id"), table_name="inspection_images")
    op.drop_table("inspection_images")
    # In place, never a rebuilt table (see the module's docstring).
    for column in ("trace_id", "image_quality", "recipe_sha256", "explanation"):
        op.drop_column("inspections", column)
