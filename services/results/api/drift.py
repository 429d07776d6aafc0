"""`GET /v1/drift`: each station's drift as the drift watch last judged it, and its latest self-test (docs/drift.md,
docs/api.md); what the dashboard's drift banner reads. Any token (reader or above)."""

# No `from __future__ import annotations`: FastAPI reads the route's annotations at run time.

import json
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query
from pydantic import BaseModel, Field
from sqlalchemy import Engine, text

from lineguard.services.results.api.filters import Text
from lineguard.services.results.api.models import Timestamp


class FeatureOut(BaseModel):
    feature: str = Field(description="brightness, contrast, sharpness, saturated, max_score or detections")
    psi: float = Field(description="population stability index against the baseline")
    level: str = Field(description="OK, WARNING or ALERT")
    baseline_mean: float
    current_mean: float


class SelfTestOut(BaseModel):
    started_at: Timestamp
    finished_at: Timestamp
    changed: bool = Field(description="a golden part did not get its expected outcome")
    cases: list[dict[str, Any]] = Field(description="[{name, expected, verdict, reason_codes, changed}]")


class DriftOut(BaseModel):
    station: str
    level: str = Field(description="OK, WARNING or ALERT (a feature over drift.alert_psi, or a changed self-test)")
    alert: bool = Field(description="level is ALERT: a warning at the PLC (the dashboard's banner shows WARNING too)")
    shift: str | None
    samples: int = Field(description="parts of the shift in the window that was judged")
    baseline: str = Field(description="'training' or the id of the stored baseline")
    features: list[FeatureOut]
    selftest: str = Field(description="why the last self-test raises the alert; '' when it does not")
    detail: str
    computed_at: Timestamp
    last_selftest: SelfTestOut | None


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def read_drift(engine: Engine, station: str | None = None) -> list[dict[str, Any]]:
    """The latest drift state of each station (or of `station`) with its latest self-test run, in station order:
    the rows GET /v1/drift serves and the dashboard's drift panel and banner show."""
    where, params = ("WHERE station = :station", {"station": station}) if station is not None else ("", {})
    with engine.connect() as conn:
        states = conn.execute(text(f"SELECT * FROM drift_states {where} ORDER BY station"), params).mappings().all()
        runs = conn.execute(
            text(
                "SELECT r.* FROM selftest_runs r WHERE r.id = "
                "(SELECT MAX(id) FROM selftest_runs s WHERE s.station = r.station)"
            )
        ).mappings()
        last = {r["station"]: r for r in runs}
    found = []
    for row in states:
        run = last.get(row["station"])
        found.append(
            {
                **row,
                "alert": row["level"] == "ALERT",
                "features": _json(row["features"]),
                "last_selftest": None if run is None else {**run, "cases": _json(run["cases"])},
            }
        )
    return found


def drift_routes(engine: Engine) -> APIRouter:
    router = APIRouter()

    @router.get("/v1/drift", response_model=list[DriftOut], responses={404: {"description": "no such station"}})
    def drift(
        # Text: printable, as every other filter (a NUL byte reached PostgreSQL and was a 500, schemathesis found).
        station: Annotated[Text | None, Query(description="one station; default every station")] = None,
    ) -> list[dict[str, Any]]:
        """The latest drift state of each station (or of `station`), with its latest self-test run."""
        found = read_drift(engine, station)
        if station is not None and not found:
            raise HTTPException(404, f"station: no drift state of {station!r} (not configured, or not judged yet)")
        return found

    return router
