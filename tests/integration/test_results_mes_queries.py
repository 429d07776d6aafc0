"""The example queries in docs/mes-schema.md run, and find the parts they promise, on both databases."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from lineguard.config.model import ShiftCalendar
from lineguard.services.results.db import make_engine, upgrade_database
from lineguard.services.results.records import LineFacts
from lineguard.services.results.store import write_decision
from lineguard.testing.records import sample_decision

DOC = Path(__file__).resolve().parents[2] / "docs" / "mes-schema.md"


def doc_queries() -> list[tuple[set[str], str]]:
    blocks = re.findall(r"```sql\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)
    queries = []
    for block in blocks:
        first, _, sql = block.partition("\n")
        assert first.startswith("-- "), f"an SQL block in {DOC.name} does not say where it runs: {first!r}"
        queries.append(({d.strip() for d in first[3:].split(",")}, sql))
    return queries


QUERIES = doc_queries()
# The doc's shift is "night": here one shift the whole day, so every part written now is in it.
FACTS = LineFacts(calendar=ShiftCalendar(shifts=[{"name": "night", "start": "00:00", "end": "00:00"}]))


CASES = [(dialect, sql) for where, sql in QUERIES for dialect in sorted(where)]


def test_the_doc_has_queries_for_both_databases() -> None:
    for dialect in ("sqlite", "postgresql"):
        assert sum(d == dialect for d, _ in CASES) >= 6


@pytest.mark.parametrize(("dialect", "sql"), CASES, ids=[f"{d}-{i}" for i, (d, _) in enumerate(CASES)])
def test_doc_query_finds_the_parts(dialect: str, sql: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    url = request.getfixturevalue("postgres_url") if dialect == "postgresql" else f"sqlite:///{tmp_path / 'lg.db'}"
    upgrade_database(url)
    engine = make_engine(url)
    try:
        for i in range(3):
            decision = sample_decision(i, triggered_ns=time.time_ns())
            decision.part.lot = "LOT-2026-0528"
            code = decision.ocr.codes[0]  # graded as the OCR service grades a faded print: C on its contrast
            code.grade = "C" if i == 0 else "A"
            code.quality_grades.update(symbol_contrast=code.grade, modulation="A")
            code.quality.update(symbol_contrast=0.45 if i == 0 else 0.9, modulation=0.91)
            write_decision(engine, decision, FACTS)
        with engine.connect() as conn:
            # psycopg reads % as a placeholder; the doc's SQL is written for a person's SQL console.
            rows = conn.exec_driver_sql(sql.replace("%", "%%") if dialect == "postgresql" else sql).all()
    finally:
        engine.dispose()
    assert rows, f"no rows from:\n{sql}"
