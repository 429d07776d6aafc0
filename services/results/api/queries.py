"""The API's questions as SQL: plain functions over an engine, the same on SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import binascii
import functools
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    Select,
    String,
    and_,
    bindparam,
    case,
    cast,
    exists,
    func,
    literal_column,
    or_,
    select,
    tuple_,
)
from sqlalchemy.dialects.postgresql import aggregate_order_by
from sqlalchemy.sql import ColumnElement

from lineguard.services.results.api.filters import AggregateFilters, BoundedRange, Bucket, InspectionFilters, TimeRange
from lineguard.services.results.schema import Code, Defect, Inspection, InspectionImage, InspectionReason, YieldHour

SUMMARY = (
    Inspection.inspection_id,
    Inspection.decided_at,
    Inspection.triggered_at,
    Inspection.line,
    Inspection.station,
    Inspection.serial,
    Inspection.part_id,
    Inspection.lot,
    Inspection.product,
    Inspection.shift_day,
    Inspection.shift,
    Inspection.verdict,
    Inspection.reason_codes,
    Inspection.recipe_id,
    Inspection.recipe_version,
    Inspection.model_id,
    Inspection.model_version,
    Inspection.plc_verdict,
    Inspection.plc_delivered_at,
    Inspection.total_ms,
)


class BadCursor(ValueError):
    pass


def encode_cursor(decided_at: datetime, inspection_id: str) -> str:
    raw = json.dumps([decided_at.isoformat(), inspection_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        decided_at, inspection_id = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        return datetime.fromisoformat(decided_at), str(inspection_id)
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
        raise BadCursor("cursor: not a next_cursor this API gave") from None


def _in_range(query: Select, when: TimeRange | BoundedRange) -> Select:
    if when.start is not None:
        query = query.where(Inspection.decided_at >= when.start)
    if when.end is not None:
        query = query.where(Inspection.decided_at < when.end)
    return query


def filtered(filters: InspectionFilters) -> Select:
    query = _in_range(select(*SUMMARY), filters)
    for name in ("line", "station", "verdict", "serial", "lot", "product", "shift", "model_version", "recipe_version"):
        value = getattr(filters, name)
        if value is not None:
            query = query.where(getattr(Inspection, name) == value)
    if filters.reason is not None:
        query = query.where(
            exists().where(
                InspectionReason.inspection_id == Inspection.inspection_id,
                InspectionReason.reason_code == filters.reason,
            )
        )
    return query


def inspections_page(engine: Engine, filters: InspectionFilters) -> tuple[list[dict[str, Any]], str | None]:
    """One page of inspections in decided_at order, and the cursor of the next (None: the last page)."""
    query = filtered(filters)
    if filters.cursor is not None:
        after = decode_cursor(filters.cursor)
        query = query.where(
            or_(
                Inspection.decided_at > after[0],
                and_(Inspection.decided_at == after[0], Inspection.inspection_id > after[1]),
            )
        )
    query = query.order_by(Inspection.decided_at, Inspection.inspection_id).limit(filters.limit + 1)
    with engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(query)]
    if len(rows) <= filters.limit:
        return rows, None
    last = rows[filters.limit - 1]
    return rows[: filters.limit], encode_cursor(last["decided_at"], last["inspection_id"])


def iter_inspections(engine: Engine, when: TimeRange | BoundedRange, chunk: int = 1000) -> Iterator[dict[str, Any]]:
    """Every inspection in the range, in decided_at order, read `chunk` at a time (a stream, not a list)."""
    after: tuple[datetime, str] | None = None
    while True:
        query = _in_range(select(*SUMMARY), when)
        if after is not None:
            query = query.where(tuple_(Inspection.decided_at, Inspection.inspection_id) > tuple_(*after))
        with engine.connect() as conn:
            rows = [
                dict(r._mapping)
                for r in conn.execute(query.order_by(Inspection.decided_at, Inspection.inspection_id).limit(chunk))
            ]
        yield from rows
        if len(rows) < chunk:
            return
        after = (rows[-1]["decided_at"], rows[-1]["inspection_id"])


def images_of(conn: Connection, ids: list[str]) -> dict[str, list[dict[str, Any]]]:
    """The images kept of these inspections, by inspection, oldest first, each with its API link (`href`; None once
    retention deleted it)."""
    table = InspectionImage.__table__
    found: dict[str, list[dict[str, Any]]] = {i: [] for i in ids}
    if ids:
        for row in conn.execute(select(table).where(table.c.inspection_id.in_(ids)).order_by(table.c.id)):
            image = dict(row._mapping)
            image["href"] = None if row.deleted_at is not None else f"/v1/images/{row.id}"
            found[image["inspection_id"]].append(image)
    return found


def part_history(engine: Engine, serial: str) -> list[dict[str, Any]]:
    """Every inspection of `serial`, oldest first, each with its reasons, defects, codes and images."""
    return _records(engine, "serial", serial)


def inspection_record(engine: Engine, inspection_id: str) -> dict[str, Any] | None:
    """The inspection `inspection_id` as part_history gives each (None: no inspection has that id)."""
    found = _records(engine, "inspection_id", inspection_id)
    return found[0] if found else None


def _records(engine: Engine, key: str, value: str) -> list[dict[str, Any]]:
    """The inspections whose `key` column is `value`, oldest first, each with its reasons, defects, codes and images:
    the one way an inspection's whole record is read (a part's history, one inspection by its id).

    Two statements: the inspections with their children as one JSON array each (aggregated by the database in
    the same statement), then their images. Each statement through SQLAlchemy cost more CPU than the database's
    work on it (benchmarks/results.py: five of them were 8 ms of the API's CPU a history on PostgreSQL)."""
    with engine.connect() as conn:
        found = [dict(r._mapping) for r in conn.execute(_history_statement(engine.dialect.name, key), {key: value})]
        for row in found:
            for kind in _HISTORY_CHILDREN:
                array = row[kind]
                # PostgreSQL's json comes decoded by psycopg; SQLite's as its text.
                row[kind] = (json.loads(array) if isinstance(array, str) else array) or []
        images = images_of(conn, [r["inspection_id"] for r in found])
    return [{**r, "images": images[r["inspection_id"]]} for r in found]


_HISTORY_CHILDREN = {"reasons": InspectionReason, "defects": Defect, "codes": Code}
_HISTORY_ORDER = {"reasons": InspectionReason.position, "defects": Defect.id, "codes": Code.id}
# The children's JSON columns: embedded as JSON, not as the text SQLite keeps them in.
_JSON_COLUMNS = {"mask", "outline", "quality", "quality_grades"}


def _name(name: str) -> ColumnElement[str]:
    # A key of the JSON built, written into the statement (a column's own name, never input) rather than bound.
    return literal_column(f"'{name}'")


@functools.cache
def _history_statement(dialect: str, key: str) -> Select:
    """The inspections whose `key` column is the bound `key` (SUMMARY and the explanation) and, per inspection, its
    reasons, defects and codes as JSON arrays in their order (the API's fields, no ids): a correlated subquery each,
    by the children's inspection_id indexes."""
    children = []
    for kind, model in _HISTORY_CHILDREN.items():
        columns = [c for c in model.__table__.c if c.name not in ("id", "inspection_id")]
        of_it = model.__table__.c.inspection_id == Inspection.inspection_id
        if dialect == "postgresql":
            item = func.json_build_object(*[v for c in columns for v in (_name(c.name), c)])
            array = func.json_agg(aggregate_order_by(item, _HISTORY_ORDER[kind]))  # NULL: none
            children.append(select(array).where(of_it).scalar_subquery().label(kind))
        else:
            pairs = [(_name(c.name), func.json(c) if c.name in _JSON_COLUMNS else c) for c in columns]
            item = func.json_object(*[v for pair in pairs for v in pair])
            # SQLite 3.40's json_group_array takes no ORDER BY: it aggregates in the ordered subquery's order.
            ordered = (
                select(item.label("item"))
                .where(of_it)
                .order_by(_HISTORY_ORDER[kind])
                .correlate(Inspection)  # a FROM's subquery is not correlated unless told
                .subquery()
            )
            children.append(select(func.json_group_array(func.json(ordered.c.item))).scalar_subquery().label(kind))
    return (
        select(*SUMMARY, Inspection.explanation, *children)
        .where(getattr(Inspection, key) == bindparam(key))
        .order_by(Inspection.decided_at, Inspection.inspection_id)
    )


def _bucket(engine: Engine, by: Bucket, source: Any = Inspection, when: Any = None) -> list[ColumnElement[Any]]:
    """The GROUP BY columns of a bucket, labelled: `bucket` (text), plus `shift` when by shift; of the inspections,
    or of yield_hours (`source`, its `hour` as `when`)."""
    when = Inspection.decided_at if when is None else when
    if by is Bucket.shift:
        return [func.coalesce(cast(source.shift_day, String), "").label("bucket"), source.shift.label("shift")]
    if engine.dialect.name == "postgresql":
        # Grouped as timestamps, written as text after (_labelled): to_char on every row of a day's range cost
        # more than the whole rest of the query.
        unit = "hour" if by is Bucket.hour else "day"
        return [func.date_trunc(unit, func.timezone("UTC", when)).label("bucket")]
    return [func.strftime(_BUCKET_FORMAT[by], when).label("bucket")]


_BUCKET_FORMAT = {Bucket.hour: "%Y-%m-%dT%H:00:00Z", Bucket.day: "%Y-%m-%d"}
_VERDICTS = {"passed": "PASS", "failed": "FAIL", "rework": "REWORK", "errors": "ERROR"}
HOUR = timedelta(hours=1)


def _labelled(rows: list[dict[str, Any]], by: Bucket) -> list[dict[str, Any]]:
    """Each row's bucket as text: PostgreSQL's come as the timestamps they were grouped by (UTC, no zone)."""
    for row in rows:
        if isinstance(row["bucket"], datetime):
            row["bucket"] = row["bucket"].strftime(_BUCKET_FORMAT[by])
    return rows


def _where(
    engine: Engine, query: Select, filters: AggregateFilters, start: datetime | None = None, end: datetime | None = None
) -> Select:
    query = query.where(Inspection.decided_at >= (start or filters.start), Inspection.decided_at < (end or filters.end))
    if filters.line is not None:
        on_line = Inspection.line == filters.line
        # SQLite without statistics takes the (line, station, decided_at) index for a line alone, and so reads the
        # whole line for an hour's edge; likely() sends it to the decided_at range (EXPLAIN QUERY PLAN).
        query = query.where(func.likely(on_line) if engine.dialect.name == "sqlite" else on_line)
    if filters.station is not None:
        query = query.where(Inspection.station == filters.station)
    return query


def _grouped_yield(engine: Engine, filters: AggregateFilters, start: datetime, end: datetime) -> Select:
    """Parts by verdict per bucket, line and station, counted from each inspection decided in [start, end)."""
    bucket = _bucket(engine, filters.by)
    counts = [func.sum(case((Inspection.verdict == v, 1), else_=0)).label(k) for k, v in _VERDICTS.items()]
    query = select(*bucket, Inspection.line, Inspection.station, func.count().label("parts"), *counts)
    return _where(engine, query, filters, start, end).group_by(*bucket, Inspection.line, Inspection.station)


def _counted_yield(engine: Engine, filters: AggregateFilters, first: datetime, last: datetime) -> Select:
    """The same, of the whole hours [first, last) as the writer counted them (yield_hours)."""
    bucket = _bucket(engine, filters.by, YieldHour, YieldHour.hour)
    sums = [func.sum(getattr(YieldHour, k)).label(k) for k in ("parts", *_VERDICTS)]
    query = select(*bucket, YieldHour.line, YieldHour.station, *sums).where(
        YieldHour.hour >= first, YieldHour.hour < last
    )
    if filters.line is not None:
        query = query.where(YieldHour.line == filters.line)
    if filters.station is not None:
        query = query.where(YieldHour.station == filters.station)
    return query.group_by(*bucket, YieldHour.line, YieldHour.station)


def _hour_at_or_before(at: datetime) -> datetime:
    return at.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def _rows_key(row: dict[str, Any]) -> tuple[Any, ...]:
    shift = row.get("shift")
    return (row["bucket"], shift is None, shift or "", row["line"], row["station"])


def yield_buckets(engine: Engine, filters: AggregateFilters) -> list[dict[str, Any]]:
    """Parts and yield per bucket, line and station: the range's whole UTC hours from yield_hours (the writer's
    counts, a few rows an hour), the part-hours at its two ends from their inspections, added up per bucket. The
    same figures as grouping every inspection of the range (`grouped_yield_buckets`; the tests compare them)."""
    first = _hour_at_or_before(filters.start)
    first = first if first == filters.start else first + HOUR
    last = _hour_at_or_before(filters.end)
    if first < last:
        edges = [(filters.start, first), (last, filters.end)]
    else:
        edges = [(filters.start, filters.end)]
    counted: dict[tuple[Any, ...], dict[str, Any]] = {}
    with engine.connect() as conn:
        results = [conn.execute(_counted_yield(engine, filters, first, last))] if first < last else []
        results += [conn.execute(_grouped_yield(engine, filters, s, e)) for s, e in edges if s < e]
        for result in results:
            for row in _labelled([dict(r._mapping) for r in result], filters.by):
                have = counted.setdefault(_rows_key(row), {**row, "parts": 0, **dict.fromkeys(_VERDICTS, 0)})
                for name in ("parts", *_VERDICTS):
                    have[name] += int(row[name])  # PostgreSQL's sum of bigints is a numeric
    return _with_yield([counted[k] for k in sorted(counted)])


def grouped_yield_buckets(engine: Engine, filters: AggregateFilters) -> list[dict[str, Any]]:
    """What yield_buckets answers, by grouping every inspection of the range (its truth, and the way before 0008)."""
    with engine.connect() as conn:
        found = conn.execute(_grouped_yield(engine, filters, filters.start, filters.end))
        rows = _labelled([dict(r._mapping) for r in found], filters.by)
    return _with_yield(sorted(rows, key=_rows_key))


def _with_yield(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for row in rows:
        row["yield"] = row["passed"] / row["parts"]
    return rows


def pareto_buckets(engine: Engine, filters: AggregateFilters) -> list[dict[str, Any]]:
    bucket = _bucket(engine, filters.by)
    parts = func.count().label("parts")
    query = _where(
        engine,
        select(*bucket, InspectionReason.reason_code, InspectionReason.severity, parts).join(
            Inspection, Inspection.inspection_id == InspectionReason.inspection_id
        ),
        filters,
    ).group_by(*bucket, InspectionReason.reason_code, InspectionReason.severity)
    with engine.connect() as conn:
        rows = [
            dict(r._mapping) for r in conn.execute(query.order_by(*bucket, parts.desc(), InspectionReason.reason_code))
        ]
    return _labelled(rows, filters.by)
