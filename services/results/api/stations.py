"""Which stations the API may be asked about: those the line configures, and those it has records of.

A filter naming any other station (a typo, another line's) would answer an empty list that reads as "no parts
there"; it is a 404 naming the field and the stations configured instead. A station taken out of the line's
configuration keeps its records, so it is still asked about freely. Without the line's settings (an app made
without `line`) nothing is checked."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import HTTPException
from sqlalchemy import Engine, select

from lineguard.config import LineConfig
from lineguard.services.results.schema import Inspection

StationCheck = Callable[[str | None, str | None], None]


def station_check(engine: Engine, line: LineConfig | None) -> StationCheck:
    """`check(station, line_id)`: None, or HTTPException 404 when `station` is neither configured nor recorded."""
    if line is None:
        return lambda station, line_id: None
    configured = {s.id for s in line.stations}

    def check(station: str | None, line_id: str | None) -> None:
        asked = line_id or line.line
        if station is None or (asked == line.line and station in configured):
            return
        # The index on (line, station, decided_at) answers this at once, however many rows there are.
        with engine.connect() as conn:
            recorded = conn.execute(
                select(Inspection.inspection_id).where(Inspection.line == asked, Inspection.station == station).limit(1)
            ).first()
        if recorded is not None:
            return
        if asked == line.line:
            known = ", ".join(sorted(configured))
            raise HTTPException(
                404, f"station: {station!r} is not configured on line {asked!r} (configured: {known}), nor recorded"
            )
        raise HTTPException(404, f"station: line {asked!r} has no record of station {station!r}")

    return check
