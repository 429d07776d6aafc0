"""Writing inspections to the MES database exactly once.

JetStream delivers at least once, so every write here is idempotent: a decision
delivered again (a redelivery after a lost ack, a duplicate publish) finds its
inspection row already there and writes nothing, in the same transaction that
would have written its defects and codes.

A decision and its PLC ack come on two streams, in either order, and may be written at
the same moment. Each is first committed on its own (the inspection's rows; the ack's
plc_results row), then merged: one UPDATE copies plc_results into the inspection's
plc_* columns. A merge's statement starts after its own record committed, so whichever
merge starts second sees both records committed: on PostgreSQL's READ COMMITTED, without a
lock, the PLC columns are filled once both are in. On SQLite, whose writers take turns on
one write lock, each record's merge goes in its own transaction (batch._merges_with_rows):
whichever commits second merges both."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine

from lineguard.services.results.batch import (
    Refused,
    dialect_insert,
    first_delivery_stays,
    merge_plc_results,
    write_batch,
)
from lineguard.services.results.records import InspectionRows, InvalidRecord, LineFacts, ack_update, decision_rows
from lineguard.services.results.schema import PlcResult
from lineguard.v1.decision_pb2 import Decision
from lineguard.v1.plc_pb2 import PlcAck


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
    """One decision's rows as a batch of one (batch.py): the same statements, the same exactly once."""
    (outcome,) = write_batch(engine, [rows])
    if isinstance(outcome, Refused):
        raise InvalidRecord(str(outcome))
    return outcome


def record_plc_ack(engine: Engine, ack: PlcAck) -> bool:
    """Note what the PLC was given and when; False when the inspection has no row yet (its decision fills it in).

    The first delivery recorded stays: the same ack again, or an ack of a later
    retry, changes nothing. An ack that could not be delivered records the verdict
    that was attempted and leaves plc_delivered_at NULL, until one that was delivered."""
    change = ack_update(ack)
    report = _report(dialect_insert(engine))
    values = {
        "inspection_id": change.inspection_id,
        "plc_verdict": change.plc_verdict,
        "plc_delivered_at": change.plc_delivered_at,
    }
    if engine.dialect.name == "sqlite":
        # One transaction: SQLite's writers take turns (batch._merges_with_rows), so the merge sees every
        # decision committed before this ack, and a decision committed after merges the ack itself.
        with engine.begin() as conn:
            conn.execute(report, values)
            return bool(merge_plc_results(conn, [change.inspection_id]))
    with engine.begin() as conn:
        conn.execute(report, values)
    with engine.begin() as conn:
        return bool(merge_plc_results(conn, [change.inspection_id]))


@functools.cache
def _report(insert: Callable[..., Any]) -> Any:
    """The plc_results upsert, built once a dialect (building it cost more CPU than running it, at a low rate)."""
    report = insert(PlcResult)
    return report.on_conflict_do_update(
        index_elements=[PlcResult.inspection_id],
        set_=first_delivery_stays(PlcResult, report.excluded.plc_verdict, report.excluded.plc_delivered_at),
    )
