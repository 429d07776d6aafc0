"""Writing many decisions at once: one transaction for a batch's rows, one for its PLC merge, idempotent on the id.

A batch is written as one decision is (store.py's docstring), only for many rows at a time:
- first the rows, in one transaction: the inspections inserted if absent (`ON CONFLICT DO NOTHING ... RETURNING`
  names the new ones), then the defects, codes and reasons of the new ones only, then each model and recipe
  version seen, widened once for the whole batch;
- then, committed, one merge of the whole batch's PLC results into its rows.
A decision delivered again finds its row and writes nothing, in a batch or alone.

On PostgreSQL the children go in by COPY (psycopg's copy protocol): the inspections need the conflict check,
their children do not (they belong to inspections this very transaction made), and COPY is what the database
takes fastest. SQLite takes them as one executemany.

A row the database refuses (a constraint or a value that `decision_rows` could not check) fails its whole
transaction: the batch is then split in halves, each written again, so the good rows are written and the
bad one comes back with the database's reason (`Refused`), to be dead-lettered. A database that cannot be
reached is not split: the error is raised for the batch, which is retried whole (nothing was committed)."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, date, datetime
from typing import Any

import psycopg
from sqlalchemy import JSON, Connection, Engine, Table, case, exists, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, StatementError

from lineguard.services.results.records import InspectionRows
from lineguard.services.results.schema import (
    Base,
    Code,
    Defect,
    Inspection,
    InspectionReason,
    ModelVersion,
    PlcResult,
    RecipeVersion,
    YieldHour,
)

_INSERTS: dict[str, Callable[..., Any]] = {"sqlite": sqlite.insert, "postgresql": postgresql.insert}
# SQLite binds at most 32766 values a statement; an inspection row has about 30.
_SQLITE_ROWS_A_STATEMENT = 500


class Refused(ValueError):
    """The database refused this record (its reason in the text); the rest of its batch was written."""


Outcome = bool | Refused  # True: written now; False: it was already there; Refused: never writable


def write_batch(engine: Engine, batch: Sequence[InspectionRows]) -> list[Outcome]:
    """Write `batch`, returning each one's outcome in order (an inspection twice in it: the second is a duplicate).

    Raises SQLAlchemy's errors when the database cannot be reached (nothing of the batch is committed then)."""
    outcomes: list[Outcome | None] = [None] * len(batch)
    first: dict[str, int] = {}
    for i, rows in enumerate(batch):
        if first.setdefault(rows.inspection_id, i) != i:
            outcomes[i] = False  # one statement would insert it once but mark both new: its children twice
    _write_or_split(engine, [(i, rows) for i, rows in enumerate(batch) if outcomes[i] is None], outcomes)
    written = [i for i, o in enumerate(outcomes) if o is not None and not isinstance(o, Refused)]
    if written:
        # A duplicate merges too: the first delivery may have stopped between its commit and its merge.
        with engine.begin() as conn:
            merge_plc_results(conn, [batch[i].inspection_id for i in written])
    return [o for o in outcomes if o is not None]


def _write_or_split(engine: Engine, part: list[tuple[int, InspectionRows]], outcomes: list[Outcome | None]) -> None:
    try:
        with engine.begin() as conn:
            new = _write_rows(conn, [rows for _, rows in part])
    except StatementError as exc:
        # A constraint, a value the column cannot hold, a value its type cannot bind: this batch's rows. Anything
        # else (the database away, the connection cut) is not, and nothing of the batch was committed.
        if isinstance(exc, DBAPIError) and (
            exc.connection_invalidated or not isinstance(exc, IntegrityError | DataError)
        ):
            raise
        if len(part) == 1:
            outcomes[part[0][0]] = Refused(f"the database refused inspection {part[0][1].inspection_id}: {_why(exc)}")
            return
        half = len(part) // 2
        _write_or_split(engine, part[:half], outcomes)
        _write_or_split(engine, part[half:], outcomes)
        return
    for i, rows in part:
        outcomes[i] = rows.inspection_id in new


def _why(exc: Exception) -> str:
    orig = getattr(exc, "orig", None) or exc
    return " ".join(str(orig).split())[:500]


def dialect_insert(engine: Engine) -> Callable[..., Any]:
    """The dialect's INSERT (with ON CONFLICT); NotImplementedError naming the databases supported."""
    try:
        return _INSERTS[engine.dialect.name]
    except KeyError:
        raise NotImplementedError(
            f"the MES database supports {', '.join(_INSERTS)}, not {engine.dialect.name}"
        ) from None


def _write_rows(conn: Connection, batch: list[InspectionRows]) -> set[str]:
    """Insert the batch's inspections that are not there yet with their children; the ids inserted."""
    dialect = conn.engine.dialect.name
    insert_absent = dialect_insert(conn.engine)
    now = datetime.now(UTC)
    inspections = [{"created_at": now, **rows.inspection} for rows in batch]
    new: set[str] = set()
    if dialect == "postgresql":
        new.update(_insert_absent_json(conn, inspections))
    for start in range(0, len(inspections), _SQLITE_ROWS_A_STATEMENT) if dialect == "sqlite" else ():
        # RETURNING (SQLite >= 3.35), not rowcount: psycopg under SQLAlchemy 2.1 reports -1 for this INSERT.
        statement = (
            insert_absent(Inspection)
            .values(inspections[start : start + _SQLITE_ROWS_A_STATEMENT])
            .on_conflict_do_nothing(index_elements=[Inspection.inspection_id])
            .returning(Inspection.inspection_id)
        )
        new.update(conn.execute(statement).scalars())
    fresh = [rows for rows in batch if rows.inspection_id in new]
    children = (
        (_table(Defect), [r for rows in fresh for r in rows.defects]),
        (_table(Code), [r for rows in fresh for r in rows.codes]),
        (_table(InspectionReason), [r for rows in fresh for r in rows.reasons]),
    )
    for table, rows_of in children:
        if not rows_of:
            continue
        if dialect == "postgresql":
            _copy(conn, table, rows_of)
        else:
            conn.execute(insert(table), rows_of)
    # Model before recipe, each in key order, in every transaction: two writers lock the same rows in one order.
    versions: tuple[tuple[type[ModelVersion] | type[RecipeVersion], list[Any]], ...] = (
        (ModelVersion, [(rows.model_version, rows.inspection["decided_at"]) for rows in fresh]),
        (RecipeVersion, [(rows.recipe_version, rows.inspection["decided_at"]) for rows in fresh]),
    )
    for model, seen in versions:
        for row in _versions(seen):
            note_version(conn, model, row)
    # Last, so the hour's row (every batch of the hour updates it) is locked only until the commit just after.
    hours = yield_hours(rows.inspection for rows in fresh)
    if hours:
        count_yield(conn, hours)
    return new


_COUNTED = {"PASS": "passed", "FAIL": "failed", "REWORK": "rework", "ERROR": "errors"}


def yield_hours(inspections: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """yield_hours' rows for these (new) inspections: their parts by verdict for each key, in key order (so two
    writers lock the rows they share in one order)."""
    found: dict[tuple[datetime, str, str, str], dict[str, Any]] = {}
    for inspection in inspections:
        verdict = _COUNTED.get(inspection["verdict"])
        if verdict is None:
            continue  # refused by the verdict's CHECK with the insert that holds it: nothing to count
        day, shift = inspection["shift_day"], inspection["shift"]
        slot = "" if shift is None else f"{day.isoformat()} {shift}"
        hour = inspection["decided_at"].astimezone(UTC).replace(minute=0, second=0, microsecond=0)
        key = (hour, inspection["line"], inspection["station"], slot)
        row = found.get(key)
        if row is None:
            row = found[key] = {
                "hour": hour,
                "line": key[1],
                "station": key[2],
                "slot": slot,
                "shift_day": day,
                "shift": shift,
                "parts": 0,
                **dict.fromkeys(_COUNTED.values(), 0),
            }
        row["parts"] += 1
        row[verdict] += 1
    return [found[k] for k in sorted(found)]


def count_yield(conn: Connection, hours: list[dict[str, Any]]) -> None:
    """Add `hours` (yield_hours' rows) to the counts there, in the connection's transaction."""
    statement = dialect_insert(conn.engine)(YieldHour).values(hours)
    statement = statement.on_conflict_do_update(
        index_elements=list(YieldHour.__table__.primary_key),
        set_={
            name: getattr(YieldHour, name) + getattr(statement.excluded, name) for name in ("parts", *_COUNTED.values())
        },
    )
    conn.execute(statement)


def _table(model: type[Base]) -> Table:
    """A mapped class's table, as a Table (the declarative base types `__table__` as any FROM clause)."""
    table = model.__table__
    assert isinstance(table, Table)
    return table


@functools.cache
def _json_insert(columns: tuple[str, ...]) -> str:
    """`INSERT INTO inspections ... SELECT FROM json_populate_recordset(the batch as one JSON array) ON CONFLICT
    DO NOTHING RETURNING id`.

    One parameter, whatever the batch's size: SQLAlchemy's multi-row VALUES binds one parameter a value (compiling
    15,000 of them cost more than the database's work), and psycopg's dumping of one array a column in Python cost
    more than the C JSON encoder's one document (benchmarks/results.py). Each value takes its column's type as the
    column's input would: a string too long for its varchar(n) is refused, never cut; JSON null is SQL NULL."""
    table = _table(Inspection)
    listed = ", ".join(columns)
    return (
        f"INSERT INTO {table.name} ({listed}) SELECT {listed} "
        f"FROM json_populate_recordset(NULL::{table.name}, %s::json) "
        "ON CONFLICT (inspection_id) DO NOTHING RETURNING inspection_id"
    )


def _json_value(value: Any) -> str:
    if isinstance(value, datetime | date):
        return value.isoformat()  # a datetime's with its UTC offset: timestamptz reads it as meant
    raise TypeError(f"{type(value).__name__} {value!r} has no JSON form for the inspections insert")


def _insert_absent_json(conn: Connection, inspections: list[dict[str, Any]]) -> list[str]:
    statement = _json_insert(tuple(inspections[0]))
    document = json.dumps(inspections, default=_json_value, separators=(",", ":"))
    return [row[0] for row in _raw(conn, statement, lambda cursor: cursor.execute(statement, (document,)).fetchall())]


def _raw(conn: Connection, statement: str, run: Callable[[psycopg.Cursor[Any]], Any]) -> Any:
    """Run `run` on a cursor of the connection's own psycopg connection, in its transaction; psycopg's errors
    come out as SQLAlchemy's (IntegrityError, DataError, OperationalError ...), a cut connection invalidated."""
    raw = conn.connection.driver_connection
    assert isinstance(raw, psycopg.Connection)
    try:
        with raw.cursor() as cursor:
            return run(cursor)
    except psycopg.Error as exc:
        invalidated = raw.closed or raw.broken
        if invalidated:
            conn.invalidate(exc)
        raise DBAPIError.instance(
            statement, None, exc, psycopg.Error, connection_invalidated=invalidated, dialect=conn.dialect
        ) from exc


def _copy(conn: Connection, table: Table, rows: list[dict[str, Any]]) -> None:
    """COPY `rows` into `table` inside the connection's transaction; psycopg's errors as SQLAlchemy's."""
    columns = list(rows[0])
    as_json = [isinstance(table.c[name].type, JSON) for name in columns]
    statement = f"COPY {table.name} ({', '.join(columns)}) FROM STDIN"

    def run(cursor: psycopg.Cursor[Any]) -> None:
        with cursor.copy(statement) as copy:
            for row in rows:
                copy.write_row(
                    [
                        json.dumps(value) if js and value is not None else value
                        for value, js in zip(row.values(), as_json, strict=True)
                    ]
                )

    _raw(conn, statement, run)


def _versions(seen: Iterable[tuple[dict[str, Any] | None, datetime]]) -> list[dict[str, Any]]:
    """Each version once, with the earliest and latest use the batch has of it, in key order."""
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for row, used_at in seen:
        if row is None:
            continue
        key = tuple(v for k, v in row.items() if k != "sha256")
        assert len(key) == 2
        have = found.get(key)
        if have is None:
            found[key] = {**row, "first_used_at": used_at, "last_used_at": used_at}
        else:
            have["sha256"] = have["sha256"] or row["sha256"]
            have["first_used_at"] = min(have["first_used_at"], used_at)
            have["last_used_at"] = max(have["last_used_at"], used_at)
    return [found[k] for k in sorted(found)]


def note_version(conn: Connection, table: type[ModelVersion] | type[RecipeVersion], row: dict[str, Any]) -> None:
    """Insert the version seen, or widen its first / last use to take the row's in; a sha256 once noted stays."""
    statement = dialect_insert(conn.engine)(table).values(**row)
    excluded = statement.excluded
    statement = statement.on_conflict_do_update(
        index_elements=list(table.__table__.primary_key),
        set_={
            "sha256": func.coalesce(table.sha256, excluded.sha256),
            "first_used_at": case(
                (excluded.first_used_at < table.first_used_at, excluded.first_used_at), else_=table.first_used_at
            ),
            "last_used_at": case(
                (excluded.last_used_at > table.last_used_at, excluded.last_used_at), else_=table.last_used_at
            ),
        },
    )
    conn.execute(statement)


def merge_plc_results(conn: Connection, inspection_ids: Sequence[str]) -> set[str]:
    """Copy each inspection's plc_results row into its plc_* columns; the ids of the rows written.

    One statement, in a transaction of its own (see store.py's docstring), whose RETURNING alone decides: the
    rows it names are the rows it wrote. An id without an inspection row, or without a report, is not named."""
    reported = PlcResult.inspection_id == Inspection.inspection_id
    merged = conn.execute(
        update(Inspection)
        .where(Inspection.inspection_id.in_(inspection_ids), exists().where(reported))
        .values(
            first_delivery_stays(
                Inspection,
                select(PlcResult.plc_verdict).where(reported).scalar_subquery(),
                select(PlcResult.plc_delivered_at).where(reported).scalar_subquery(),
            )
        )
        .returning(Inspection.inspection_id)
    )
    return set(merged.scalars())


def first_delivery_stays(target: type[Inspection] | type[PlcResult], verdict: Any, delivered_at: Any) -> dict[str, Any]:
    """SET clauses writing `verdict` and `delivered_at` into `target`'s plc columns, unless it records a delivery.

    SET reads the row as it is when written (on PostgreSQL, the version a concurrent
    writer committed meanwhile), so a delivery recorded is never replaced, not even by
    a merge that read an older report (one not yet delivered)."""
    delivered = target.plc_delivered_at.is_not(None)
    return {
        "plc_verdict": case((delivered, target.plc_verdict), else_=verdict),
        "plc_delivered_at": func.coalesce(target.plc_delivered_at, delivered_at),
    }
