"""The query API's routes: FastAPI over a (reader's) engine; every route needs a token, admin routes an admin's.

The endpoints are plain `def`s, run on FastAPI's thread pool: the engine is the synchronous
one the rest of the results service uses (see db.py)."""

# No `from __future__ import annotations`: FastAPI reads the nested dependencies' annotations at run time.

import csv
import io
import math
from collections.abc import Awaitable, Callable, Iterator
from datetime import datetime
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request
from fastapi.responses import Response, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import TypeAdapter
from sqlalchemy import Engine

from lineguard import __version__
from lineguard.config import LineConfig
from lineguard.config.model import ApiSettings
from lineguard.services.results.api import queries
from lineguard.services.results.api.confirmations import add_confirmations
from lineguard.services.results.api.drift import drift_routes, read_drift
from lineguard.services.results.api.filters import (
    INSPECTION_ID,
    AggregateFilters,
    BoundedRange,
    HistoryFilters,
    InspectionFilters,
)
from lineguard.services.results.api.images import image_routes
from lineguard.services.results.api.models import (
    HistoryInspection,
    InspectionPage,
    ParetoBucket,
    PartHistory,
    TokenOut,
    YieldBucket,
)
from lineguard.services.results.api.ratelimit import RateLimiter
from lineguard.services.results.api.stations import station_check
from lineguard.services.results.api.tokens import Caller, list_tokens, verify_token
from lineguard.services.results.dashboard.live import LiveFeed
from lineguard.services.results.dashboard.routes import add_dashboard
from lineguard.timestamps import utc_iso

EXPORT_COLUMNS = [c.name for c in queries.SUMMARY]
_bearer = HTTPBearer(auto_error=False, description="an API token: `lineguard api token create --role reader`")


_HISTORY: TypeAdapter[PartHistory] = TypeAdapter(PartHistory)
_RECORD: TypeAdapter[HistoryInspection] = TypeAdapter(HistoryInspection)
_YIELD: TypeAdapter[list[YieldBucket]] = TypeAdapter(list[YieldBucket])


def _json(adapter: TypeAdapter[Any], content: Any) -> Response:
    """`content` checked against its response model and written as JSON here, on the endpoint's worker thread, as
    FastAPI would have done after it on a thread of its own: one hop through the pool less for the busiest routes."""
    return Response(adapter.dump_json(adapter.validate_python(content), by_alias=True), media_type="application/json")


def _cell(value: Any) -> Any:
    """A CSV cell: a time as the JSON routes write it (lineguard.timestamps), NULL as nothing."""
    if value is None:
        return ""
    return utc_iso(value) if isinstance(value, datetime) else value


def _summary(row: dict[str, Any]) -> dict[str, Any]:
    return {**row, "reason_codes": [c for c in row["reason_codes"].split(",") if c]}


def create_app(
    engine: Engine, settings: ApiSettings | None = None, line: LineConfig | None = None, feed: LiveFeed | None = None
) -> FastAPI:
    """The API; with `line`, the operator dashboard on /dashboard too (kept live by `feed`, see dashboard/follow.py)."""
    settings = settings or ApiSettings()
    limiter = RateLimiter(settings.rate_per_s, settings.burst)
    known_station = station_check(engine, line)  # a station neither configured nor recorded: 404
    app = FastAPI(
        title="lineguard MES API",
        version=__version__,
        summary="Inspections, part histories, yield and defect paretos from the MES database (read-only).",
    )

    def caller(
        request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
    ) -> Caller:
        if credentials is None:
            raise HTTPException(401, "no API token: send Authorization: Bearer <token>", {"WWW-Authenticate": "Bearer"})
        found = verify_token(engine, credentials.credentials)
        if found is None:
            raise HTTPException(401, "API token unknown or revoked", {"WWW-Authenticate": "Bearer"})
        wait = limiter.take(found.token_id)
        if wait > 0:
            raise HTTPException(
                429, f"rate limit of {settings.rate_per_s:g}/s for this token", {"Retry-After": str(math.ceil(wait))}
            )
        return found

    def role(needed: str) -> Callable[[Caller], Awaitable[Caller]]:
        # async: no I/O, so it runs on the event loop, not as one more hop through the thread pool.
        async def check(who: Annotated[Caller, Depends(caller)]) -> Caller:
            if needed == "admin" and who.role != "admin":
                raise HTTPException(403, f"this route needs an admin token; {who.token_id} is a {who.role}")
            return who

        return check

    reader = [Depends(role("reader"))]
    admin = [Depends(role("admin"))]
    errors: dict[int | str, dict[str, Any]] = {
        401: {"description": "no token, or one unknown or revoked"},
        429: {"description": "this token's rate limit; Retry-After says when to come back"},
    }

    @app.get("/v1/inspections", dependencies=reader, responses={**errors, 404: {}}, response_model=InspectionPage)
    def inspections(filters: Annotated[InspectionFilters, Query()]) -> dict[str, Any]:
        """Inspections in decided_at order, filtered; page on with `cursor` = the last page's next_cursor."""
        known_station(filters.station, filters.line)
        try:
            rows, next_cursor = queries.inspections_page(engine, filters)
        except queries.BadCursor as exc:
            raise HTTPException(400, str(exc)) from None
        return {"items": [_summary(r) for r in rows], "next_cursor": next_cursor}

    @app.get("/v1/history", dependencies=reader, responses={**errors, 404: {}}, response_model=PartHistory)
    def history(filters: Annotated[HistoryFilters, Query()]) -> Response:
        """A part's every inspection by its serial, oldest first: reasons, defects, codes, model and recipe."""
        found = queries.part_history(engine, filters.serial)
        if not found:
            raise HTTPException(404, f"serial: no inspection of {filters.serial!r}")
        return _json(_HISTORY, {"serial": filters.serial, "inspections": [_summary(r) for r in found]})

    @app.get(
        "/v1/inspections/{inspection_id}",
        dependencies=reader,
        responses={**errors, 404: {"description": "no inspection has that id"}},
        response_model=HistoryInspection,
    )
    def inspection(
        inspection_id: Annotated[str, Path(pattern=INSPECTION_ID, description="the inspection's id (a UUIDv7)")],
    ) -> Response:
        """One inspection by its id (what the PLC got back with its result), whole, as /v1/history gives each."""
        found = queries.inspection_record(engine, inspection_id)
        if found is None:
            raise HTTPException(404, f"inspection_id: no inspection has the id {inspection_id!r}")
        return _json(_RECORD, _summary(found))

    @app.get("/v1/yield", dependencies=reader, responses={**errors, 404: {}}, response_model=list[YieldBucket])
    def yields(filters: Annotated[AggregateFilters, Query()]) -> Response:
        """Parts and yield per bucket (hour or day in UTC, or shift), line and station."""
        known_station(filters.station, filters.line)
        return _json(_YIELD, queries.yield_buckets(engine, filters))

    @app.get("/v1/pareto", dependencies=reader, responses={**errors, 404: {}}, response_model=list[ParetoBucket])
    def pareto(filters: Annotated[AggregateFilters, Query()]) -> list[dict[str, Any]]:
        """Parts per reason code per bucket, most first."""
        known_station(filters.station, filters.line)
        return queries.pareto_buckets(engine, filters)

    @app.get(
        "/v1/export.csv",
        dependencies=reader,
        responses={**errors, 200: {"content": {"text/csv": {}}, "description": "one row per inspection"}},
        response_class=StreamingResponse,
    )
    def export(when: Annotated[BoundedRange, Query()]) -> StreamingResponse:
        """Every inspection of a time range as CSV, streamed in decided_at order (never built in memory)."""

        def lines() -> Iterator[str]:
            out = io.StringIO()
            writer = csv.writer(out)
            writer.writerow(EXPORT_COLUMNS)
            for row in queries.iter_inspections(engine, when):
                writer.writerow([_cell(row[c]) for c in EXPORT_COLUMNS])
                if out.tell() > 64 * 1024:
                    yield out.getvalue()
                    out.seek(0)
                    out.truncate()
            yield out.getvalue()

        name = f"inspections_{when.start:%Y%m%dT%H%M%SZ}_{when.end:%Y%m%dT%H%M%SZ}.csv"
        return StreamingResponse(
            lines(), media_type="text/csv", headers={"Content-Disposition": f'attachment; filename="{name}"'}
        )

    @app.get("/v1/tokens", dependencies=admin, responses={**errors, 403: {}}, response_model=list[TokenOut])
    def tokens() -> list[dict[str, object]]:
        """The API tokens (never their secrets): admins only."""
        return list_tokens(engine)

    # The archive's images (images.py): the line's archive settings where the API has them, else the folder default.
    app.include_router(
        image_routes(engine, line.archive if line is not None else None), dependencies=reader, responses=errors
    )

    add_confirmations(app, engine, caller, errors)
    app.include_router(drift_routes(engine), dependencies=reader, responses=errors)  # the drift watch (docs/drift.md)

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    if line is not None:
        # The dashboard's drift panel and banner read the rows /v1/drift serves (one query for both).
        app.state.drift_source = lambda: read_drift(engine)
        add_dashboard(app, engine, settings, line, feed)
    return app
