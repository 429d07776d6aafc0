"""Writing inspections to the MES database exactly once.

JetStream delivers at least once, so every write here is idempotent: a decision
delivered again (a redelivery after a lost ack, a duplicate publish) finds its
inspection row already there and writes nothing, in the same transaction that
would have written its defects and codes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine, exists, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite

from lineguard.services.results.records import InspectionRows, ack_update, decision_rows
from lineguard.services.results.schema import Code, Defect, Inspection
from lineguard.v1.decision_pb2 import Decision
from lineguard.v1.plc_pb2 import PlcAck

_INSERTS: dict[str, Callable[..., Any]] = {"sqlite": sqlite.insert, "postgresql": postgresql.insert}


def write_decision(engine: Engine, decision: Decision) -> bool:
    """Write `decision` with its defects and codes in one transaction; False if it was already there.

    Raises InvalidRecord (a ValueError) for a decision that can never be written,
    and SQLAlchemy's errors when the database cannot be reached (worth retrying)."""
    return write_rows(engine, decision_rows(decision))


def write_rows(engine: Engine, rows: InspectionRows) -> bool:
    try:
        dialect_insert = _INSERTS[engine.dialect.name]
    except KeyError:
        raise NotImplementedError(f"the MES database supports {', '.join(_INSERTS)}, not {engine.dialect.name}") \
            from None
    # Insert-if-absent on the primary key: a concurrent duplicate waits for the first
    # writer's commit and then inserts nothing, so defects are never written twice.
    # RETURNING (SQLite >= 3.35), not rowcount: psycopg under SQLAlchemy 2.1 reports -1 for this INSERT.
    first = (dialect_insert(Inspection).values(rows.inspection)
             .on_conflict_do_nothing(index_elements=[Inspection.inspection_id])
             .returning(Inspection.inspection_id))
    with engine.begin() as conn:
        if conn.execute(first).first() is None:
            return False
        if rows.defects:
            conn.execute(insert(Defect), rows.defects)
        if rows.codes:
            conn.execute(insert(Code), rows.codes)
    return True


def record_plc_ack(engine: Engine, ack: PlcAck) -> bool:
    """Note what the PLC was given and when; False when the inspection has no row (yet).

    The first delivery recorded stays: the same ack again, or an ack of a later
    retry, changes nothing. An ack that could not be delivered records the verdict
    that was attempted and leaves plc_delivered_at NULL."""
    change = ack_update(ack)
    values: dict[str, Any] = {"plc_verdict": change.plc_verdict}
    if change.plc_delivered_at is not None:
        values["plc_delivered_at"] = change.plc_delivered_at
    with engine.begin() as conn:
        updated = conn.execute(
            update(Inspection)
            .where(Inspection.inspection_id == change.inspection_id, Inspection.plc_delivered_at.is_(None))
            .values(values)
        ).rowcount
        if updated:
            return True
        return bool(conn.execute(select(exists().where(Inspection.inspection_id == change.inspection_id))).scalar())
