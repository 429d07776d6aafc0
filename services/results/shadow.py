"""A shadow candidate's would-be verdict (`lg.shadow_verdict`) into `shadow_verdicts`, beside its live inspection.

The row names its live inspection (a foreign key), whose decision comes on another stream: a verdict that
overtakes it is retried with a delay until the inspection's row is there (dead-lettered with the reason after
max_deliver). Written once: the same verdict again (a redelivery) finds its row and writes nothing."""

from __future__ import annotations

from sqlalchemy import Engine, exists, select

from lineguard.services.results.batch import dialect_insert
from lineguard.services.results.records import shadow_verdict_row
from lineguard.services.results.schema import Inspection, ShadowVerdict
from lineguard.v1.decision_pb2 import Decision


class LiveNotWritten(RuntimeError):
    """The live inspection's row is not written yet: retry later."""


def write_shadow_verdict(engine: Engine, decision: Decision) -> bool:
    """Write the candidate's verdict; False when it was already there. LiveNotWritten before its inspection's row."""
    row = shadow_verdict_row(decision)
    statement = (
        dialect_insert(engine)(ShadowVerdict)
        .values(row)
        .on_conflict_do_nothing(index_elements=list(ShadowVerdict.__table__.primary_key))
        .returning(ShadowVerdict.inspection_id)
    )
    with engine.begin() as conn:
        if not conn.execute(select(exists().where(Inspection.inspection_id == row["inspection_id"]))).scalar():
            raise LiveNotWritten(
                f"shadow verdict of inspection {row['inspection_id']}: the live inspection's row is not written yet"
            )
        return conn.execute(statement).first() is not None
