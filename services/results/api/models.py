"""The API's responses, as the OpenAPI document shows them."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any

from pydantic import BaseModel, Field, PlainSerializer, WithJsonSchema

from lineguard.timestamps import utc_iso

# Every database time the API writes, in lineguard's one form (`2026-05-28T14:02:11.000000Z`), whatever shape the
# database handed it back in: SQLite's come naive through plain SQL (the drift routes).
Timestamp = Annotated[
    datetime, PlainSerializer(utc_iso, when_used="json"), WithJsonSchema({"type": "string", "format": "date-time"})
]


class InspectionSummary(BaseModel):
    inspection_id: str
    decided_at: Timestamp
    triggered_at: Timestamp
    line: str
    station: str
    serial: str | None
    part_id: str | None
    lot: str | None
    product: str | None
    shift_day: date | None
    shift: str | None
    verdict: str
    reason_codes: list[str] = Field(description="as the decision listed them (`reasons`: worst first, then by name)")
    recipe_id: str
    recipe_version: str | None
    model_id: str | None
    model_version: str | None
    plc_verdict: str | None
    plc_delivered_at: Timestamp | None
    total_ms: float


class InspectionPage(BaseModel):
    items: list[InspectionSummary]
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null: this is the last")


class Reason(BaseModel):
    position: int
    reason_code: str
    severity: str


class DefectOut(BaseModel):
    class_name: str
    class_id: int
    score: float
    x1: float
    y1: float
    x2: float
    y2: float
    area_px: float
    area_mm2: float | None
    mask: list[Any] | None


class CodeOut(BaseModel):
    symbology: str
    text: str
    x1: float
    y1: float
    x2: float
    y2: float
    outline: list[Any] | None
    grade: str | None = Field(
        description="overall print-quality letter A-F, the lowest parameter's (docs/ocr.md); null: not graded"
    )
    quality: dict[str, float] | None = Field(description="each print-quality parameter's measured value")
    quality_grades: dict[str, str] | None = Field(description="each print-quality parameter's letter A-F")


class InspectionDetail(InspectionSummary):
    reasons: list[Reason]
    defects: list[DefectOut]
    codes: list[CodeOut]


class ImageOut(BaseModel):
    id: int
    kind: str
    content_type: str
    bytes: int
    sha256: str
    width: int | None  # pixels of the stored image; null for images archived before migration 0007
    height: int | None
    uri: str
    stored_at: Timestamp
    deleted_at: Timestamp | None
    href: str | None  # where the bytes are; None once retention deleted them


class HistoryInspection(InspectionDetail):
    explanation: list[dict[str, Any]] | None = Field(
        description="the rules that fired, worst first, each with reason, verdict and text (docs/decisions.md); "
        "null when none fired (a pass) and for inspections written before migration 0004"
    )
    images: list[ImageOut] = Field(description="the images kept of it (deleted ones too: no href)")


class PartHistory(BaseModel):
    serial: str
    inspections: list[HistoryInspection]


class YieldBucket(BaseModel):
    bucket: str = Field(description="hour (2026-05-28T20:00:00Z), day (2026-05-28, UTC) or the shift's day")
    shift: str | None = None
    line: str
    station: str
    parts: int
    passed: int
    failed: int
    rework: int
    errors: int
    yield_: float = Field(alias="yield", serialization_alias="yield")


class ParetoBucket(BaseModel):
    bucket: str
    shift: str | None = None
    reason_code: str
    severity: str
    parts: int


class TokenOut(BaseModel):
    token_id: str
    name: str
    role: str
    created_at: Timestamp
    revoked_at: Timestamp | None
