"""Writing inspections to the MES database exactly once.

JetStream delivers at least once, so every write here is idempotent: a decision
delivered again (a redelivery after a lost ack, a duplicate publish) finds its
inspection row already there and writes nothing, in the same transaction that
would have written its defects and codes.

A decision and its PLC ack come on two streams, in either order, and may be written at
the same moment. Each is first committed on its own (the inspection's rows; the ack's
plc_results row), then merged: one UPDATE copies plc_results into the inspection's
plc_* columns. A merge's statement starts after its own record committed, so whichever
merge starts second sees both records committed: on PostgreSQL's READ COMMITTED as on
SQLite, without a lock, the PLC columns are filled once both are in."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection, Engine, case, exists, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite

from lineguard.services.results.records import InspectionRows, LineFacts, ack_update, decision_rows
from lineguard.services.results.schema import (
    Code,
    Defect,
    Inspection,
    InspectionReason,
    ModelVersion,
    PlcResult,
    RecipeVersion,
)
from lineguard.v1.decision_pb2 import Decision
from lineguard.v1.plc_pb2 import PlcAck

_INSERTS: dict[str, Callable[..., Any]] = {"sqlite": sqlite.insert, "postgresql": postgresql.insert}


def write_decision(
    engine: Engine, decision: Decision, facts: LineFacts | None = None, trace_id: str | None = None
) -> bool:
    """Write `decision` with its defects, codes and reasons in one transaction (and note its model and recipe
    versions), then its PLC columns if its ack came first; False if it was already there. `trace_id`: the part's
    OpenTelemetry trace (from the message's traceparent), None when it is not traced.

    Raises InvalidRecord (a ValueError) for a decision that can never be written,
    and SQLAlchemy's errors when the database cannot be reached (worth retrying)."""
    rows = decision_rows(decision, facts)
    rows.inspection["trace_id"] = trace_id
    return write_rows(engine, rows)


def write_rows(engine: Engine, rows: InspectionRows) -> bool:
    dialect_insert = _dialect_insert(engine)
    # Insert-if-absent on the primary key: a concurrent duplicate waits for the first
    # writer's commit and then inserts nothing, so defects are never written twice.
    # RETURNING (SQLite >= 3.35), not rowcount: psycopg under SQLAlchemy 2.1 reports -1 for this INSERT.
    first = (
        dialect_insert(Inspection)
        .values(rows.inspection)
        .on_conflict_do_nothing(index_elements=[Inspection.inspection_id])
        .returning(Inspection.inspection_id)
    )
    with engine.begin() as conn:
        new = conn.execute(first).first() is not None
        if new and rows.defects:
            conn.execute(insert(Defect), rows.defects)
        if new and rows.codes:
            conn.execute(insert(Code), rows.codes)
        if new and rows.reasons:
            conn.execute(insert(InspectionReason), rows.reasons)
        # Model before recipe, in every transaction: two writers lock the two rows in the same order.
        if new and rows.model_version is not None:
            _note_version(conn, ModelVersion, rows.model_version, rows.inspection["decided_at"])
        if new and rows.recipe_version is not None:
            _note_version(conn, RecipeVersion, rows.recipe_version, rows.inspection["decided_at"])
    # A duplicate merges too: the first delivery may have stopped between its commit and its merge.
    with engine.begin() as conn:
        _merge_plc_result(conn, rows.inspection_id)
    return new


def _note_version(
    conn: Connection, table: type[ModelVersion] | type[RecipeVersion], row: dict[str, Any], used_at: Any
) -> None:
    """Insert the version seen, or widen its first / last use to take `used_at` in; a sha256 once noted stays."""
    statement = _dialect_insert(conn.engine)(table).values(**row, first_used_at=used_at, last_used_at=used_at)
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


def record_plc_ack(engine: Engine, ack: PlcAck) -> bool:
    """Note what the PLC was given and when; False when the inspection has no row yet (its decision fills it in).

    The first delivery recorded stays: the same ack again, or an ack of a later
    retry, changes nothing. An ack that could not be delivered records the verdict
    that was attempted and leaves plc_delivered_at NULL, until one that was delivered."""
    change = ack_update(ack)
    report = _dialect_insert(engine)(PlcResult).values(
        inspection_id=change.inspection_id, plc_verdict=change.plc_verdict, plc_delivered_at=change.plc_delivered_at
    )
    report = report.on_conflict_do_update(
        index_elements=[PlcResult.inspection_id],
        set_=_first_delivery_stays(PlcResult, report.excluded.plc_verdict, report.excluded.plc_delivered_at),
    )
    with engine.begin() as conn:
        conn.execute(report)
    with engine.begin() as conn:
        return _merge_plc_result(conn, change.inspection_id)


def _merge_plc_result(conn: Connection, inspection_id: str) -> bool:
    """Copy the inspection's plc_results row into its plc_* columns; False when the inspection has no row.

    One statement, in a transaction of its own (see the module's docstring), whose
    RETURNING alone decides: the row it names is the row it wrote."""
    reported = PlcResult.inspection_id == inspection_id
    merged = conn.execute(
        update(Inspection)
        .where(Inspection.inspection_id == inspection_id, exists().where(reported))
        .values(
            _first_delivery_stays(
                Inspection,
                select(PlcResult.plc_verdict).where(reported).scalar_subquery(),
                select(PlcResult.plc_delivered_at).where(reported).scalar_subquery(),
            )
        )
        .returning(Inspection.inspection_id)
    ).first()
    return merged is not None


def _first_delivery_stays(
    target: type[Inspection] | type[PlcResult], verdict: Any, delivered_at: Any
) -> dict[str, Any]:
    """SET clauses writing `verdict` and `delivered_at` into `target`'s plc columns, unless it records a delivery.

    SET reads the row as it is when written (on PostgreSQL, the version a concurrent
    writer committed meanwhile), so a delivery recorded is never replaced, not even by
    a merge that read an older report (one not yet delivered)."""
    delivered = target.plc_delivered_at.is_not(None)
    return {
        "plc_verdict": case((delivered, target.plc_verdict), else_=verdict),
        "plc_delivered_at": func.coalesce(target.plc_delivered_at, delivered_at),
    }


def _dialect_insert(engine: Engine) -> Callable[..., Any]:
    try:
        return _INSERTS[engine.dialect.name]
    except KeyError:
        raise NotImplementedError(
            f"the MES database supports {', '.join(_INSERTS)}, not {engine.dialect.name}"
        ) from None
