"""The operator dashboard's pages on the API's FastAPI app: /dashboard (docs/dashboard.md).

Server-rendered (Jinja2, autoescaped), kept live by htmx over one server-sent event stream that
only says *what* changed; the browser then fetches that fragment. Every asset is in static/ (no CDN)
and the Content-Security-Policy allows scripts from this origin only, so text from a record or a
search can never run as script. Signing in takes an API token once (session.py)."""

# No `from __future__ import annotations`: FastAPI reads the dependencies' annotations at run time.

import asyncio
import time
import urllib.parse
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from fastapi import Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from markupsafe import escape
from pydantic import ValidationError
from sqlalchemy import Engine
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lineguard.config import LineConfig
from lineguard.config.model import ApiSettings
from lineguard.services.results.api import queries as api_queries
from lineguard.services.results.api.filters import AggregateFilters, Bucket, HistoryFilters
from lineguard.services.results.dashboard import queries
from lineguard.services.results.dashboard.live import LiveFeed, PartView
from lineguard.services.results.dashboard.periods import this_shift, today
from lineguard.services.results.dashboard.session import COOKIE, Session, SessionRefused, open_session, read_session

HERE = Path(__file__).parent
PREFIX = "/dashboard"
FAILURES_SHOWN = 12
SERVICES = ("capture", "inference", "ocr", "decision", "gateway", "results")
# The event stream: at most one burst of "what changed" per MIN_GAP_S a browser, counters at most every COUNTERS_S
# (each is a database read), a comment every KEEPALIVE_S so proxies keep the connection.
MIN_GAP_S = 0.25
COUNTERS_S = 1.0
KEEPALIVE_S = 15.0
LOGIN_BODY_MAX = 4096
# Scripts and styles from this origin only, no inline script, no eval: a record's text is never code.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
# A drift source (docs/dashboard.md): () -> each station's drift state, as GET /v1/drift serves it
# ({station, level, shift, samples, features: [{feature, psi, level, ...}], detail, ...}); create_app sets it.
DriftSource = Callable[[], list[dict[str, Any]]]
BANNER_LEVELS = ("WARNING", "ALERT")


class NotSignedIn(Exception):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class _SecurityHeaders:
    """CSP, no sniffing, no referrer, no caching of pages: on every /dashboard response, streamed ones too."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(PREFIX):
            await self.app(scope, receive, send)
            return
        static = scope["path"].startswith(f"{PREFIX}/static/")

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [
                    (b"content-security-policy", CSP.encode()),
                    (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"no-referrer"),
                    (b"x-frame-options", b"DENY"),
                ]
                if not static:
                    headers.append((b"cache-control", b"no-store"))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, with_headers)


@dataclass(frozen=True)
class ImageState:
    """What a record's image is: "archived" or "live" (served at url), "deleted" by retention, or "none" stored."""

    state: str
    url: str | None = None
    deleted_at: datetime | None = None


@dataclass(frozen=True)
class ServiceHealth:
    service: str
    state: str  # ok, degraded, stopping, down, unseen
    detail: str
    version: str
    seen_s_ago: float | None


def add_dashboard(
    app: FastAPI, engine: Engine, settings: ApiSettings, line: LineConfig, feed: LiveFeed | None = None
) -> LiveFeed:
    """Serve the dashboard for `line` on `app`; `feed` is what follow.py keeps current (a fresh one if None)."""
    feed = feed or LiveFeed.of(line)
    app.state.live_feed = feed
    app.state.drift_source = getattr(app.state, "drift_source", None)
    zone = ZoneInfo(line.calendar.timezone)
    stations = {s.id: s for s in line.stations}
    templates = Jinja2Templates(directory=HERE / "templates")
    env = templates.env
    env.filters["local"] = lambda at: "" if at is None else at.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S")
    env.filters["clock"] = lambda at: "" if at is None else at.astimezone(zone).strftime("%H:%M:%S")
    env.filters["ms"] = lambda v: "–" if v is None else f"{v:.0f} ms"
    env.filters["pct"] = lambda v: "–" if v is None else f"{v:.1f} %"
    env.globals["prefix"] = PREFIX
    app.add_middleware(_SecurityHeaders)
    app.mount(f"{PREFIX}/static", StaticFiles(directory=HERE / "static"), name="dashboard-static")
    lifetime_s = settings.session_hours * 3600

    def signed_in(request: Request) -> Session:
        try:
            return read_session(engine, request.cookies.get(COOKIE))
        except SessionRefused as exc:
            raise NotSignedIn(str(exc)) from None

    Who = Annotated[Session, Depends(signed_in)]

    def page(request: Request, name: str, context: dict[str, Any], status: int = 200) -> HTMLResponse:
        base = {"line": line.line, "stations": list(stations), "zone": line.calendar.timezone}
        return templates.TemplateResponse(request, name, {**base, **context}, status_code=status)

    def login_page(request: Request, reason: str | None, status: int, next_url: str = PREFIX) -> HTMLResponse:
        insecure = settings.secure_cookie and request.url.scheme != "https" and not _is_local(request)
        return page(request, "login.html", {"reason": reason, "next": next_url, "insecure_transport": insecure}, status)

    async def not_signed_in(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, NotSignedIn)
        if request.headers.get("hx-request"):
            # A fragment swap cannot show a page: htmx follows HX-Redirect to the sign-in page.
            return Response(exc.reason, status_code=401, headers={"HX-Redirect": f"{PREFIX}/login"})
        if request.url.path == f"{PREFIX}/events":
            return Response(exc.reason, status_code=401, media_type="text/plain")
        return login_page(request, exc.reason, 401, _local_target(request.url.path, request.url.query))

    app.add_exception_handler(NotSignedIn, not_signed_in)

    def not_found(request: Request, who: Session, message: str) -> HTMLResponse:
        if request.headers.get("hx-request"):
            return HTMLResponse(f'<p class="problem">{escape(message)}</p>', status_code=404)
        return page(request, "problem.html", {"who": who, "message": message}, 404)

    def unknown_station(request: Request, who: Session, station: str) -> HTMLResponse:
        return not_found(
            request, who, f"there is no station {station!r} on line {line.line} (stations: {', '.join(stations)})"
        )

    # --- what the pages show -------------------------------------------------------------------------------

    def tile(station: str) -> PartView | None:
        shown = feed.parts.get(station)
        if shown is None:
            found = queries.latest_parts(engine, line.line, [station])
            shown = found[0] if found else None
        return shown

    def image_state(inspection_id: str) -> ImageState:
        stored = queries.image(engine, inspection_id, ("image", "thumbnail"))
        if stored is not None and stored["deleted_at"] is not None:
            return ImageState("deleted", deleted_at=stored["deleted_at"])
        if stored is not None and _readable(stored["uri"]):
            return ImageState("archived", f"{PREFIX}/images/{inspection_id}")
        if inspection_id in feed.frames:
            return ImageState("live", f"{PREFIX}/images/{inspection_id}")
        return ImageState("none")

    def station_context(station: str) -> dict[str, Any]:
        part = tile(station)
        config = stations[station]
        beat = feed.beats.get("inference")
        return {
            "station": station,
            "part": part,
            "image": image_state(part.inspection_id) if part is not None else None,
            "recipe_id": config.recipe,
            "recipe_version": line.recipes[config.recipe].version,
            "camera": config.camera.kind,
            "protocol": config.plc.protocol,
            "model_detail": beat.detail if beat is not None else None,
            "plc": feed.plc.get(station),
        }

    def counters_context(station: str | None) -> dict[str, Any]:
        now = datetime.now(UTC)
        periods = [p for p in (this_shift(line.calendar, now), today(line.calendar, now)) if p is not None]
        scope = (station,) if station is not None else tuple(stations)
        return {
            "scope": station or f"line {line.line}",
            "station": station,
            "periods": [(p, queries.counters(engine, line.line, scope, p.start, p.end)) for p in periods],
            "no_shift": this_shift(line.calendar, now) is None,
        }

    def health_context() -> dict[str, Any]:
        now = time.monotonic()
        services = []
        for name in SERVICES:
            beat = feed.beats.get(name)
            if beat is None:
                services.append(ServiceHealth(name, "unseen", "no heartbeat seen yet", "", None))
                continue
            silent_s = now - beat.seen
            limit = line.gateway.missed_heartbeats * getattr(line.services, name).heartbeat_s
            state = "down" if silent_s > limit else beat.status
            services.append(ServiceHealth(name, state, beat.detail, beat.version, silent_s))
        return {
            "services": services,
            "plc": [(s, stations[s].plc.protocol, feed.plc.get(s)) for s in stations],
            "follows_bus": feed.follows_bus,
        }

    def charts_context() -> dict[str, Any]:
        now = datetime.now(UTC)
        day = today(line.calendar, now)
        week = AggregateFilters(
            start=now - timedelta(days=7), end=now + timedelta(minutes=1), by=Bucket.shift, line=line.line
        )
        hourly = AggregateFilters(start=day.start, end=day.end, by=Bucket.hour, line=line.line)
        by_hour: dict[str, list[int]] = {}
        # Station by station: each reads through the (line, station, decided_at) index.
        for row in (
            r for s in stations for r in api_queries.yield_buckets(engine, hourly.model_copy(update={"station": s}))
        ):
            totals = by_hour.setdefault(row["bucket"], [0, 0])
            totals[0] += row["parts"]
            totals[1] += row["passed"]
        by_shift: dict[str, list[int]] = {}
        # By shift over a week is the costliest read of the page: skipped when the calendar has no shifts.
        for row in (
            (r for s in stations for r in api_queries.yield_buckets(engine, week.model_copy(update={"station": s})))
            if line.calendar.shifts
            else ()
        ):
            if row["shift"] is None:
                continue
            totals = by_shift.setdefault(f"{row['bucket']} {row['shift']}", [0, 0])
            totals[0] += row["parts"]
            totals[1] += row["passed"]
        pareto: dict[str, int] = {}
        for row in (
            r
            for s in stations
            for r in api_queries.pareto_buckets(engine, hourly.model_copy(update={"by": Bucket.day, "station": s}))
        ):
            pareto[row["reason_code"]] = pareto.get(row["reason_code"], 0) + row["parts"]
        ranked = sorted(pareto.items(), key=lambda kv: (-kv[1], kv[0]))

        def series(buckets: dict[str, list[int]], label: Callable[[str], str]) -> dict[str, Any]:
            keys = sorted(buckets)
            return {
                "labels": [label(k) for k in keys],
                "parts": [buckets[k][0] for k in keys],
                "yield": [round(100 * buckets[k][1] / buckets[k][0], 2) for k in keys],
            }

        return {
            "chart_data": {
                "hour": series(by_hour, lambda k: datetime.fromisoformat(k).astimezone(zone).strftime("%H:00")),
                "shift": series(by_shift, lambda k: k),
                "pareto": {"labels": [k for k, _ in ranked], "parts": [v for _, v in ranked]},
            },
            "day_label": day.label,
        }

    def drift_context() -> dict[str, Any]:
        source: DriftSource | None = app.state.drift_source
        rows = [r for r in source() if r["station"] in stations] if source is not None else []
        return {"drift": rows, "drifting": [r for r in rows if r["level"] in BANNER_LEVELS]}

    def failures_context() -> dict[str, Any]:
        shown = queries.failures(engine, line.line, stations, FAILURES_SHOWN)
        return {"failures": [(p, image_state(p.inspection_id)) for p in shown]}

    # --- sign in / out ---------------------------------------------------------------------------------------

    @app.get(f"{PREFIX}/login", include_in_schema=False, response_class=HTMLResponse)
    def login_form(request: Request) -> HTMLResponse:
        return login_page(request, None, 200, _local_target(request.query_params.get("next", PREFIX), ""))

    @app.post(f"{PREFIX}/login", include_in_schema=False)
    async def login(request: Request) -> Response:
        body = await request.body()
        if len(body) > LOGIN_BODY_MAX:
            return login_page(request, "the form is too large: paste one API token", 400)
        form = urllib.parse.parse_qs(body.decode("utf-8", "replace"))
        token = (form.get("token") or [""])[0]
        target = _local_target((form.get("next") or [PREFIX])[0], "")
        try:
            _session, cookie = await asyncio.to_thread(open_session, engine, token, lifetime_s)
        except SessionRefused as exc:
            return login_page(request, str(exc), 401, target)
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(
            COOKIE,
            cookie,
            max_age=int(lifetime_s),
            path=PREFIX,
            httponly=True,
            secure=settings.secure_cookie,
            samesite="strict",
        )
        return response

    @app.post(f"{PREFIX}/logout", include_in_schema=False)
    def logout() -> Response:
        response = RedirectResponse(f"{PREFIX}/login", status_code=303)
        response.delete_cookie(COOKIE, path=PREFIX, httponly=True, secure=settings.secure_cookie, samesite="strict")
        return response

    # --- pages -----------------------------------------------------------------------------------------------

    @app.get(PREFIX, include_in_schema=False, response_class=HTMLResponse)
    def overview(request: Request, who: Who) -> HTMLResponse:
        return page(
            request,
            "overview.html",
            {
                "who": who,
                "tiles": [station_context(s) for s in stations],
                **counters_context(None),
                **health_context(),
                **charts_context(),
                **failures_context(),
                **drift_context(),
            },
        )

    @app.get(f"{PREFIX}/stations/{{station}}", include_in_schema=False, response_class=HTMLResponse)
    def station_page(request: Request, station: str, who: Who) -> HTMLResponse:
        if station not in stations:
            return unknown_station(request, who, station)
        return page(
            request,
            "station.html",
            {"who": who, "tile_context": station_context(station), **counters_context(station), **health_context()},
        )

    @app.get(f"{PREFIX}/inspections/{{inspection_id}}", include_in_schema=False, response_class=HTMLResponse)
    def record_page(request: Request, inspection_id: str, who: Who) -> HTMLResponse:
        found = queries.record(engine, inspection_id) if len(inspection_id) <= 36 else None
        if found is None:
            return not_found(request, who, f"there is no inspection {inspection_id!r}")
        part = PartView.from_row(found, found["defects"])
        trace_link = (
            settings.trace_url.replace("{trace_id}", found["trace_id"])
            if settings.trace_url and found["trace_id"]
            else None
        )
        return page(
            request,
            "record.html",
            {"who": who, "r": found, "part": part, "image": image_state(inspection_id), "trace_link": trace_link},
        )

    @app.get(f"{PREFIX}/search", include_in_schema=False, response_class=HTMLResponse)
    def search(request: Request, who: Who, q: str = "") -> HTMLResponse:
        if not q:
            return page(request, "search.html", {"who": who, "q": "", "rows": None, "problem": None})
        try:
            HistoryFilters(serial=q)  # the API's own rule for a serial: 1 to 128 characters, no control ones
        except ValidationError as exc:
            problem = "search: " + "; ".join(e["msg"] for e in exc.errors())
            return page(request, "search.html", {"who": who, "q": q, "rows": None, "problem": problem}, 400)
        rows = queries.search(engine, q)
        return page(request, "search.html", {"who": who, "q": q, "rows": rows, "problem": None})

    # --- fragments (htmx swaps them in when the event stream says they changed) ------------------------------

    @app.get(f"{PREFIX}/fragments/station/{{station}}", include_in_schema=False, response_class=HTMLResponse)
    def station_fragment(request: Request, station: str, who: Who) -> HTMLResponse:
        if station not in stations:
            return unknown_station(request, who, station)
        return page(request, "_tile.html", station_context(station))

    @app.get(f"{PREFIX}/fragments/counters", include_in_schema=False, response_class=HTMLResponse)
    def counters_fragment(request: Request, who: Who, station: str | None = None) -> HTMLResponse:
        if station is not None and station not in stations:
            return unknown_station(request, who, station)
        return page(request, "_counters.html", counters_context(station))

    @app.get(f"{PREFIX}/fragments/health", include_in_schema=False, response_class=HTMLResponse)
    def health_fragment(request: Request, who: Who) -> HTMLResponse:
        return page(request, "_health.html", health_context())

    @app.get(f"{PREFIX}/fragments/charts", include_in_schema=False, response_class=HTMLResponse)
    def charts_fragment(request: Request, who: Who) -> HTMLResponse:
        return page(request, "_charts.html", charts_context())

    @app.get(f"{PREFIX}/fragments/failures", include_in_schema=False, response_class=HTMLResponse)
    def failures_fragment(request: Request, who: Who) -> HTMLResponse:
        return page(request, "_failures.html", failures_context())

    @app.get(f"{PREFIX}/fragments/drift", include_in_schema=False, response_class=HTMLResponse)
    def drift_fragment(request: Request, who: Who) -> HTMLResponse:
        # The banner at the top of the page rides along (hx-swap-oob): one read of the drift states for both.
        return page(request, "_drift.html", {**drift_context(), "banner_oob": True})

    @app.get(f"{PREFIX}/images/{{inspection_id}}", include_in_schema=False)
    def image(inspection_id: str, who: Who) -> Response:
        stored = queries.image(engine, inspection_id, ("image", "thumbnail"))
        if stored is not None and stored["deleted_at"] is not None:
            return Response("image deleted by retention", status_code=410, media_type="text/plain")
        if stored is not None and _readable(stored["uri"]):
            return Response(_read(stored["uri"]), media_type=stored["content_type"])
        frame = feed.frames.get(inspection_id)
        if frame is not None:
            return Response(frame.data, media_type=frame.content_type)
        return Response("no image stored for this inspection", status_code=404, media_type="text/plain")

    @app.get(f"{PREFIX}/events", include_in_schema=False)
    async def events(request: Request, who: Who) -> StreamingResponse:
        return StreamingResponse(
            _changes(feed, request), media_type="text/event-stream", headers={"X-Accel-Buffering": "no"}
        )

    return feed


async def _changes(feed: LiveFeed, request: Request) -> AsyncIterator[str]:
    """Server-sent events naming what changed: `station-<id>`, `counters`, `health`. Bursts coalesce: a browser
    is told once per MIN_GAP_S however many parts went by (the live view may skip parts, never blocks the line)."""
    seen = dict(feed.versions)
    counters_sent = 0.0
    yield "retry: 2000\n\n"
    while not feed.closed:
        pending_counters = seen.get("counters") != feed.versions.get("counters")
        wait_s = max(0.0, counters_sent + COUNTERS_S - time.monotonic()) if pending_counters else KEEPALIVE_S
        await feed.wait(wait_s or MIN_GAP_S)
        if await request.is_disconnected():
            return
        out = []
        for key, version in list(feed.versions.items()):
            if seen.get(key) == version:
                continue
            if key == "counters":
                if time.monotonic() - counters_sent < COUNTERS_S:
                    continue  # sent again once COUNTERS_S has passed
                counters_sent = time.monotonic()
            if key.startswith("station:"):
                out.append(f"event: station-{key.removeprefix('station:')}\ndata: {version}\n\n")
            elif key in ("counters", "health"):
                out.append(f"event: {key}\ndata: {version}\n\n")
            seen[key] = version
        yield "".join(out) or ": keepalive\n\n"
        await asyncio.sleep(MIN_GAP_S)


def _local_target(path: str, query: str) -> str:
    """Where to go after signing in: a dashboard path of this origin only (never another site)."""
    target = path + (f"?{query}" if query else "")
    parsed = urllib.parse.urlsplit(target)
    if parsed.scheme or parsed.netloc or not parsed.path.startswith(PREFIX) or target.startswith("//"):
        return PREFIX
    return target


def _is_local(request: Request) -> bool:
    host = (request.url.hostname or "").lower()
    return host in {"localhost", "127.0.0.1", "::1"}


def _readable(uri: str) -> bool:
    """An archived image this process can read: file:// in the archive folder (s3:// is the archive's to serve)."""
    parsed = urllib.parse.urlsplit(uri)
    return parsed.scheme == "file" and Path(urllib.parse.unquote(parsed.path)).is_file()


def _read(uri: str) -> bytes:
    return Path(urllib.parse.unquote(urllib.parse.urlsplit(uri).path)).read_bytes()
