"""docs/mes-schema.md's "which parts had a code graded C or worse this shift", as the doc gives it, against the
same question without its one-day bound on decided_at (the plain join: every inspection of the line read), in the
same run, on a database of N generated inspections.

The inspections are made by the database itself (generate_series / a recursive CTE): a part every 1.5 s, two
lines, shifts of 8 hours, two codes each (a DataMatrix graded A, B or, one part in 97, C; an ungraded Code128).
Each round runs both queries, in alternating order; prints one JSON line per round, then the medians and ranges
in ms and the ratio bounded / plain; the last line is JSON.

    python benchmarks/mes_code_grades.py [--dialect postgresql|sqlite] [--inspections 1000000] [--rounds 9]

PostgreSQL: a throwaway database on the server lineguard.testing finds (LINEGUARD_TEST_POSTGRES_URL or the
local one), dropped afterwards.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import Engine, text

from lineguard.services.results.db import make_engine, upgrade_database
from lineguard.testing import throwaway_database
from lineguard.testing.rounds import medians_and_ranges

DOC = Path(__file__).resolve().parents[1] / "docs" / "mes-schema.md"
BOUND = re.compile(r" AND i\.decided_at > [^\n]*")

LOAD = {
    "postgresql": """
        INSERT INTO inspections (inspection_id, line, station, recipe_id, sequence, serial, verdict, reason_codes,
          triggered_at, decided_at, total_ms, timings, created_at, shift, shift_day)
        SELECT lpad(to_hex(n), 8, '0') || '-0000-7000-8000-000000000000', 'l' || (n % 2 + 1), 's1', 'pcb-a', n,
          'LG-' || n, CASE WHEN n % 10 = 0 THEN 'FAIL' ELSE 'PASS' END, '', ts, ts, 50, '{}', ts,
          (ARRAY['early', 'late', 'night'])[extract(hour from ts)::int / 8 + 1], ts::date
        FROM (SELECT n, timestamptz '2026-01-01' + n * interval '1.5 seconds' AS ts
              FROM generate_series(1, :n) AS n) AS s""",
    "sqlite": """
        WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < :n),
        s AS (SELECT n, strftime('%Y-%m-%d %H:%M:%f', '2026-01-01', '+' || (n * 1.5) || ' seconds') AS ts FROM g)
        INSERT INTO inspections (inspection_id, line, station, recipe_id, sequence, serial, verdict, reason_codes,
          triggered_at, decided_at, total_ms, timings, created_at, shift, shift_day)
        SELECT printf('%08x-0000-7000-8000-000000000000', n), 'l' || (n % 2 + 1), 's1', 'pcb-a', n, 'LG-' || n,
          CASE WHEN n % 10 = 0 THEN 'FAIL' ELSE 'PASS' END, '', ts, ts, 50, '{}', ts,
          CASE CAST(strftime('%H', ts) AS int) / 8 WHEN 0 THEN 'early' WHEN 1 THEN 'late' ELSE 'night' END, date(ts)
        FROM s""",
}
LETTERS = {"postgresql": """'{"symbol_contrast": "A"}'::json""", "sqlite": """'{"symbol_contrast": "A"}'"""}
CODES = """
    INSERT INTO codes (inspection_id, symbology, text, x1, y1, x2, y2, grade, quality_grades)
    SELECT inspection_id, sym, serial, 0, 0, 1, 1,
      CASE WHEN sym = 'Code128' THEN NULL WHEN sequence % 97 = 0 THEN 'C' WHEN sequence % 5 = 0 THEN 'B' ELSE 'A' END,
      CASE WHEN sym = 'Code128' THEN NULL ELSE {letters} END
    FROM inspections, (SELECT 'DataMatrix' AS sym UNION ALL SELECT 'Code128') AS v"""


def doc_query(dialect: str) -> str:
    found = re.search(
        rf"<!-- query: codes-graded-c-or-worse {dialect} -->\s*```sql\n-- [^\n]*\n(.*?)```", DOC.read_text(), re.S
    )
    if found is None:
        raise SystemExit(f"{DOC} has no codes-graded-c-or-worse query for {dialect}")
    return found.group(1)


@contextlib.contextmanager
def database(dialect: str) -> Iterator[str]:
    if dialect == "postgresql":
        with throwaway_database() as url:
            yield url
    else:
        with tempfile.TemporaryDirectory() as folder:
            yield f"sqlite:///{folder}/lineguard.db"


def load(engine: Engine, dialect: str, inspections: int) -> float:
    started = time.perf_counter()
    with engine.begin() as conn:
        conn.execute(text(LOAD[dialect]), {"n": inspections})
        conn.execute(text(CODES.replace("{letters}", LETTERS[dialect])))
    with engine.connect() as conn:
        conn.exec_driver_sql("ANALYZE")
        conn.commit()
    return time.perf_counter() - started


def timed_ms(engine: Engine, sql: str) -> tuple[float, int]:
    with engine.connect() as conn:
        started = time.perf_counter()
        rows = conn.exec_driver_sql(sql).all()
        return (time.perf_counter() - started) * 1000, len(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dialect", choices=sorted(LOAD), default="postgresql")
    parser.add_argument("--inspections", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    bounded = doc_query(args.dialect)
    plain = BOUND.sub("", bounded)
    if plain == bounded:
        raise SystemExit("the doc's query has no bound on decided_at to take away")
    if args.dialect == "postgresql":  # psycopg reads % as a placeholder
        bounded, plain = bounded.replace("%", "%%"), plain.replace("%", "%%")
    with database(args.dialect) as url:
        upgrade_database(url)
        engine = make_engine(url)
        try:
            print(json.dumps({"loaded_s": round(load(engine, args.dialect, args.inspections), 1)}))
            rounds = []
            for i in range(args.rounds):
                order = [("bounded", bounded), ("plain", plain)][:: 1 if i % 2 == 0 else -1]
                figures: dict[str, float] = {}
                found = set()
                for name, sql in order:
                    figures[f"{name}_ms"], count = timed_ms(engine, sql)
                    found.add(count)
                if len(found) != 1:
                    raise AssertionError(f"the two queries found different parts: {found}")
                figures["ratio"] = figures["bounded_ms"] / figures["plain_ms"]
                rounds.append(figures)
                print(json.dumps({"round": i, "parts": found.pop(), **{k: round(v, 2) for k, v in figures.items()}}))
        finally:
            engine.dispose()
    print(json.dumps({"dialect": args.dialect, "inspections": args.inspections, **medians_and_ranges(rounds, 3)}))


if __name__ == "__main__":
    main()
