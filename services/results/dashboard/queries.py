"""The dashboard's questions as SQL: plain functions over an engine, the same on SQLite and PostgreSQL.

Every one reads through an index of the inspections table (line, station, decided_at; serial; lot;
decided_at; verdict) over a bounded range or with a LIMIT, so a page costs the same with a million
rows as with a thousand (benchmarks/dashboard.py). Text from a caller is a bound parameter, never SQL."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, Float, case, cast, func, literal, or_, select

from lineguard.services.results.dashboard.live import PartView
from lineguard.services.results.schema import (
    Code,
    Defect,
    Inspection,
    InspectionImage,
    InspectionReason,
    VerdictConfirmation,
)

# Reasons counted as a no-read (nothing read where a code or a field was required) and as a timeout.
NO_READ_REASONS = ("CODE_MISSING", "NO_READ")
TIMEOUT_REASONS = ("TIMEOUT",)
FAILED = ("FAIL", "REWORK", "ERROR")
SEARCH_LIMIT = 200


@dataclass(frozen=True)
class Counters:
    """One period's counts at one station or the whole line."""

    triggers: int
    passed: int
    failed: int
    rework: int
    errors: int
    no_reads: int
    timeouts: int
    late: int  # the verdict came after the PLC had been given the gateway's FAIL / TIMEOUT: the line overloaded
    cycle_min_ms: float | None
    cycle_mean_ms: float | None
    cycle_p99_ms: float | None

    @property
    def yield_pct(self) -> float | None:
        return 100.0 * self.passed / self.triggers if self.triggers else None


def _has_reason(codes: Iterable[str]) -> Any:
    # reason_codes is comma-separated; wrapping it in commas makes each code a whole-word match.
    wrapped = literal(",") + Inspection.reason_codes + literal(",")
    return or_(*(wrapped.like(f"%,{code},%") for code in codes))


def _scope(query: Any, line: str, stations: tuple[str, ...], start: datetime, end: datetime) -> Any:
    # The stations named, so the (line, station, decided_at) index takes the range for each.
    return query.where(
        Inspection.line == line,
        Inspection.station.in_(stations),
        Inspection.decided_at >= start,
        Inspection.decided_at < end,
    )


def counters(engine: Engine, line: str, stations: tuple[str, ...], start: datetime, end: datetime) -> Counters:
    """The counts of `stations` (one, or the line's every station) in [start, end)."""

    def count_if(condition: Any) -> Any:
        return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)

    totals = _scope(
        select(
            func.count().label("triggers"),
            count_if(Inspection.verdict == "PASS").label("passed"),
            count_if(Inspection.verdict == "FAIL").label("failed"),
            count_if(Inspection.verdict == "REWORK").label("rework"),
            count_if(Inspection.verdict == "ERROR").label("errors"),
            count_if(_has_reason(NO_READ_REASONS)).label("no_reads"),
            count_if(_has_reason(TIMEOUT_REASONS)).label("timeouts"),
            count_if(Inspection.plc_verdict.is_not(None) & (Inspection.plc_verdict != Inspection.verdict)).label(
                "late"
            ),
            func.min(Inspection.total_ms).label("cycle_min_ms"),
            func.avg(cast(Inspection.total_ms, Float)).label("cycle_mean_ms"),
        ),
        line,
        stations,
        start,
        end,
    )
    with engine.connect() as conn:
        row = dict(conn.execute(totals).one()._mapping)
        p99 = None
        if row["triggers"]:
            # Nearest rank: the smallest cycle time at or above 99 % of the period's parts.
            rank = math.ceil(0.99 * row["triggers"]) - 1
            p99 = conn.execute(
                _scope(select(Inspection.total_ms), line, stations, start, end)
                .order_by(Inspection.total_ms)
                .offset(rank)
                .limit(1)
            ).scalar()
    return Counters(
        **{k: (int(v) if k not in {"cycle_min_ms", "cycle_mean_ms"} else v) for k, v in row.items()}, cycle_p99_ms=p99
    )


def _defects_of(conn: Any, ids: list[str]) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {i: [] for i in ids}
    if ids:
        table = Defect.__table__
        for row in conn.execute(select(*table.c).where(table.c.inspection_id.in_(ids)).order_by(table.c.id)):
            found[row.inspection_id].append(dict(row._mapping))
    return found


_TILE = (
    Inspection.inspection_id,
    Inspection.station,
    Inspection.verdict,
    Inspection.reason_codes,
    Inspection.serial,
    Inspection.decided_at,
    Inspection.image_width,
    Inspection.image_height,
    Inspection.recipe_id,
    Inspection.recipe_version,
    Inspection.model_id,
    Inspection.model_version,
    Inspection.total_ms,
)


def latest_parts(engine: Engine, line: str, stations: Iterable[str]) -> list[PartView]:
    """Each station's newest inspection (one indexed look-up a station)."""
    with engine.connect() as conn:
        rows = []
        for station in stations:
            row = conn.execute(
                select(*_TILE)
                .where(Inspection.line == line, Inspection.station == station)
                .order_by(Inspection.decided_at.desc())
                .limit(1)
            ).first()
            if row is not None:
                rows.append(dict(row._mapping))
        defects = _defects_of(conn, [r["inspection_id"] for r in rows])
    return [PartView.from_row(r, defects[r["inspection_id"]]) for r in rows]


_LISTED = (
    Inspection.inspection_id,
    Inspection.decided_at,
    Inspection.station,
    Inspection.serial,
    Inspection.lot,
    Inspection.verdict,
    Inspection.reason_codes,
    Inspection.recipe_version,
    Inspection.model_version,
    Inspection.total_ms,
    Inspection.plc_verdict,
)


def failures(engine: Engine, line: str, stations: Iterable[str], limit: int) -> list[PartView]:
    """The line's last `limit` parts that did not pass, newest first, with their detections.

    Station by station: each walks the (line, station, decided_at) index back from now and stops at `limit`
    failures, where one query over the line would sort every failure the verdict index holds."""
    with engine.connect() as conn:
        rows = []
        for station in stations:
            rows += [
                dict(r._mapping)
                for r in conn.execute(
                    select(*_TILE)
                    .where(Inspection.line == line, Inspection.station == station, Inspection.verdict.in_(FAILED))
                    .order_by(Inspection.decided_at.desc())
                    .limit(limit)
                )
            ]
        rows = sorted(rows, key=lambda r: r["decided_at"], reverse=True)[:limit]
        defects = _defects_of(conn, [r["inspection_id"] for r in rows])
    return [PartView.from_row(r, defects[r["inspection_id"]]) for r in rows]


def search(engine: Engine, text: str, limit: int = SEARCH_LIMIT) -> list[dict[str, Any]]:
    """Inspections whose serial or lot is `text` exactly, newest first: a part's (or a lot's) history."""
    with engine.connect() as conn:
        return [
            dict(r._mapping)
            for r in conn.execute(
                select(*_LISTED)
                .where(or_(Inspection.serial == text, Inspection.lot == text))
                .order_by(Inspection.decided_at.desc())
                .limit(limit)
            )
        ]


def record(engine: Engine, inspection_id: str) -> dict[str, Any] | None:
    """One inspection in full: its row, reasons, defects, codes, images and people's confirmations; None: no such."""
    with engine.connect() as conn:
        found = conn.execute(select(*Inspection.__table__.c).where(Inspection.inspection_id == inspection_id)).first()
        if found is None:
            return None
        row = dict(found._mapping)
        details: dict[str, list[dict[str, Any]]] = {}
        for kind, table, order in (
            ("reasons", InspectionReason, InspectionReason.position),
            ("defects", Defect, Defect.id),
            ("codes", Code, Code.id),
            ("images", InspectionImage, InspectionImage.id),
            ("confirmations", VerdictConfirmation, VerdictConfirmation.id),
        ):
            columns = [c for c in table.__table__.c if c.name != "inspection_id"]
            details[kind] = [
                dict(r._mapping)
                for r in conn.execute(
                    select(*columns).where(table.__table__.c.inspection_id == inspection_id).order_by(order)
                )
            ]
    return {**row, **details}


def image(engine: Engine, inspection_id: str, kinds: tuple[str, ...]) -> dict[str, Any] | None:
    """The inspection's stored image of the first of `kinds` it has (kept or deleted); None when none was stored."""
    with engine.connect() as conn:
        rows = [
            dict(r._mapping)
            for r in conn.execute(
                select(
                    InspectionImage.id,
                    InspectionImage.kind,
                    InspectionImage.uri,
                    InspectionImage.content_type,
                    InspectionImage.deleted_at,
                ).where(InspectionImage.inspection_id == inspection_id, InspectionImage.kind.in_(kinds))
            )
        ]
    rows.sort(key=lambda r: kinds.index(r["kind"]))
    return rows[0] if rows else None
