"""Writing many decisions at once: one transaction for a batch's rows, one for its PLC merge, idempotent on the id.

A batch is written as one decision is (store.py's docstring), only for many rows at a time:
- first the rows, in one transaction: the inspections inserted if absent (`ON CONFLICT DO NOTHING ... RETURNING`
  names the new ones), then the defects, codes and reasons of the new ones only, then each model and recipe
  version seen, widened once for the whole batch;
- then, committed, one merge of the whole batch's PLC results into its rows.
A decision delivered again finds its row and writes nothing, in a batch or alone.

On PostgreSQL the rows are one statement: the inspections as one JSON document, inserted if absent, and
in the same statement their defects, codes and reasons (a JSON document each) of the inspections it inserted
only; one round trip, and the C JSON encoder's work instead of a COPY's row at a time in Python. SQLite takes
the children as one executemany.

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
from sqlalchemy import Connection, Engine, Table, bindparam, case, exists, func, insert, select, update
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
_SQLITE_INSERT_ABSENT = (
    sqlite.insert(Inspection)
    .on_conflict_do_nothing(index_elements=[Inspection.inspection_id])
    .returning(Inspection.inspection_id)
)


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
    if written and not _merges_with_rows(engine):
        # A duplicate merges too: the first delivery may have stopped between its commit and its merge.
        with engine.begin() as conn:
            merge_plc_results(conn, [batch[i].inspection_id for i in written])
    return [o for o in outcomes if o is not None]


def _merges_with_rows(engine: Engine) -> bool:
    """Whether the PLC merge goes in the rows' own transaction: on SQLite, whose writers take turns (the first
    statement of each takes the one write lock until its commit), so a merge there sees every ack committed
    before it, and an ack committed after it merges itself. A transaction less a decision at a low rate, where
    each batch holds one. PostgreSQL's writers overlap: its merge waits for its own commit (store.py)."""
    return engine.dialect.name == "sqlite"


def _write_or_split(engine: Engine, part: list[tuple[int, InspectionRows]], outcomes: list[Outcome | None]) -> None:
    try:
        with engine.begin() as conn:
            new = _write_rows(conn, [rows for _, rows in part])
            if _merges_with_rows(engine):
                merge_plc_results(conn, [rows.inspection_id for _, rows in part])
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
    now = datetime.now(UTC)
    inspections = [{"created_at": now, **rows.inspection} for rows in batch]
    new: set[str] = set()
    if dialect == "postgresql":
        # The children of every decision go with the inspections, in the same statement, and the database keeps
        # those of the new ones only: one round trip and one JSON document a table.
        children = [(_table(table), [r for rows in batch for r in getattr(rows, kind)]) for table, kind in _CHILDREN]
        new.update(_insert_absent_json(conn, inspections, [(t, r) for t, r in children if r]))
    if dialect == "sqlite":
        # RETURNING (SQLite >= 3.35) names the new ones. One statement built once, its rows as parameters:
        # SQLAlchemy's "insertmanyvalues" sends them as multi-row VALUES within SQLite's bound on parameters,
        # compiled once, where a statement with the rows as its values was compiled anew for every batch (most
        # of a decision's CPU at a low rate, one decision a batch).
        new.update(conn.execute(_SQLITE_INSERT_ABSENT, inspections).scalars())
    fresh = [rows for rows in batch if rows.inspection_id in new]
    for table, kind in _CHILDREN if dialect == "sqlite" else ():
        rows_of = [r for rows in fresh for r in getattr(rows, kind)]
        if rows_of:
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
    conn.execute(_yield_upsert(dialect_insert(conn.engine)), hours)


# The writer's fixed statements, built once a dialect (keyed by its insert, as store.py's ack upsert):
# building one (and its cache key) cost more CPU than running it (a decision's write at a low rate, where each
# batch holds one).
@functools.cache
def _yield_upsert(insert: Callable[..., Any]) -> Any:
    statement = insert(YieldHour)
    return statement.on_conflict_do_update(
        index_elements=list(YieldHour.__table__.primary_key),
        set_={
            name: getattr(YieldHour, name) + getattr(statement.excluded, name) for name in ("parts", *_COUNTED.values())
        },
    )


def _table(model: type[Base]) -> Table:
    """A mapped class's table, as a Table (the declarative base types `__table__` as any FROM clause)."""
    table = model.__table__
    assert isinstance(table, Table)
    return table


_CHILDREN = ((Defect, "defects"), (Code, "codes"), (InspectionReason, "reasons"))


@functools.cache
def _json_insert(columns: tuple[str, ...], children: tuple[tuple[str, tuple[str, ...]], ...]) -> str:
    """`INSERT INTO inspections ... SELECT FROM json_populate_recordset(the batch as one JSON array) ON CONFLICT
    DO NOTHING RETURNING id`, and in the same statement each child table's rows (`children`: table, columns) of
    the inspections it inserted, from a JSON array each.

    One parameter a table, whatever the batch's size: SQLAlchemy's multi-row VALUES binds one parameter a value
    (compiling 15,000 of them cost more than the database's work), psycopg's dumping of one array a column in
    Python, or of a COPY's row at a time, cost more than the C JSON encoder's one document (benchmarks/results.py).
    Each value takes its column's type as the column's input would: a string too long for its varchar(n) is
    refused, never cut; JSON null is SQL NULL. The children's foreign keys are checked at the statement's end,
    when their inspections are in."""
    table = _table(Inspection)
    listed = ", ".join(columns)
    statement = (
        f"WITH new AS (INSERT INTO {table.name} ({listed}) SELECT {listed} "
        f"FROM json_populate_recordset(NULL::{table.name}, %s::json) "
        "ON CONFLICT (inspection_id) DO NOTHING RETURNING inspection_id)"
    )
    for i, (name, child_columns) in enumerate(children):
        listed = ", ".join(child_columns)
        statement += (
            f", child{i} AS (INSERT INTO {name} ({listed}) SELECT {listed} "
            f"FROM json_populate_recordset(NULL::{name}, %s::json) "
            "WHERE inspection_id IN (SELECT inspection_id FROM new))"
        )
    return statement + " SELECT inspection_id FROM new"


def _json_value(value: Any) -> str:
    if isinstance(value, datetime | date):
        return value.isoformat()  # a datetime's with its UTC offset: timestamptz reads it as meant
    raise TypeError(f"{type(value).__name__} {value!r} has no JSON form for the inspections insert")


_dumps = json.JSONEncoder(default=_json_value, separators=(",", ":")).encode


def _insert_absent_json(
    conn: Connection, inspections: list[dict[str, Any]], children: list[tuple[Table, list[dict[str, Any]]]]
) -> list[str]:
    statement = _json_insert(tuple(inspections[0]), tuple((t.name, tuple(rows[0])) for t, rows in children))
    documents = (_dumps(inspections), *(_dumps(rows) for _, rows in children))
    return [row[0] for row in _raw(conn, statement, lambda cursor: cursor.execute(statement, documents).fetchall())]


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
    conn.execute(_version_upsert(dialect_insert(conn.engine), table), row)


@functools.cache
def _version_upsert(insert: Callable[..., Any], table: type[ModelVersion] | type[RecipeVersion]) -> Any:
    statement = insert(table)
    excluded = statement.excluded
    return statement.on_conflict_do_update(
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


def merge_plc_results(conn: Connection, inspection_ids: Sequence[str]) -> set[str]:
    """Copy each inspection's plc_results row into its plc_* columns; the ids of the rows written.

    One statement, in a transaction of its own (see store.py's docstring), whose RETURNING alone decides: the
    rows it names are the rows it wrote. An id without an inspection row, or without a report, is not named."""
    return set(conn.execute(_MERGE, {"ids": list(inspection_ids)}).scalars())


def _merge() -> Any:
    reported = PlcResult.inspection_id == Inspection.inspection_id
    return (
        update(Inspection)
        .where(Inspection.inspection_id.in_(bindparam("ids", expanding=True)), exists().where(reported))
        .values(
            first_delivery_stays(
                Inspection,
                select(PlcResult.plc_verdict).where(reported).scalar_subquery(),
                select(PlcResult.plc_delivered_at).where(reported).scalar_subquery(),
            )
        )
        .returning(Inspection.inspection_id)
    )


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


_MERGE = _merge()
