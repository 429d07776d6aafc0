"""The MES writer and the query API on PostgreSQL, each against a raw baseline in the same run (issue 14's speed).

Writer: --inspections decisions per side per round, each with 3 defects and 2 reads (lineguard.testing.records
busy_decision), into a throwaway PostgreSQL database emptied before each side:
  writer   the results service's path for one batch of --batch messages: decode each Decision from its bytes,
           make its rows (records.decision_rows, every check), write the batch (batch.write_batch: the
           inspections insert-if-absent and their defects / codes / reasons in one statement, versions, then
           the PLC merge);
  copy     a raw COPY of the very same rows (inspections, defects, codes, reasons), one transaction, no checks;
and their ratio, in --rounds interleaved rounds (the order alternates), then medians and ranges.

API: --api-rows inspections (3 defects and 2 reads each, over 30 days) made by COPY, then the API served by
uvicorn on loopback in a process of its own (the results service's ApiServer, a reader's token; the client keeps
its connection alive, as an MES would) and asked --api-requests times each:
  history  GET /v1/history?serial=... (a part's every inspection with reasons, defects, codes);
  yield    GET /v1/yield?by=hour over one day (24 buckets) of line l1;
each p50 / p99 through HTTP against the same question as raw SQL on one psycopg connection (the ratio of p99s):
for the yield, the GROUP BY of the day's inspections, and (yield_hours_sql) the SQL the API itself runs since
migration 0008, over the writer's hourly counts (yield_hours, counted here by the writer's code as the rows are
made).
The issue's figure is 1,000,000 rows: `--api-rows 1000000` (a few minutes to make); the default is smaller.

The last line is everything as one JSON object.

    python benchmarks/results.py [--inspections 10000] [--batch 500] [--rounds 5] [--api-rows 100000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import random
import statistics
import time
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection
from typing import Any

import httpx
import psycopg
from sqlalchemy import JSON, Engine, Table

from lineguard.config import LineConfig
from lineguard.config.model import ApiSettings
from lineguard.services.results.api.server import ApiServer
from lineguard.services.results.api.tokens import create_token
from lineguard.services.results.batch import count_yield, write_batch, yield_hours
from lineguard.services.results.db import make_engine, upgrade_database
from lineguard.services.results.records import InspectionRows, LineFacts, decision_rows
from lineguard.services.results.schema import Code, Defect, Inspection, InspectionReason
from lineguard.sim.lineconfig import demo_config_dict
from lineguard.testing.postgres import throwaway_database
from lineguard.testing.records import busy_decision
from lineguard.testing.rounds import medians_and_ranges
from lineguard.v1.decision_pb2 import Decision

TABLES: tuple[Table, ...] = (
    Inspection.__table__,
    Defect.__table__,
    Code.__table__,
    InspectionReason.__table__,
)  # type: ignore[assignment]
EMPTY = "TRUNCATE inspections, plc_results, model_versions, recipe_versions, yield_hours CASCADE"


def psycopg_url(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def payloads(count: int) -> list[bytes]:
    """`count` decisions as the bus carries them, fresh ids each call."""
    return [busy_decision(i).SerializeToString() for i in range(count)]


def writer_side(engine: Engine, messages: Sequence[bytes], batch: int, facts: LineFacts) -> float:
    """Inspections/s through the results service's path: decode and make each decision's rows as it comes, write
    them a batch at a time in a thread, so the next batch's rows are made while the last is written (as the
    service's DecisionWriter does: rows in its handler, write_batch off the event loop)."""
    started = time.perf_counter()
    with ThreadPoolExecutor(1) as writing:
        pending: Future[list[Any]] | None = None
        for i in range(0, len(messages), batch):
            rows = [decision_rows(Decision.FromString(m), facts) for m in messages[i : i + batch]]
            if pending is not None:
                assert all(o is True for o in pending.result())
            pending = writing.submit(write_batch, engine, rows)
        assert pending is not None and all(o is True for o in pending.result())
    return len(messages) / (time.perf_counter() - started)


def copy_rows(conn: psycopg.Connection, table: Table, rows: Iterator[dict[str, Any]], columns: list[str]) -> None:
    as_json = [isinstance(table.c[name].type, JSON) for name in columns]
    with conn.cursor() as cursor, cursor.copy(f"COPY {table.name} ({', '.join(columns)}) FROM STDIN") as copy:
        for row in rows:
            values = [row[c] for c in columns]
            copy.write_row([json.dumps(v) if j and v is not None else v for v, j in zip(values, as_json, strict=True)])


def copy_all(url: str, made: Sequence[InspectionRows]) -> None:
    """The rows of `made` by COPY, table by table, in one transaction."""
    now = datetime.now(UTC)
    inspection_columns = ["created_at", *made[0].inspection]
    with psycopg.connect(psycopg_url(url)) as conn:
        copy_rows(conn, TABLES[0], ({"created_at": now, **r.inspection} for r in made), inspection_columns)
        for table, attribute in zip(TABLES[1:], ("defects", "codes", "reasons"), strict=True):
            columns = list(getattr(made[0], attribute)[0])
            copy_rows(conn, table, (row for r in made for row in getattr(r, attribute)), columns)


def copy_side(url: str, messages: Sequence[bytes], facts: LineFacts) -> float:
    """Inspections/s by a raw COPY of the same rows (made before the clock starts)."""
    made = [decision_rows(Decision.FromString(m), facts) for m in messages]
    started = time.perf_counter()
    copy_all(url, made)
    return len(messages) / (time.perf_counter() - started)


def empty(url: str) -> None:
    with psycopg.connect(psycopg_url(url), autocommit=True) as conn:
        conn.execute(EMPTY)
        conn.execute("VACUUM ANALYZE inspections")


def writer_rounds(url: str, args: argparse.Namespace, facts: LineFacts) -> dict[str, Any]:
    engine = make_engine(url)
    rounds = []
    try:
        for r in range(args.rounds):
            figures: dict[str, float] = {}
            sides = ["writer", "copy"] if r % 2 == 0 else ["copy", "writer"]
            for side in sides:
                messages = payloads(args.inspections)
                empty(url)
                if side == "writer":
                    figures["writer_per_s"] = writer_side(engine, messages, args.batch, facts)
                else:
                    figures["copy_per_s"] = copy_side(url, messages, facts)
            figures["ratio"] = figures["writer_per_s"] / figures["copy_per_s"]
            rounds.append(figures)
            print(
                f"round {r + 1}: writer {figures['writer_per_s']:8.0f}/s  copy {figures['copy_per_s']:8.0f}/s  "
                f"ratio {figures['ratio']:.2f}",
                flush=True,
            )
    finally:
        engine.dispose()
    return medians_and_ranges(rounds, digits=2)


# ---- the API over many rows


def generated(count: int, facts: LineFacts, start: datetime, days: int) -> Iterator[InspectionRows]:
    """`count` inspections spread over `days` from `start`, serials LG-00000000..., each inspected once."""
    template = decision_rows(busy_decision(1), facts)
    rng = random.Random(14)
    span_us = days * 86_400_000_000
    verdicts = ["PASS"] * 8 + ["FAIL", "REWORK"]
    for i in range(count):
        inspection_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        decided = start + timedelta(microseconds=span_us * i // count)
        inspection = {
            **template.inspection,
            "inspection_id": inspection_id,
            "serial": f"LG-{i:08d}",
            "sequence": i,
            "station": "s1" if i % 2 == 0 else "s2",
            "triggered_at": decided - timedelta(milliseconds=55),
            "decided_at": decided,
            "verdict": verdicts[i % len(verdicts)],
        }
        yield InspectionRows(
            inspection,
            [{**d, "inspection_id": inspection_id} for d in template.defects],
            [{**c, "inspection_id": inspection_id} for c in template.codes],
            [{**x, "inspection_id": inspection_id} for x in template.reasons],
        )


def make_many(url: str, count: int, facts: LineFacts, start: datetime, days: int) -> float:
    """Fill the database with `count` inspections by COPY, in chunks, each chunk's hours counted into yield_hours
    by the writer's own code (batch.yield_hours, count_yield), as the writer would have; seconds it took."""
    began = time.perf_counter()
    rows = generated(count, facts, start, days)
    engine = make_engine(url)
    while chunk := [r for _, r in zip(range(50_000), rows, strict=False)]:
        copy_all(url, chunk)
        with engine.begin() as conn:
            count_yield(conn, yield_hours(r.inspection for r in chunk))
    engine.dispose()
    with psycopg.connect(psycopg_url(url), autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
    return time.perf_counter() - began


def percentiles(samples_s: list[float]) -> tuple[float, float]:
    ordered = sorted(samples_s)
    return statistics.median(ordered) * 1000, ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000


HISTORY_SQL = [
    "SELECT * FROM inspections WHERE serial = %s ORDER BY decided_at, inspection_id",
    "SELECT * FROM inspection_reasons WHERE inspection_id = ANY(%s) ORDER BY position",
    "SELECT * FROM defects WHERE inspection_id = ANY(%s) ORDER BY id",
    "SELECT * FROM codes WHERE inspection_id = ANY(%s) ORDER BY id",
]
YIELD_SQL = (
    "SELECT date_trunc('hour', timezone('UTC', decided_at)) AS bucket, line, station, count(*),"
    " sum(CASE WHEN verdict = 'PASS' THEN 1 ELSE 0 END) FROM inspections"
    " WHERE decided_at >= %s AND decided_at < %s AND line = %s GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"
)

# What the API reads for whole hours since 0008: the writer's counts (the edges' inspections are none here, the
# day's range being whole hours).
YIELD_HOURS_SQL = (
    "SELECT date_trunc('hour', timezone('UTC', hour)) AS bucket, line, station, sum(parts), sum(passed),"
    " sum(failed), sum(rework), sum(errors) FROM yield_hours"
    " WHERE hour >= %s AND hour < %s AND line = %s GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"
)


def raw_history(conn: psycopg.Connection, serial: str) -> None:
    ids = [r[0] for r in conn.execute(HISTORY_SQL[0], (serial,)).fetchall()]
    for sql in HISTORY_SQL[1:]:
        conn.execute(sql, (ids,)).fetchall()


def _serve_api(url: str, port: Connection) -> None:
    """The API process: the results service's ApiServer over its own engine, its port sent back, until terminated."""
    engine = make_engine(url)
    server = ApiServer(engine, ApiSettings(host="127.0.0.1", port=0, rate_per_s=1e6, burst=1_000_000))
    port.send(server.port)
    asyncio.run(server.serve())


class ServedApi:
    """The API on loopback in a process of its own, as the MES meets it (the results service's or lineguard-api's):
    the client's clock, its HTTP parsing and the raw SQL baseline never share a GIL with the server."""

    def __init__(self, url: str):
        spawn = multiprocessing.get_context("spawn")
        self._port, theirs = spawn.Pipe(duplex=False)
        self.process = spawn.Process(target=_serve_api, args=(url, theirs), daemon=True)

    def __enter__(self) -> str:
        self.process.start()
        if not self._port.poll(60):
            raise RuntimeError("the API process did not come up")
        base = f"http://127.0.0.1:{self._port.recv()}"
        for _ in range(100):
            try:
                httpx.get(f"{base}/healthz", timeout=1)
                return base
            except httpx.TransportError:
                time.sleep(0.05)
        raise RuntimeError("the API did not come up")

    def __exit__(self, *exc: object) -> None:
        self.process.terminate()
        self.process.join(10)


def api_figures(url: str, args: argparse.Namespace, facts: LineFacts) -> dict[str, Any]:
    start, days = datetime(2026, 1, 1, tzinfo=UTC), 30
    empty(url)
    made_s = make_many(url, args.api_rows, facts, start, days)
    print(f"made {args.api_rows} inspections by COPY in {made_s:.0f} s", flush=True)
    engine = make_engine(url)
    token = create_token(engine, "reader", "benchmark")
    rng = random.Random(7)
    day = start + timedelta(days=days // 2)
    figures: dict[str, Any] = {"api_rows": args.api_rows}
    try:
        headers = {"Authorization": f"Bearer {token}"}
        with (
            ServedApi(url) as base,
            httpx.Client(base_url=base, headers=headers) as c,
            psycopg.connect(psycopg_url(url), autocommit=True) as raw,
        ):
            serials = [f"LG-{rng.randrange(args.api_rows):08d}" for _ in range(args.api_requests)]
            timed: dict[str, list[float]] = {
                "history": [],
                "history_sql": [],
                "yield": [],
                "yield_sql": [],
                "yield_hours_sql": [],
            }
            yield_params = {"by": "hour", "start": day.isoformat(), "end": (day + timedelta(days=1)).isoformat()}
            for serial in serials:  # interleaved: each question through the API, then as raw SQL
                began = time.perf_counter()
                response = c.get("/v1/history", params={"serial": serial})
                timed["history"].append(time.perf_counter() - began)
                assert response.status_code == 200, response.text
                began = time.perf_counter()
                raw_history(raw, serial)
                timed["history_sql"].append(time.perf_counter() - began)
                began = time.perf_counter()
                response = c.get("/v1/yield", params={**yield_params, "line": "l1"})
                timed["yield"].append(time.perf_counter() - began)
                assert response.status_code == 200 and len(response.json()) == 48, response.text[:200]
                began = time.perf_counter()
                raw.execute(YIELD_SQL, (day, day + timedelta(days=1), "l1")).fetchall()
                timed["yield_sql"].append(time.perf_counter() - began)
                began = time.perf_counter()
                raw.execute(YIELD_HOURS_SQL, (day, day + timedelta(days=1), "l1")).fetchall()
                timed["yield_hours_sql"].append(time.perf_counter() - began)
    finally:
        engine.dispose()
    for name, samples in timed.items():
        p50, p99 = percentiles(samples)
        figures[f"{name}_p50_ms"], figures[f"{name}_p99_ms"] = round(p50, 2), round(p99, 2)
    for name in ("history", "yield"):
        figures[f"{name}_p99_ratio"] = round(figures[f"{name}_p99_ms"] / figures[f"{name}_sql_p99_ms"], 2)
        print(
            f"{name:8s} API p50 {figures[f'{name}_p50_ms']:6.1f} ms  p99 {figures[f'{name}_p99_ms']:6.1f} ms  "
            f"raw SQL p99 {figures[f'{name}_sql_p99_ms']:6.1f} ms  over {args.api_rows} inspections",
            flush=True,
        )
    print(
        f"yield_hours raw SQL p50 {figures['yield_hours_sql_p50_ms']:6.1f} ms  "
        f"p99 {figures['yield_hours_sql_p99_ms']:6.1f} ms (what the API reads)",
        flush=True,
    )
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--inspections", type=int, default=10_000, help="decisions per side per round")
    parser.add_argument("--batch", type=int, default=500, help="decisions per batch (database.write_batch)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--api-rows", type=int, default=100_000, help="inspections the API is asked over (0: skip)")
    parser.add_argument("--api-requests", type=int, default=300, help="requests per question")
    args = parser.parse_args()
    raw = demo_config_dict(nats_url="nats://127.0.0.1:4222", database_url="sqlite://", opcua_endpoint="opc.tcp://x")
    facts = LineFacts.of(LineConfig(**raw))
    with throwaway_database() as url:
        upgrade_database(url)
        summary: dict[str, Any] = {"inspections": args.inspections, "batch": args.batch, "rounds": args.rounds}
        summary.update(writer_rounds(url, args, facts))
        print(
            f"writer {summary['writer_per_s']:.0f}/s {summary['writer_per_s_range']}, "
            f"copy {summary['copy_per_s']:.0f}/s {summary['copy_per_s_range']}, "
            f"ratio {summary['ratio']:.2f} {summary['ratio_range']}",
            flush=True,
        )
        if args.api_rows > 0:
            summary.update(api_figures(url, args, facts))
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
