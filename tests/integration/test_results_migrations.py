"""The migrations build exactly the schema the models describe, on SQLite and PostgreSQL."""

from __future__ import annotations

import multiprocessing
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection, func, insert, inspect, select, text
from sqlalchemy.exc import IntegrityError

from lineguard.services.results.api.tokens import create_token, verify_token
from lineguard.services.results.db import (
    current_revision,
    downgrade_database,
    head_revision,
    known_revisions,
    make_engine,
    upgrade_database,
)
from lineguard.services.results.records import decision_rows, from_unix_ns
from lineguard.services.results.schema import (
    Base,
    Code,
    Defect,
    Inspection,
    InspectionImage,
    InspectionReason,
    ModelVersion,
    PlcResult,
)
from lineguard.services.results.store import record_plc_ack
from lineguard.testing import throwaway_database
from lineguard.testing.records import sample_ack, sample_decision
from lineguard.v1.decision_pb2 import Verdict

TABLES = {
    "inspections",
    "defects",
    "codes",
    "plc_results",
    "inspection_reasons",
    "model_versions",
    "recipe_versions",
    "api_tokens",
    "inspection_images",
    "verdict_confirmations",
    "shadow_verdicts",
    "drift_baselines",
    "drift_states",
    "selftest_runs",
    "yield_hours",
    "alembic_version",
}
VIEWS = {"part_history", "yield_by_shift", "defect_pareto"}


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database with nothing in it: a new SQLite path, or a PostgreSQL database of this test's own."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'new' / 'lineguard.db'}"
    else:
        with throwaway_database() as url:
            yield url


COLUMNS_SINCE_0003 = {"part_id", "lot", "product", "shift", "shift_day"}
COLUMNS_SINCE_0004 = {"explanation", "recipe_sha256", "image_quality", "trace_id"}
COLUMNS_SINCE_0007 = {"grade", "quality", "quality_grades"}  # of codes


def insert_at_0001(conn: Connection, row: dict[str, Any]) -> None:
    """An inspection row as lineguard 0001 wrote it: the models' columns less those added since."""
    conn.execute(
        insert(Inspection.__table__).values(
            {k: v for k, v in row.items() if k not in COLUMNS_SINCE_0003 | COLUMNS_SINCE_0004}
        )
    )


def schema_differences(url: str) -> list:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            return compare_metadata(context, Base.metadata)
    finally:
        engine.dispose()


def test_migrated_schema_equals_the_models(empty_url: str) -> None:
    assert upgrade_database(empty_url) == head_revision()
    assert schema_differences(empty_url) == []


def test_upgrade_is_safe_to_repeat_and_to_undo(empty_url: str) -> None:
    upgrade_database(empty_url)
    assert upgrade_database(empty_url) == head_revision()  # a second start changes nothing
    downgrade_database(empty_url, "base")
    engine = make_engine(empty_url)
    try:
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
        assert current_revision(engine) is None
    finally:
        engine.dispose()
    upgrade_database(empty_url)
    engine = make_engine(empty_url)
    try:
        assert set(inspect(engine).get_table_names()) == TABLES
        indexes = {ix["name"] for ix in inspect(engine).get_indexes("inspections")}
        assert {"ix_inspections_line_station_decided_at", "ix_inspections_serial", "ix_inspections_verdict"} <= indexes
    finally:
        engine.dispose()


def test_the_alembic_command_line_takes_the_url_from_x_argument(tmp_path: Path) -> None:
    ini = Path(__import__("lineguard.services.results.migrations", fromlist=["x"]).__file__).with_name("alembic.ini")
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    run = subprocess.run(
        [sys.executable, "-m", "alembic", "-c", str(ini), "-x", f"url={url}", "upgrade", "head"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr
    assert schema_differences(url) == []


def test_replicas_starting_together_migrate_once(empty_url: str) -> None:
    # Replicas are processes: the database's own lock serialises them.
    with ProcessPoolExecutor(max_workers=3, mp_context=multiprocessing.get_context("spawn")) as pool:
        revisions = list(pool.map(upgrade_database, [empty_url] * 3))
    assert revisions == [head_revision()] * 3
    assert schema_differences(empty_url) == []


def test_threads_of_one_process_upgrading_together_take_turns(empty_url: str) -> None:
    # Alembic's context is one per process: without taking turns, they would run each other's migrations.
    with ThreadPoolExecutor(max_workers=3) as pool:
        revisions = list(pool.map(lambda _: upgrade_database(empty_url), range(3)))
    assert revisions == [head_revision()] * 3
    assert schema_differences(empty_url) == []


def test_a_failing_migration_leaves_nothing_behind_on_sqlite(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Each migration runs in one transaction, on SQLite too: half a schema is never left.
    url = f"sqlite:///{tmp_path / 'lineguard.db'}"
    from alembic.operations import Operations

    real_create_index = Operations.create_index

    def fail_at_defects(self, name, table, *args, **kwargs):  # type: ignore[no-untyped-def]
        if table == "defects":
            raise RuntimeError("disk unplugged")
        return real_create_index(self, name, table, *args, **kwargs)

    monkeypatch.setattr(Operations, "create_index", fail_at_defects)
    with pytest.raises(RuntimeError, match="disk unplugged"):
        upgrade_database(url)
    engine = make_engine(url)
    try:
        assert inspect(engine).get_table_names() == []
    finally:
        engine.dispose()


def test_0002_keeps_the_plc_deliveries_already_recorded(empty_url: str) -> None:
    # A database from before plc_results: its rows' deliveries are copied in, so a late ack still changes nothing.
    upgrade_database(empty_url, "0001")
    decision = sample_decision()
    rows = decision_rows(decision).inspection
    delivered_at = from_unix_ns(decision.decided_unix_ns + 3_000_000)
    engine = make_engine(empty_url)
    try:
        with engine.begin() as conn:
            insert_at_0001(conn, {**rows, "plc_verdict": "FAIL", "plc_delivered_at": delivered_at})
        assert upgrade_database(empty_url) == head_revision()
        assert record_plc_ack(engine, sample_ack(decision, delivered=False, verdict=Verdict.VERDICT_PASS)) is True
        with engine.connect() as conn:
            row = conn.execute(select(Inspection.plc_verdict, Inspection.plc_delivered_at)).one()
            report = conn.execute(select(PlcResult.plc_verdict, PlcResult.plc_delivered_at)).one()
        assert tuple(row) == tuple(report) == ("FAIL", delivered_at)
    finally:
        engine.dispose()


def _tables_and_views(url: str) -> tuple[set[str], set[str]]:
    engine = make_engine(url)
    try:
        found = inspect(engine)
        return set(found.get_table_names()), set(found.get_view_names())
    finally:
        engine.dispose()


def test_up_and_down_from_empty_through_every_revision(empty_url: str) -> None:
    for revision in known_revisions():
        assert upgrade_database(empty_url, revision) == revision
    assert _tables_and_views(empty_url) == (TABLES, VIEWS)
    for revision in reversed(["base", *known_revisions()[:-1]]):
        downgrade_database(empty_url, revision)
    assert _tables_and_views(empty_url) == ({"alembic_version"}, set())
    upgrade_database(empty_url)
    assert _tables_and_views(empty_url) == (TABLES, VIEWS)
    assert schema_differences(empty_url) == []


def test_0003_from_0001_keeps_every_row_and_gives_them_reasons_and_versions(empty_url: str) -> None:
    # A database lineguard 0001 wrote: its inspections get their reasons as rows, the versions they name, the views;
    # going back to 0001 drops what 0003 added and nothing else (on SQLite no table is rebuilt, so no cascade).
    upgrade_database(empty_url, "0001")
    first, second = sample_decision(1), sample_decision(2)
    engine = make_engine(empty_url)
    try:
        with engine.begin() as conn:
            for decision in (first, second):
                rows = decision_rows(decision)
                insert_at_0001(conn, {**rows.inspection, "reason_codes": "DEFECT_SPUR,CODE_MISSING,DEFECT_SHORT"})
                conn.execute(insert(Defect), rows.defects)
        assert upgrade_database(empty_url) == head_revision()
        with engine.connect() as conn:
            reasons = conn.execute(
                select(InspectionReason.position, InspectionReason.reason_code, InspectionReason.severity)
                .where(InspectionReason.inspection_id == first.part.inspection_id)
                .order_by(InspectionReason.position)
            ).all()
            assert [tuple(r) for r in reasons] == [
                (0, "CODE_MISSING", "FAIL"),
                (1, "DEFECT_SHORT", "FAIL"),
                (2, "DEFECT_SPUR", "FAIL"),
            ]
            model = conn.execute(select(ModelVersion.__table__)).one()
            assert (model.model_id, model.version, model.sha256) == ("deeppcb-yolo11n", "3", None)
            assert model.first_used_at == from_unix_ns(first.decided_unix_ns)
            assert model.last_used_at == from_unix_ns(second.decided_unix_ns)
            history = conn.execute(
                text("SELECT serial, verdict, defects, model_version FROM part_history ORDER BY decided_at")
            ).all()
            assert [tuple(h) for h in history] == [("LG-00000001", "FAIL", 2, "3")] * 2
            pareto = conn.execute(text("SELECT reason_code, parts FROM defect_pareto ORDER BY reason_code")).all()
            assert [tuple(p) for p in pareto] == [("CODE_MISSING", 2), ("DEFECT_SHORT", 2), ("DEFECT_SPUR", 2)]
        downgrade_database(empty_url, "0001")
        with engine.connect() as conn:
            assert conn.execute(select(func.count()).select_from(Defect)).scalar_one() == 4
            assert conn.execute(select(func.count()).select_from(Inspection.__table__)).scalar_one() == 2
        assert _tables_and_views(empty_url) == ({"inspections", "defects", "codes", "alembic_version"}, set())
        columns = {c["name"] for c in inspect(engine).get_columns("inspections")}
        assert not columns & COLUMNS_SINCE_0003
        assert upgrade_database(empty_url) == head_revision()
        assert schema_differences(empty_url) == []
    finally:
        engine.dispose()


def test_0004_adds_the_quality_role_and_going_back_keeps_every_inspection(empty_url: str) -> None:
    # api_tokens is rebuilt on SQLite for its new role check; inspections is not, so undoing 0004 cascades nothing.
    upgrade_database(empty_url, "0003")
    decision = sample_decision()
    engine = make_engine(empty_url)
    try:
        with engine.begin() as conn:
            rows = decision_rows(decision)
            conn.execute(
                insert(Inspection.__table__).values(
                    {k: v for k, v in rows.inspection.items() if k not in COLUMNS_SINCE_0004}
                )
            )
            conn.execute(insert(Defect), rows.defects)
        reader = create_token(engine, "reader", "mes")
        with pytest.raises(IntegrityError):
            create_token(engine, "quality", "qe")
        assert upgrade_database(empty_url) == head_revision()
        assert verify_token(engine, create_token(engine, "quality", "qe")) is not None
        assert verify_token(engine, reader) is not None
        downgrade_database(empty_url, "0003")
        with engine.connect() as conn:
            assert conn.execute(select(func.count()).select_from(Defect)).scalar_one() == len(rows.defects)
            roles = conn.execute(text("SELECT role FROM api_tokens")).scalars().all()
        assert roles == ["reader"]
        columns = {c["name"] for c in inspect(engine).get_columns("inspections")}
        assert not columns & COLUMNS_SINCE_0004
        assert upgrade_database(empty_url) == head_revision()
        assert schema_differences(empty_url) == []
    finally:
        engine.dispose()


def test_0007_adds_sizes_and_grades_as_null_and_going_back_keeps_every_code_and_image(empty_url: str) -> None:
    # Rows before 0007 never had their sizes and grades measured: NULL, not a guess; undoing 0007 drops the columns
    # in place, so no code or image row goes with them (SQLite rebuilds nothing).
    upgrade_database(empty_url, "0006")
    decision = sample_decision()
    rows = decision_rows(decision)
    engine = make_engine(empty_url)
    try:
        with engine.begin() as conn:
            conn.execute(insert(Inspection.__table__).values(rows.inspection))
            old_code = {k: v for k, v in rows.codes[0].items() if k not in COLUMNS_SINCE_0007}
            conn.execute(insert(Code.__table__).values(old_code))
            conn.execute(
                text(
                    "INSERT INTO inspection_images (inspection_id, kind, uri, content_type, bytes, sha256, stored_at) "
                    "VALUES (:i, 'image', 'file:///a.png', 'image/png', 10, :sha, :at)"
                ),
                {"i": decision.part.inspection_id, "sha": "0" * 64, "at": from_unix_ns(decision.decided_unix_ns)},
            )
        assert upgrade_database(empty_url) == head_revision()
        with engine.connect() as conn:
            code = conn.execute(select(Code.grade, Code.quality, Code.quality_grades, Code.text)).one()
            image = conn.execute(select(InspectionImage.width, InspectionImage.height, InspectionImage.uri)).one()
        assert tuple(code) == (None, None, None, "LG-00000001")
        assert tuple(image) == (None, None, "file:///a.png")
        downgrade_database(empty_url, "0006")
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM codes")).scalar_one() == 1
            assert conn.execute(text("SELECT count(*) FROM inspection_images")).scalar_one() == 1
        assert not {c["name"] for c in inspect(engine).get_columns("codes")} & COLUMNS_SINCE_0007
        assert not {c["name"] for c in inspect(engine).get_columns("inspection_images")} & {"width", "height"}
        assert upgrade_database(empty_url) == head_revision()
        assert schema_differences(empty_url) == []
    finally:
        engine.dispose()
