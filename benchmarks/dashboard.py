"""Dashboard page load over a large MES database: the overview page, every fragment, a search, a record.

Fills a SQLite file with --records inspections spread evenly over --days days ending now (a FAIL in
five with a reason and a defect, serials unique, a lot per 500 parts), serves the dashboard from
the API process on a free port (uvicorn, as a line serves it), signs in once, then for each of
--rounds interleaved rounds times --requests requests of each page (median per round):
  overview     GET /dashboard: tiles, counters of this shift and today, health, charts (yield by hour,
               by shift over 7 days, the pareto), last failures, drift: one request renders it all;
  fragments    each fragment the live view refetches (tile, counters, charts, failures);
  search       GET /dashboard/search?q=<a serial>, and a record page;
and two baselines in the same rounds: GET /healthz on the same server (the HTTP floor), and the raw
sqlite3 query that counts today's parts (what reading today costs with no dashboard at all); the
overview's ratio to each. Then the medians and ranges over the rounds, and the same as one JSON line.

    python benchmarks/dashboard.py [--records 100000] [--days 30] [--rounds 5] [--requests 10]

The goal (issue 18) is a page in at most 300 ms with 1,000,000 records: `--records 1000000`
(docs/dashboard.md has the figure)."""

from __future__ import annotations

import argparse
import functools
import http.client
import json
import random
import sqlite3
import statistics
import tempfile
import time
import urllib.parse
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from lineguard.config import LineConfig
from lineguard.natsserver import free_port
from lineguard.services.results.api.server import ApiServer
from lineguard.services.results.api.tokens import create_token
from lineguard.services.results.batch import count_yield, yield_hours
from lineguard.services.results.dashboard.periods import today
from lineguard.services.results.db import make_engine, upgrade_database
from lineguard.services.results.schema import Defect, Inspection, InspectionReason
from lineguard.sim.lineconfig import demo_config_dict
from lineguard.testing.rounds import medians_and_ranges
from lineguard.testing.threaded import serving_in_thread

CHUNK = 20_000


def fill(engine: sa.Engine, records: int, days: int) -> None:
    """`records` inspections over the last `days` days."""
    end = datetime.now(UTC)
    step = timedelta(days=days) / records
    rng = random.Random(18)
    start = end - timedelta(days=days)
    for first in range(0, records, CHUNK):
        rows, reasons, defects = [], [], []
        for i in range(first, min(first + CHUNK, records)):
            decided = start + step * i
            failed = rng.random() < 0.2
            inspection_id = f"{i:08x}-0000-7000-8000-000000000000"
            reason = rng.choice(("DEFECT_SHORT", "DEFECT_OPEN", "DEFECT_SPUR", "CODE_MISSING")) if failed else ""
            rows.append(
                {
                    "inspection_id": inspection_id,
                    "line": "l1",
                    "station": "s1",
                    "recipe_id": "pcb-a",
                    "recipe_version": "1",
                    "sequence": i + 1,
                    "serial": f"LG-{i:08d}",
                    "verdict": "FAIL" if failed else "PASS",
                    "reason_codes": reason,
                    "model_id": "deeppcb-yolo11n",
                    "model_version": "3",
                    "triggered_at": decided - timedelta(milliseconds=50),
                    "decided_at": decided,
                    "total_ms": rng.gauss(50, 8),
                    "timings": {"total": 50.0},
                    "image_width": 640,
                    "image_height": 640,
                    "plc_verdict": "FAIL" if failed else "PASS",
                    "plc_delivered_at": decided,
                    "lot": f"LOT-{i // 500:06d}",
                    "shift_day": None,
                    "shift": None,
                    "created_at": decided,
                }
            )
            if failed:
                reasons.append(
                    {"inspection_id": inspection_id, "position": 0, "reason_code": reason, "severity": "FAIL"}
                )
                defects.append(
                    {
                        "inspection_id": inspection_id,
                        "class_name": "short",
                        "class_id": 2,
                        "score": 0.9,
                        "x1": 100.0,
                        "y1": 100.0,
                        "x2": 140.0,
                        "y2": 130.0,
                        "area_px": 1200.0,
                    }
                )
        with engine.begin() as conn:
            conn.execute(sa.insert(Inspection), rows)
            # The hourly counts the yield panel reads, as the writer keeps them (batch.write_batch).
            count_yield(conn, yield_hours(rows))
            if reasons:
                conn.execute(sa.insert(InspectionReason), reasons)
                conn.execute(sa.insert(Defect), defects)


def timed(call: Callable[[], Any], requests: int) -> float:
    """Median milliseconds of `requests` calls."""
    times = []
    for _ in range(requests):
        t0 = time.perf_counter()
        call()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=10)
    parser.add_argument("--reuse", type=Path, help="a file an earlier run filled with the same --records and --days")
    args = parser.parse_args()

    path = args.reuse or Path(tempfile.mkdtemp(prefix="lg-dashboard-bench-")) / "lineguard.db"
    url = f"sqlite:///{path}"
    engine = make_engine(url)
    serial = f"LG-{args.records // 2:08d}"
    if args.reuse is None:
        upgrade_database(url)
        t0 = time.perf_counter()
        fill(engine, args.records, args.days)
        print(f"{args.records} records over {args.days} days written in {time.perf_counter() - t0:.1f} s ({path})")
    token = create_token(engine, "reader", "bench")
    raw = demo_config_dict(
        nats_url="nats://127.0.0.1:1", database_url=url, opcua_endpoint="opc.tcp://127.0.0.1:4840/", deadline_ms=3000
    )
    config = LineConfig(**{**raw, "api": {"enabled": True, "port": free_port(), "secure_cookie": False}})
    server = ApiServer(engine, config.api, config)
    day = today(config.calendar, datetime.now(UTC))
    raw_db = sqlite3.connect(path)
    # The same text SQLAlchemy binds for a UTCDateTime on SQLite.
    bounds = tuple(d.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ") for d in (day.start, day.end))

    def raw_count_today() -> int:
        return raw_db.execute(
            "SELECT count(*) FROM inspections"
            " WHERE line = 'l1' AND station = 's1' AND decided_at >= ? AND decided_at < ?",
            bounds,
        ).fetchone()[0]

    with serving_in_thread(server):
        # A new connection per request, as a browser's page load may: http.client, since httpx's kept-alive
        # connection adds ~40 ms of its own to every request on loopback (delayed ACK), which no browser shows.
        def request(method: str, target: str, body: str = "", cookie: str = "") -> http.client.HTTPResponse:
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
            headers = {"Cookie": cookie, "Content-Type": "application/x-www-form-urlencoded"}
            conn.request(method, target, body=body, headers=headers)
            response = conn.getresponse()
            response.read()
            conn.close()
            return response

        login = request("POST", "/dashboard/login", urllib.parse.urlencode({"token": token}))
        assert login.status == 303, "sign-in refused"
        session = login.headers["set-cookie"].split(";", 1)[0]

        def get(target: str) -> None:
            response = request("GET", target, cookie=session)
            assert response.status == 200, (target, response.status)

        record = f"/dashboard/inspections/{args.records // 2:08x}-0000-7000-8000-000000000000"
        pages: dict[str, str] = {
            "overview_ms": "/dashboard",
            "tile_ms": "/dashboard/fragments/station/s1",
            "counters_ms": "/dashboard/fragments/counters",
            "charts_ms": "/dashboard/fragments/charts",
            "failures_ms": "/dashboard/fragments/failures",
            "search_ms": f"/dashboard/search?q={serial}",
            "record_ms": record,
            "healthz_ms": "/healthz",
        }
        for target in pages.values():  # warm: templates compiled, pages in the OS cache
            get(target)
        print(f"today: {raw_count_today()} parts")
        rounds = []
        for n in range(args.rounds):
            figures = {key: timed(functools.partial(get, target), args.requests) for key, target in pages.items()}
            figures["raw_count_today_ms"] = timed(raw_count_today, args.requests)
            figures["overview_over_healthz"] = figures["overview_ms"] / figures["healthz_ms"]
            figures["overview_over_raw_count"] = figures["overview_ms"] / figures["raw_count_today_ms"]
            rounds.append(figures)
            print(f"round {n + 1}: " + ", ".join(f"{k} {v:.1f}" for k, v in figures.items()))
    raw_db.close()
    engine.dispose()
    summary = {"records": args.records, "days": args.days, **medians_and_ranges(rounds, digits=2)}
    print(
        f"overview {summary['overview_ms']} ms (range {summary['overview_ms_range']}) with {args.records} records; "
        f"goal 300 ms; healthz {summary['healthz_ms']} ms, raw count of today {summary['raw_count_today_ms']} ms"
    )
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
