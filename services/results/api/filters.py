"""What a caller may ask for: every query parameter checked, unknown ones refused, each error naming its field.

Strings are bound as parameters, never spliced into SQL, so quotes, semicolons and unicode in a
serial are just characters; control characters are refused (PostgreSQL cannot even store NUL)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, model_validator

PAGE_SIZE_DEFAULT = 100
PAGE_SIZE_MAX = 1000
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(2200, 1, 1, tzinfo=UTC)
# Aggregates and exports over more than this are several requests: one is never an unbounded scan.
MAX_RANGE = timedelta(days=400)
MAX_HOURLY_RANGE = timedelta(days=62)
_CONTROL = re.compile(r"[\x00-\x1f\x7f\ud800-\udfff]")


def _printable(value: str) -> str:
    if _CONTROL.search(value):
        raise ValueError("contains a control character")
    return value


def _in_range(value: datetime) -> datetime:
    if not EARLIEST <= value < LATEST:
        raise ValueError(f"must be between {EARLIEST:%Y-%m-%d} and {LATEST:%Y-%m-%d}")
    return value.astimezone(UTC)


Text = Annotated[str, Field(min_length=1, max_length=64), AfterValidator(_printable)]
Id = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
# An inspection's id in a route's path: a UUIDv7's 36 characters (docs/mes-schema.md).
INSPECTION_ID = r"^[0-9a-fA-F-]{36}$"
When = Annotated[AwareDatetime, AfterValidator(_in_range)]
Verdict = Literal["PASS", "FAIL", "REWORK", "ERROR"]


class Bucket(StrEnum):
    hour = "hour"
    shift = "shift"
    day = "day"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TimeRange(_Strict):
    start: When | None = Field(None, description="decided at or after (ISO 8601 with a UTC offset)")
    end: When | None = Field(None, description="decided before")

    @model_validator(mode="after")
    def _ordered(self) -> TimeRange:
        if self.start is not None and self.end is not None and self.start >= self.end:
            raise ValueError("end: must be after start")
        return self


class InspectionFilters(TimeRange):
    line: Id | None = None
    station: Id | None = None
    verdict: Verdict | None = None
    reason: Annotated[str, Field(pattern=r"^[A-Z0-9_]{1,64}$")] | None = Field(
        None, description="a reason code, e.g. DEFECT_SHORT"
    )
    serial: Annotated[str, Field(min_length=1, max_length=128), AfterValidator(_printable)] | None = None
    lot: Text | None = None
    product: Text | None = None
    shift: Annotated[str, Field(min_length=1, max_length=32), AfterValidator(_printable)] | None = None
    model_version: Text | None = None
    recipe_version: Text | None = None
    cursor: Annotated[str, Field(max_length=200)] | None = Field(None, description="next_cursor of the page before")
    limit: int = Field(PAGE_SIZE_DEFAULT, ge=1, le=PAGE_SIZE_MAX, description=f"page size, at most {PAGE_SIZE_MAX}")


class BoundedRange(_Strict):
    start: When = Field(description="decided at or after (ISO 8601 with a UTC offset)")
    end: When = Field(description="decided before")

    @model_validator(mode="after")
    def _ordered(self) -> BoundedRange:
        if self.start >= self.end:
            raise ValueError("end: must be after start")
        if self.end - self.start > MAX_RANGE:
            raise ValueError(f"end: at most {MAX_RANGE.days} days after start")
        return self


class AggregateFilters(BoundedRange):
    by: Bucket = Field(description="hour and day in UTC; shift by the line's calendar")
    line: Id | None = None
    station: Id | None = None

    @model_validator(mode="after")
    def _hourly_range(self) -> AggregateFilters:
        if self.by is Bucket.hour and self.end - self.start > MAX_HOURLY_RANGE:
            raise ValueError(f"end: by hour, at most {MAX_HOURLY_RANGE.days} days after start")
        return self


class HistoryFilters(_Strict):
    serial: Annotated[str, Field(min_length=1, max_length=128), AfterValidator(_printable)]
