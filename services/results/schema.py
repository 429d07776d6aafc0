"""The MES database: one row per inspection, its defects, codes and reasons, what each PLC was given, the model
and recipe versions seen, and the query API's tokens.

MES teams query these tables directly (docs/mes-schema.md), so they are an
interface: any change here needs an Alembic migration in `migrations/versions/`,
and tests/integration/test_results_migrations.py fails until the migrated
schema and these models agree again.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from lineguard.contracts.api_roles import ApiRole
from lineguard.timestamps import as_utc

VERDICTS: tuple[str, ...] = ("PASS", "FAIL", "REWORK", "ERROR")
ROLES: tuple[str, ...] = tuple(ApiRole)
IMAGE_KINDS: tuple[str, ...] = ("image", "thumbnail", "overlay")

# Fixed constraint names, so a migration can name the constraint it changes on
# every dialect (SQLite otherwise leaves them unnamed).
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC timestamp on every dialect.

    PostgreSQL stores `timestamp with time zone`; SQLite has no time zones, so the
    UTC wall time is stored and UTC is attached again when read. Naive datetimes
    are refused: a timestamp without a zone is a bug waiting for daylight saving."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value.isoformat()} given; use a timezone-aware UTC datetime")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else as_utc(value)


def _row_id() -> BigInteger:
    # SQLite only auto-numbers a column declared exactly INTEGER PRIMARY KEY.
    return BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    # none_as_null: a missing mask is SQL NULL, not the JSON text 'null'.
    type_annotation_map = {  # noqa: RUF012 - SQLAlchemy reads it from the class
        datetime: UTCDateTime(),
        dict[str, Any]: JSON(none_as_null=True),
        list[Any]: JSON(none_as_null=True),
    }


# What a yield or shift question reads of each inspection in its range besides decided_at.
YIELD_COLUMNS = ("line", "station", "verdict", "shift_day", "shift")


class Inspection(Base):
    """One part at one station: the verdict and everything that led to it."""

    __tablename__ = "inspections"

    inspection_id: Mapped[str] = mapped_column(String(36), primary_key=True, comment="UUIDv7 made at the trigger")
    line: Mapped[str] = mapped_column(String(64))
    station: Mapped[str] = mapped_column(String(64))
    recipe_id: Mapped[str] = mapped_column(String(64))
    recipe_version: Mapped[str | None] = mapped_column(String(64), comment="NULL when the recipe was unknown")
    sequence: Mapped[int] = mapped_column(BigInteger, comment="the PLC's trigger sequence number")
    serial: Mapped[str | None] = mapped_column(String(128), comment="read from the part's code; NULL when none")
    verdict: Mapped[str] = mapped_column(String(8), comment="PASS, FAIL, REWORK or ERROR")
    reason_codes: Mapped[str] = mapped_column(Text, comment="comma-separated, e.g. DEFECT_SHORT,CODE_MISSING")
    model_id: Mapped[str | None] = mapped_column(String(128))
    model_version: Mapped[str | None] = mapped_column(String(64))
    triggered_at: Mapped[datetime] = mapped_column(comment="trigger entered the system (UTC)")
    decided_at: Mapped[datetime] = mapped_column(comment="verdict given (UTC)")
    total_ms: Mapped[float] = mapped_column(Float, comment="trigger to verdict, milliseconds")
    timings: Mapped[dict[str, Any]] = mapped_column(comment='milliseconds per stage, {"capture": 12.5, ...}')
    image_width: Mapped[int | None] = mapped_column(Integer, comment="pixels; NULL when no inference result")
    image_height: Mapped[int | None] = mapped_column(Integer)
    plc_delivered_at: Mapped[datetime | None] = mapped_column(comment="verdict reached the PLC (UTC)")
    plc_verdict: Mapped[str | None] = mapped_column(String(8), comment="what the PLC was given")
    created_at: Mapped[datetime] = mapped_column(default=lambda: datetime.now(UTC), comment="row written (UTC)")
    part_id: Mapped[str | None] = mapped_column(String(64), comment="the PLC's id of the part; NULL when none")
    lot: Mapped[str | None] = mapped_column(String(64), comment="production lot from the PLC; NULL when none")
    product: Mapped[str | None] = mapped_column(String(64), comment="the recipe's product; NULL when not configured")
    shift: Mapped[str | None] = mapped_column(String(32), comment="shift name from the line's calendar; NULL: none")
    shift_day: Mapped[date | None] = mapped_column(Date, comment="the plant's local date the shift started on")
    explanation: Mapped[list[Any] | None] = mapped_column(
        comment="the rules that fired, worst first: [{reason, verdict, text, ...}]; NULL for rows before 0004"
    )
    recipe_sha256: Mapped[str | None] = mapped_column(
        String(64), comment="sha256 of the recipe version that judged the part; NULL when not known"
    )
    image_quality: Mapped[dict[str, Any] | None] = mapped_column(
        comment='the frame\'s {"brightness": .., "contrast": .., "sharpness": ..}; NULL when not measured'
    )
    trace_id: Mapped[str | None] = mapped_column(String(32), comment="OpenTelemetry trace id (hex); NULL: tracing off")

    defects: Mapped[list[Defect]] = relationship(back_populates="inspection", order_by="Defect.id")
    codes: Mapped[list[Code]] = relationship(back_populates="inspection", order_by="Code.id")
    reasons: Mapped[list[InspectionReason]] = relationship(
        back_populates="inspection", order_by="InspectionReason.position"
    )
    images: Mapped[list[InspectionImage]] = relationship(back_populates="inspection", order_by="InspectionImage.id")
    confirmations: Mapped[list[VerdictConfirmation]] = relationship(
        back_populates="inspection", order_by="VerdictConfirmation.id"
    )

    __table_args__ = (
        Index(None, "line", "station", "decided_at"),
        Index(None, "serial"),
        Index(None, "verdict"),
        Index(None, "lot"),
        # Covering on PostgreSQL (migration 0006): yield and shift questions over a range read the index alone.
        Index(None, "decided_at", postgresql_include=list(YIELD_COLUMNS)),
        CheckConstraint(f"verdict IN ({', '.join(repr(v) for v in VERDICTS)})", name="verdict"),
        CheckConstraint(f"plc_verdict IN ({', '.join(repr(v) for v in VERDICTS)})", name="plc_verdict"),
    )


class Defect(Base):
    """One detection the model made on an inspection's image."""

    __tablename__ = "defects"

    id: Mapped[int] = mapped_column(_row_id(), primary_key=True, autoincrement=True)
    inspection_id: Mapped[str] = mapped_column(ForeignKey("inspections.inspection_id", ondelete="CASCADE"), index=True)
    class_name: Mapped[str] = mapped_column(String(64))
    class_id: Mapped[int] = mapped_column(Integer)
    score: Mapped[float] = mapped_column(Float, comment="0..1")
    x1: Mapped[float] = mapped_column(Float, comment="box in image pixels, top-left")
    y1: Mapped[float] = mapped_column(Float)
    x2: Mapped[float] = mapped_column(Float, comment="bottom-right")
    y2: Mapped[float] = mapped_column(Float)
    area_px: Mapped[float] = mapped_column(Float, comment="mask (or box) area, px²")
    area_mm2: Mapped[float | None] = mapped_column(Float, comment="mm²; NULL when the station is uncalibrated")
    mask: Mapped[list[Any] | None] = mapped_column(comment="outline [[x, y], ...] in pixels; NULL for box models")

    inspection: Mapped[Inspection] = relationship(back_populates="defects")


class Code(Base):
    """One machine-readable code read on an inspection's image."""

    __tablename__ = "codes"

    id: Mapped[int] = mapped_column(_row_id(), primary_key=True, autoincrement=True)
    inspection_id: Mapped[str] = mapped_column(ForeignKey("inspections.inspection_id", ondelete="CASCADE"), index=True)
    symbology: Mapped[str] = mapped_column(String(32), comment="DataMatrix, QRCode, Code128, ...")
    text: Mapped[str] = mapped_column(Text)
    x1: Mapped[float] = mapped_column(Float, comment="box in image pixels")
    y1: Mapped[float] = mapped_column(Float)
    x2: Mapped[float] = mapped_column(Float)
    y2: Mapped[float] = mapped_column(Float)
    outline: Mapped[list[Any] | None] = mapped_column(comment="[[x, y], ...] in pixels; NULL when not given")
    grade: Mapped[str | None] = mapped_column(
        String(1), comment="overall print-quality letter A-F (the lowest parameter's); NULL: not graded (1D codes)"
    )
    quality: Mapped[dict[str, Any] | None] = mapped_column(
        comment='each print-quality parameter\'s measured value, {"modulation": 0.41, ...}; NULL: not graded'
    )
    quality_grades: Mapped[dict[str, Any] | None] = mapped_column(
        comment='each print-quality parameter\'s letter, {"modulation": "B", ...}; NULL: not graded'
    )

    inspection: Mapped[Inspection] = relationship(back_populates="codes")


class PlcResult(Base):
    """What the gateway reported giving (or trying to give) the PLC for one inspection.

    Kept apart from `inspections` because the report can arrive before the decision's row
    (the two travel on different streams): it is stored here whatever the order, and
    copied into the inspection's plc_* columns by whichever of the two is written second."""

    __tablename__ = "plc_results"

    inspection_id: Mapped[str] = mapped_column(
        String(36), primary_key=True, comment="the inspection; its row may not be written yet"
    )
    plc_verdict: Mapped[str] = mapped_column(String(8), comment="what the PLC was given (or was to be given)")
    plc_delivered_at: Mapped[datetime | None] = mapped_column(comment="verdict reached the PLC (UTC); NULL: it did not")

    __table_args__ = (CheckConstraint(f"plc_verdict IN ({', '.join(repr(v) for v in VERDICTS)})", name="plc_verdict"),)


class InspectionReason(Base):
    """One reason code of an inspection, so a pareto is a GROUP BY: worst first, then by name."""

    __tablename__ = "inspection_reasons"

    inspection_id: Mapped[str] = mapped_column(
        ForeignKey("inspections.inspection_id", ondelete="CASCADE"), primary_key=True
    )
    position: Mapped[int] = mapped_column(Integer, primary_key=True, comment="0 = the worst reason")
    reason_code: Mapped[str] = mapped_column(String(64), comment="e.g. DEFECT_SHORT, TIMEOUT")
    severity: Mapped[str] = mapped_column(String(8), comment="the verdict this reason gives: ERROR, FAIL or REWORK")

    inspection: Mapped[Inspection] = relationship(back_populates="reasons")

    __table_args__ = (
        Index(None, "reason_code"),
        CheckConstraint(f"severity IN ({', '.join(repr(v) for v in VERDICTS)})", name="severity"),
    )


class InspectionImage(Base):
    """One stored image of an inspection in the archive: the frame, its thumbnail or the overlay of its detections."""

    __tablename__ = "inspection_images"

    id: Mapped[int] = mapped_column(_row_id(), primary_key=True, autoincrement=True)
    inspection_id: Mapped[str] = mapped_column(ForeignKey("inspections.inspection_id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(16), comment="image, thumbnail or overlay")
    uri: Mapped[str] = mapped_column(Text, comment="file:// or s3:// address in the archive")
    content_type: Mapped[str] = mapped_column(String(32), comment="e.g. image/png, image/jpeg")
    bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64), comment="of the stored bytes")
    width: Mapped[int | None] = mapped_column(Integer, comment="of the stored image, pixels; NULL for rows before 0007")
    height: Mapped[int | None] = mapped_column(Integer, comment="pixels; NULL for rows before 0007")
    stored_at: Mapped[datetime] = mapped_column(index=True)
    deleted_at: Mapped[datetime | None] = mapped_column(comment="removed by retention; NULL while kept")

    inspection: Mapped[Inspection] = relationship(back_populates="images")

    __table_args__ = (CheckConstraint(f"kind IN ({', '.join(repr(k) for k in IMAGE_KINDS)})", name="kind"),)


class VerdictConfirmation(Base):
    """A person's confirmation or overruling of a verdict: kept beside the inspection, which it never changes."""

    __tablename__ = "verdict_confirmations"

    id: Mapped[int] = mapped_column(_row_id(), primary_key=True, autoincrement=True)
    inspection_id: Mapped[str] = mapped_column(ForeignKey("inspections.inspection_id", ondelete="CASCADE"), index=True)
    verdict: Mapped[str] = mapped_column(String(8), comment="the verdict the person says is true")
    confirmed_by: Mapped[str] = mapped_column(String(128), comment="the person (token name or user)")
    confirmed_at: Mapped[datetime] = mapped_column()
    comment: Mapped[str] = mapped_column(Text, comment="why; may be empty for a plain confirmation")

    inspection: Mapped[Inspection] = relationship(back_populates="confirmations")

    __table_args__ = (CheckConstraint(f"verdict IN ({', '.join(repr(v) for v in VERDICTS)})", name="verdict"),)


class ShadowVerdict(Base):
    """The verdict a candidate (shadow) model would have given a live inspection; it never reached the PLC."""

    __tablename__ = "shadow_verdicts"

    inspection_id: Mapped[str] = mapped_column(
        ForeignKey("inspections.inspection_id", ondelete="CASCADE"), primary_key=True, comment="the live inspection"
    )
    model_id: Mapped[str] = mapped_column(String(128), primary_key=True, comment="the candidate model")
    model_version: Mapped[str] = mapped_column(String(64), primary_key=True)
    verdict: Mapped[str] = mapped_column(String(8), comment="what the candidate would have given")
    reason_codes: Mapped[str] = mapped_column(Text, comment="comma-separated, worst first")
    detections: Mapped[list[Any]] = mapped_column(comment="[{class_name, score, x1, y1, x2, y2}, ...]")
    inference_ms: Mapped[float | None] = mapped_column(Float, comment="the candidate's model time")
    decided_at: Mapped[datetime] = mapped_column()

    __table_args__ = (
        Index(None, "model_id", "model_version"),
        CheckConstraint(f"verdict IN ({', '.join(repr(v) for v in VERDICTS)})", name="verdict"),
    )


class ModelVersion(Base):
    """A model version that judged parts, with the first and last part it judged."""

    __tablename__ = "model_versions"

    model_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    version: Mapped[str] = mapped_column(String(64), primary_key=True)
    sha256: Mapped[str | None] = mapped_column(String(64), comment="the model file's; NULL when not reported")
    first_used_at: Mapped[datetime] = mapped_column(comment="decided_at of its first part (UTC)")
    last_used_at: Mapped[datetime] = mapped_column(comment="decided_at of its last part (UTC)")


class RecipeVersion(Base):
    """A recipe version parts were judged by, with the first and last part."""

    __tablename__ = "recipe_versions"

    recipe_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    version: Mapped[str] = mapped_column(String(64), primary_key=True)
    sha256: Mapped[str | None] = mapped_column(
        String(64), comment="of the recipe's settings as configured (canonical JSON); NULL when not known"
    )
    first_used_at: Mapped[datetime] = mapped_column(comment="decided_at of its first part (UTC)")
    last_used_at: Mapped[datetime] = mapped_column(comment="decided_at of its last part (UTC)")


class ApiToken(Base):
    """A query API token: only its secret's sha256 is kept; the token itself is shown once, when made."""

    __tablename__ = "api_tokens"

    token_id: Mapped[str] = mapped_column(String(16), primary_key=True, comment="the token's public part")
    name: Mapped[str] = mapped_column(String(64), comment="who or what it is for")
    role: Mapped[str] = mapped_column(String(8), comment="reader, quality or admin")
    secret_sha256: Mapped[str] = mapped_column(String(64), comment="hex sha256 of the token's secret part")
    created_at: Mapped[datetime] = mapped_column(default=lambda: datetime.now(UTC))
    revoked_at: Mapped[datetime | None] = mapped_column(comment="NULL while the token is valid")

    __table_args__ = (CheckConstraint(f"role IN ({', '.join(repr(r) for r in ROLES)})", name="role"),)


class DriftBaseline(Base):
    """What a station's parts are compared with (docs/drift.md): equal-width bins per feature; the latest one counts."""

    __tablename__ = "drift_baselines"

    id: Mapped[int] = mapped_column(_row_id(), primary_key=True, autoincrement=True)
    station: Mapped[str] = mapped_column(String(64), index=True)
    created_at: Mapped[datetime] = mapped_column()
    source: Mapped[str] = mapped_column(Text, comment="what it was taken from: a period or a folder")
    samples: Mapped[int] = mapped_column(Integer, comment="parts (or images) it was taken from")
    features: Mapped[dict[str, Any]] = mapped_column(comment="{feature: {edges, expected, mean}}")


class DriftStateRow(Base):
    """Each station's drift as the drift watch last judged it (what GET /v1/drift shows)."""

    __tablename__ = "drift_states"

    station: Mapped[str] = mapped_column(String(64), primary_key=True)
    shift: Mapped[str | None] = mapped_column(String(32), comment="NULL when the line has no calendar")
    level: Mapped[str] = mapped_column(String(8), comment="OK, WARNING or ALERT")
    samples: Mapped[int] = mapped_column(Integer)
    baseline: Mapped[str] = mapped_column(String(32), comment="'training' or a drift_baselines id")
    features: Mapped[list[Any]] = mapped_column(comment="[{feature, psi, level, baseline_mean, ...}]")
    selftest: Mapped[str] = mapped_column(Text, comment="why the last self-test raises the alert, or ''")
    detail: Mapped[str] = mapped_column(Text)
    computed_at: Mapped[datetime] = mapped_column()

    __table_args__ = (CheckConstraint("level IN ('OK', 'WARNING', 'ALERT')", name="level"),)


class SelfTestRun(Base):
    """One golden-part self-test of a station: each golden image's verdict against the one it must get."""

    __tablename__ = "selftest_runs"

    id: Mapped[int] = mapped_column(_row_id(), primary_key=True, autoincrement=True)
    station: Mapped[str] = mapped_column(String(64))
    request_id: Mapped[str] = mapped_column(String(64), comment="the command's id; '' when scheduled")
    started_at: Mapped[datetime] = mapped_column()
    finished_at: Mapped[datetime] = mapped_column()
    changed: Mapped[bool] = mapped_column(Boolean, comment="a golden part did not get its expected outcome")
    cases: Mapped[list[Any]] = mapped_column(comment="[{name, expected, verdict, reason_codes, changed}]")

    __table_args__ = (Index(None, "station", "started_at"),)


class YieldHour(Base):
    """Parts per verdict for each UTC hour (of decided_at), line, station and shift: what the writer counted, in the
    transaction that wrote the inspections (batch.py), so an hourly, daily or shift yield reads a few rows a bucket
    instead of every inspection of its range (migration 0008, docs/mes-schema.md)."""

    __tablename__ = "yield_hours"

    hour: Mapped[datetime] = mapped_column(primary_key=True, comment="the start of the UTC hour the parts were decided")
    line: Mapped[str] = mapped_column(String(64), primary_key=True)
    station: Mapped[str] = mapped_column(String(64), primary_key=True)
    slot: Mapped[str] = mapped_column(
        String(48), primary_key=True, comment="'<shift_day> <shift>', '' when no shift (a primary key holds no NULL)"
    )
    shift_day: Mapped[date | None] = mapped_column(Date, comment="as the inspections'; NULL when no shift")
    shift: Mapped[str | None] = mapped_column(String(32), comment="as the inspections'; NULL when no shift")
    parts: Mapped[int] = mapped_column(BigInteger, comment="inspections counted: passed + failed + rework + errors")
    passed: Mapped[int] = mapped_column(BigInteger)
    failed: Mapped[int] = mapped_column(BigInteger)
    rework: Mapped[int] = mapped_column(BigInteger)
    errors: Mapped[int] = mapped_column(BigInteger)
