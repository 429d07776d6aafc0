"""Do the MES rows' PLC columns tell what the simulated PLC received? The check `lineguard demo`'s summary, the
end-to-end test and benchmarks/faults.py make once the line has stopped.

A row agrees when, for a part the PLC got a result for, `plc_verdict` is that verdict and `plc_delivered_at` is
set; for a part the PLC got nothing for, `plc_delivered_at` is NULL (`plc_verdict` may name the verdict the gateway
tried to hand over). A row that disagrees is named with what it says and what the PLC got."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

if TYPE_CHECKING:  # asyncua is loaded only once a line runs
    from lineguard.sim.plc import PlcResult


@dataclass(frozen=True)
class PlcRow:
    inspection_id: str
    sequence: int
    verdict: str
    plc_verdict: str | None
    plc_delivered_at: Any  # a datetime, None when the row says the PLC never got the result


@dataclass
class PlcColumns:
    rows: int = 0
    agree: int = 0
    disagreements: list[str] = field(default_factory=list)  # one line per row that disagrees

    @property
    def ok(self) -> bool:
        return self.agree == self.rows

    @property
    def line(self) -> str:
        return f"PLC columns: {self.agree} of {self.rows} agree"


def read_plc_rows(database_url: str) -> list[PlcRow]:
    engine = sa.create_engine(database_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT inspection_id, sequence, verdict, plc_verdict, plc_delivered_at FROM inspections "
                    "ORDER BY sequence"
                )
            ).all()
    finally:
        engine.dispose()
    return [PlcRow(r.inspection_id, r.sequence, r.verdict, r.plc_verdict, r.plc_delivered_at) for r in rows]


def check_plc_columns(rows: Iterable[PlcRow], received: Iterable[PlcResult]) -> PlcColumns:
    """Each row against the first result the PLC received for its inspection (events and results read back)."""
    got: dict[str, PlcResult] = {}
    for result in received:
        # A register PLC (Modbus, S7) sees the sequence, not the inspection id: its results are found by that.
        got.setdefault(result.inspection_id or f"#{result.sequence}", result)
    check = PlcColumns()
    for row in rows:
        check.rows += 1
        at_plc = got.get(row.inspection_id) or got.get(f"#{row.sequence}")
        if at_plc is None:
            problem = (
                f"plc_delivered_at is {row.plc_delivered_at} but the PLC got no result"
                if row.plc_delivered_at is not None
                else ""
            )
        elif row.plc_delivered_at is None or row.plc_verdict != at_plc.verdict:
            problem = (
                f"plc_verdict {row.plc_verdict}, plc_delivered_at {row.plc_delivered_at}, "
                f"but the PLC got {at_plc.verdict}"
            )
        else:
            problem = ""
        if problem:
            check.disagreements.append(f"#{row.sequence} {row.inspection_id}: {problem}")
        else:
            check.agree += 1
    return check
