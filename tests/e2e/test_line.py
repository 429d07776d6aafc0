"""The whole line as separate processes: six services, a real nats-server, SQLite, OPC UA.

A simulated PLC triggers parts over OPC UA; every trigger must get exactly one result
at the PLC, and every result must be the row the results service wrote."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import sqlalchemy as sa

from lineguard.localline import LocalLine
from lineguard.sim.plc import PlcRunReport, SimulatedPlc
from lineguard.sim.plc_columns import check_plc_columns, read_plc_rows

PARTS = 60


def wait_for_rows(url: str, expected: int, timeout_s: float = 60) -> list[sa.Row]:
    engine = sa.create_engine(url)
    try:
        for _ in range(max(1, int(timeout_s / 0.25))):
            with engine.connect() as conn:
                rows = conn.execute(
                    sa.text(
                        "SELECT inspection_id, sequence, verdict, serial, model_id, model_version, recipe_version, "
                        "plc_verdict FROM inspections ORDER BY sequence"
                    )
                ).all()
            if len(rows) >= expected and all(r.plc_verdict for r in rows):
                return rows
            asyncio.run(asyncio.sleep(0.25))
        return rows
    finally:
        engine.dispose()


@pytest.fixture(scope="module")
def line_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[PlcRunReport, list[sa.Row], dict, LocalLine]:
    # A generous deadline: this checks that every part flows through every service, not
    # how fast a shared CI box is (benchmarks/ measure speed).
    line = LocalLine(workdir=tmp_path_factory.mktemp("line"), deadline_ms=10_000)
    line.start()
    try:

        async def drive() -> PlcRunReport:
            async with SimulatedPlc(line.opcua_endpoint, station="s1") as plc:
                return await plc.run(PARTS, rate_hz=4.0, result_timeout_s=60)

        report = asyncio.run(drive())
        wait_for_rows(f"sqlite:///{line.database_path}", PARTS)
    finally:
        codes = line.stop()
    # Read once the line has stopped: the results service wrote everything on the bus before it did.
    rows = wait_for_rows(f"sqlite:///{line.database_path}", PARTS, timeout_s=0)
    return report, rows, codes, line


def test_every_trigger_gets_exactly_one_result_at_the_plc(line_run) -> None:
    report, _, _, _ = line_run
    assert report.missing == [] and report.duplicates == [] and report.unexpected == []
    assert len(report.results) == PARTS
    assert {r.verdict for r in report.results} <= {"PASS", "FAIL", "REWORK"}


def test_every_result_is_one_database_row_with_the_same_verdict(line_run) -> None:
    report, rows, _, _ = line_run
    assert len(rows) == PARTS
    at_plc = {r.inspection_id: r.verdict for r in report.results}
    in_db = {r.inspection_id: r.verdict for r in rows}
    assert in_db == at_plc
    assert all(r.plc_verdict == r.verdict for r in rows), "the gateway's ack must reach the row"


def test_every_rows_plc_columns_agree_with_what_the_plc_received(line_run) -> None:
    report, _, _, line = line_run
    check = check_plc_columns(read_plc_rows(f"sqlite:///{line.database_path}"), report.results)
    assert check.ok and check.rows == PARTS, "\n".join([check.line, *check.disagreements])


def test_rows_trace_model_recipe_and_the_serial_read_from_the_part(line_run) -> None:
    _, rows, _, _ = line_run
    for row in rows:
        assert row.model_id and row.model_version and row.recipe_version == "1"
        # The simulated camera prints LG-<sequence> as a DataMatrix; OCR must read it back.
        assert row.serial == f"LG-{row.sequence:08d}"


def test_no_part_times_out(line_run) -> None:
    report, _rows, _, _ = line_run
    assert not [r for r in report.results if "TIMEOUT" in r.reasons]


def test_services_stop_cleanly_on_sigterm(line_run) -> None:
    _, _, codes, _ = line_run
    assert codes == {name: 0 for name in codes}, codes


def test_demo_command_runs_to_its_summary(tmp_path: Path) -> None:
    import json
    import subprocess
    import sys

    cli = Path(sys.executable).parent / "lineguard"
    result = subprocess.run(
        [str(cli), "demo", "--parts", "20", "--rate", "8", "--workdir", str(tmp_path / "demo"), "--json"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads(result.stdout)  # with --json, stdout is the JSON alone (a script pipes it to jq)
    assert summary["results_at_plc"] == 20 and summary["database_rows"] == 20
    assert summary["missing"] == 0 and summary["duplicates"] == 0
    assert (summary["plc_columns_agree"], summary["plc_columns_rows"]) == (20, 20)
    assert "PLC columns: 20 of 20 agree" in result.stderr
    assert summary["pass"] + summary["fail"] + summary["rework"] + summary["error"] == 20
    assert 0 < summary["latency_p50_ms"] <= summary["latency_p99_ms"]
    assert Path(summary["database"]).exists()
