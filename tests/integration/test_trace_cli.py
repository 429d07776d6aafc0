"""`lineguard trace SERIAL`: a part's story from the MES database's views, as a table and as JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from lineguard.services.results.db import make_engine, upgrade_database
from lineguard.services.results.records import LineFacts
from lineguard.services.results.schema import InspectionImage
from lineguard.services.results.store import record_plc_ack, write_decision
from lineguard.testing import throwaway_database
from lineguard.testing.records import sample_ack, sample_decision
from lineguard.v1.decision_pb2 import Verdict

LINEGUARD = str(Path(sys.executable).with_name("lineguard"))


def lineguard(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    # Wide enough that rich does not fold the table's cells.
    env = {"COLUMNS": "240", "PATH": str(Path(sys.executable).parent), **env}
    return subprocess.run([LINEGUARD, *args], capture_output=True, text=True, timeout=120, check=False, env=env)


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'lineguard.db'}"
    else:
        with throwaway_database() as pg:
            yield pg


def test_trace_tells_every_inspection_with_why_and_what_judged_it(url: str) -> None:
    upgrade_database(url)
    engine = make_engine(url)
    try:
        failed = sample_decision(1)
        failed.part.lot = "LOT-7"
        failed.inference.model_sha256 = "c0ffee" + "0" * 58
        reworked = sample_decision(2, verdict=Verdict.VERDICT_PASS)  # the same part, after rework
        reworked.reason_codes[:] = []
        for decision in (failed, reworked):
            write_decision(engine, decision, LineFacts())
        record_plc_ack(engine, sample_ack(failed))
        write_decision(engine, sample_decision(3, serial="LG-00000099"), LineFacts())  # another part
    finally:
        engine.dispose()

    as_json = lineguard("trace", "LG-00000001", "--url", url, "--json")
    assert as_json.returncode == 0, as_json.stderr
    story = json.loads(as_json.stdout)
    assert story["serial"] == "LG-00000001"
    first, second = story["inspections"]
    assert (first["verdict"], first["lot"], first["defects"], first["plc_verdict"]) == ("FAIL", "LOT-7", 2, "FAIL")
    assert [r["code"] for r in first["reasons"]] == ["DEFECT_SHORT", "DEFECT_SPUR"]
    assert (first["model_id"], first["model_version"], first["model_sha256"]) == (
        "deeppcb-yolo11n",
        "3",
        "c0ffee" + "0" * 58,
    )
    assert (first["recipe_id"], first["recipe_version"]) == ("pcb-a", "1")
    assert (second["verdict"], second["reasons"]) == ("PASS", [])
    # The sample's code carries no print-quality grades: null, and the table says "not graded", never a letter.
    assert [(c["text"], c["grade"], c["quality_grades"]) for c in first["codes"]] == [("LG-00000001", None, None)]
    assert first["images"] == []  # nothing archived

    table = lineguard("trace", "LG-00000001", "--url", url)
    assert table.returncode == 0, table.stderr
    for text in (
        "part LG-00000001: 2 inspections",
        "FAIL",
        "PASS",
        "DEFECT_SHORT (FAIL)",
        "deeppcb-yolo11n v3",
        "c0ffee",
        "DataMatrix LG-00000001 (not graded)",
    ):
        assert text in table.stdout, text
    assert "LG-00000099" not in table.stdout
    # An 80-column terminal: a block per inspection, every value whole (ten columns side by side folded them all).
    narrow = lineguard("trace", "LG-00000001", "--url", url, COLUMNS="80")
    assert narrow.returncode == 0, narrow.stderr
    assert max(len(line) for line in narrow.stdout.splitlines()) <= 80
    for text in ("verdict", "FAIL", "PASS", "DEFECT_SHORT (FAIL)", "deeppcb-yolo11n v3", "LOT-7"):
        assert text in narrow.stdout, text
    assert "…" not in narrow.stdout, narrow.stdout


def test_trace_writes_every_time_in_utc_the_json_in_iso_8601_with_a_z(url: str) -> None:
    upgrade_database(url)
    engine = make_engine(url)
    try:
        decision = sample_decision(1)  # triggered T0 + 1 s, decided 55.75 ms later
        write_decision(engine, decision, LineFacts())
        record_plc_ack(engine, sample_ack(decision))  # delivered 3 ms after the verdict
        with engine.begin() as conn:
            conn.execute(
                sa.insert(InspectionImage).values(
                    inspection_id=decision.part.inspection_id,
                    kind="image",
                    uri="file:///archive/one.png",
                    content_type="image/png",
                    bytes=3,
                    sha256="0" * 64,
                    stored_at=datetime(2026, 5, 28, 21, tzinfo=UTC),
                    deleted_at=datetime(2026, 5, 29, tzinfo=UTC),
                )
            )
    finally:
        engine.dispose()

    # A PostgreSQL session in the plant's zone hands the times back as +02:00 values; SQLite as text with no zone.
    as_json = lineguard("trace", "LG-00000001", "--url", url, "--json", PGTZ="Europe/Berlin")
    assert as_json.returncode == 0, as_json.stderr
    (only,) = json.loads(as_json.stdout)["inspections"]
    assert (only["decided_at"], only["plc_delivered_at"]) == (
        "2026-05-28T20:26:41.179206Z",
        "2026-05-28T20:26:41.182206Z",
    )
    assert only["images"][0]["deleted_at"] == "2026-05-29T00:00:00.000000Z"

    table = lineguard("trace", "LG-00000001", "--url", url, PGTZ="Europe/Berlin")
    assert table.returncode == 0, table.stderr
    assert "2026-05-28 20:26:41.179" in table.stdout  # under "decided (UTC)", not the session's 22:26
    assert "deleted by retention 2026-05-29 00:00:00" in table.stdout


def test_an_unknown_serial_and_a_database_without_the_views_say_so(url: str, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.db"
    gone = lineguard("trace", "LG-00000001", "--url", f"sqlite:///{missing}")
    assert gone.returncode == 1 and f"no database at {missing}" in gone.stderr and not missing.exists()
    upgrade_database(url, "0002")
    old = lineguard("trace", "LG-00000001", "--url", url)
    assert old.returncode == 1 and "no part_history view: run `lineguard db upgrade`" in old.stderr
    upgrade_database(url)
    unknown = lineguard("trace", "LG-'; DROP TABLE inspections; --", "--url", url, "--json")
    assert unknown.returncode == 1 and "no inspection of serial" in unknown.stderr
    assert json.loads(unknown.stdout)["inspections"] == []


def test_trace_from_the_config_connects_with_its_password_file(tmp_path: Path, line_config_dict) -> None:
    import yaml

    secret = tmp_path / "db-password"
    config = tmp_path / "line.yaml"
    # A database of its own: the session's (postgres_url) holds other tests' parts, this serial among them.
    with throwaway_database() as url:
        upgrade_database(url)

        def trace_with(password_file: Path) -> subprocess.CompletedProcess[str]:
            raw = line_config_dict(database_url=url)
            raw["database"]["password_file"] = str(password_file)
            config.write_text(yaml.safe_dump(raw))
            return lineguard("trace", "LG-00000001", "--config", str(config))

        secret.write_text("s3cret\n")
        read = trace_with(secret)
        assert read.returncode == 1 and "no inspection of serial" in read.stderr, read.stderr
        # The file is read, not passed over: one that is not there is the configuration's error.
        missing = trace_with(tmp_path / "not-there")
        assert missing.returncode == 2 and "database.password_file" in missing.stderr, missing.stderr
