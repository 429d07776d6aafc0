"""The store on a real SQLite file and a real PostgreSQL: one row per inspection, whatever arrives twice,
and its PLC columns filled whichever of the decision and its ack comes first."""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, event, func, select, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from lineguard.services.results.db import make_engine, upgrade_database
from lineguard.services.results.records import InvalidRecord, from_unix_ns
from lineguard.services.results.schema import Code, Defect, Inspection, PlcResult
from lineguard.services.results.store import record_plc_ack, write_decision
from lineguard.testing.records import sample_ack, sample_decision
from lineguard.v1.decision_pb2 import Verdict


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'db' / 'lineguard.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    upgrade_database(url)
    engine = make_engine(url)
    yield engine
    engine.dispose()


@pytest.fixture
def other_engine(engine: Engine) -> Iterator[Engine]:
    """A second engine on the same database: another writer, on connections of its own."""
    other = make_engine(engine.url.render_as_string(hide_password=False))
    yield other
    other.dispose()


def plc_columns(engine: Engine, inspection_id: str) -> tuple[Any, Any]:
    with engine.connect() as conn:
        row = conn.execute(
            select(Inspection.plc_verdict, Inspection.plc_delivered_at).where(Inspection.inspection_id == inspection_id)
        ).one()
    return row.plc_verdict, row.plc_delivered_at


@contextlib.contextmanager
def in_between(engine: Engine, other: Callable[[], object]) -> Iterator[list[Future[Any]]]:
    """Run `other` right after `engine` executes its first INSERT or UPDATE, before its transaction goes on.

    `other` runs in a thread, on connections of its own, and is waited for: it commits in the
    middle of `engine`'s transaction unless it has to wait for that transaction (on SQLite a
    second writer always does; then it goes on once the first commits)."""
    pool = ThreadPoolExecutor(max_workers=1)
    started: list[Future[Any]] = []
    wait_s = 0.5 if engine.dialect.name == "sqlite" else 10.0

    def after_statement(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if not started and statement.lstrip().upper().startswith(("INSERT", "UPDATE")):
            started.append(pool.submit(other))
            with contextlib.suppress(TimeoutError):
                started[0].result(timeout=wait_s)

    event.listen(engine, "after_cursor_execute", after_statement)
    try:
        yield started
    finally:
        event.remove(engine, "after_cursor_execute", after_statement)
        pool.shutdown(wait=True)


def counts(engine: Engine, inspection_id: str) -> tuple[int, int, int]:
    with engine.connect() as conn:
        return tuple(
            conn.execute(
                select(func.count()).select_from(table).where(table.inspection_id == inspection_id)
            ).scalar_one()
            for table in (Inspection, Defect, Code)
        )  # type: ignore[return-value]


def test_writes_the_inspection_its_defects_and_codes(engine: Engine) -> None:
    decision = sample_decision(3)
    assert write_decision(engine, decision) is True
    with Session(engine) as session:
        row = session.get_one(Inspection, decision.part.inspection_id)
        defects, codes = list(row.defects), list(row.codes)
    assert (row.line, row.station, row.recipe_id, row.recipe_version, row.sequence) == ("l1", "s1", "pcb-a", "1", 3)
    assert (row.verdict, row.reason_codes, row.serial) == ("FAIL", "DEFECT_SHORT,DEFECT_SPUR", "LG-00000001")
    assert (row.model_id, row.model_version, row.image_width, row.image_height) == ("deeppcb-yolo11n", "3", 640, 800)
    assert row.triggered_at == from_unix_ns(decision.part.triggered_unix_ns)
    assert row.decided_at == from_unix_ns(decision.decided_unix_ns)
    assert row.triggered_at.tzinfo is UTC and row.created_at.tzinfo is UTC
    assert row.total_ms == 55.75
    assert row.timings == {"trigger_to_inference": 41.5, "decision": 0.25, "total": 55.75}
    assert row.plc_delivered_at is None and row.plc_verdict is None
    assert [(d.class_name, d.score, d.area_mm2) for d in defects] == [("short", 0.9, 0.1777), ("spur", 0.61, None)]
    assert defects[0].mask is None
    assert defects[1].mask == [[100.0, 100.0], [110.0, 100.0], [105.0, 120.0]]
    assert [(c.symbology, c.text, c.x2) for c in codes] == [("DataMatrix", "LG-00000001", 85.0)]


def test_a_missing_mask_is_sql_null(engine: Engine) -> None:
    decision = sample_decision()
    write_decision(engine, decision)
    with engine.connect() as conn:
        nulls = conn.execute(
            text("SELECT count(*) FROM defects WHERE inspection_id = :i AND mask IS NULL"),
            {"i": decision.part.inspection_id},
        ).scalar_one()
    assert nulls == 1


def test_the_same_decision_twice_is_one_row_with_the_same_defects(engine: Engine) -> None:
    decision = sample_decision()
    iid = decision.part.inspection_id
    assert write_decision(engine, decision) is True
    with engine.connect() as conn:
        first_ids = (
            conn.execute(select(Defect.id).where(Defect.inspection_id == iid).order_by(Defect.id)).scalars().all()
        )
    assert write_decision(engine, decision) is False
    again = sample_decision()
    again.CopyFrom(decision)
    again.verdict = Verdict.VERDICT_PASS  # a changed redelivery does not rewrite history either
    assert write_decision(engine, again) is False
    assert counts(engine, iid) == (1, 2, 1)
    with engine.connect() as conn:
        ids = conn.execute(select(Defect.id).where(Defect.inspection_id == iid).order_by(Defect.id)).scalars().all()
        verdict = conn.execute(select(Inspection.verdict).where(Inspection.inspection_id == iid)).scalar_one()
    assert ids == first_ids and verdict == "FAIL"


def test_concurrent_duplicates_write_once(engine: Engine) -> None:
    decision = sample_decision()
    with ThreadPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(lambda _: write_decision(engine, decision), range(6)))
    assert results.count(True) == 1
    assert counts(engine, decision.part.inspection_id) == (1, 2, 1)


def test_a_decision_without_results_is_written_with_nulls(engine: Engine) -> None:
    decision = sample_decision(verdict=Verdict.VERDICT_FAIL)
    decision.ClearField("inference")
    decision.ClearField("ocr")
    decision.ClearField("model_id")
    decision.ClearField("model_version")
    decision.ClearField("serial")
    del decision.reason_codes[:]
    decision.reason_codes.append("TIMEOUT")
    assert write_decision(engine, decision)
    iid = decision.part.inspection_id
    with engine.connect() as conn:
        row = conn.execute(
            select(Inspection.model_id, Inspection.serial, Inspection.image_width, Inspection.reason_codes).where(
                Inspection.inspection_id == iid
            )
        ).one()
    assert tuple(row) == (None, None, None, "TIMEOUT")
    assert counts(engine, iid) == (1, 0, 0)


def test_plc_ack_fills_delivery_once(engine: Engine) -> None:
    decision = sample_decision()
    iid = decision.part.inspection_id
    write_decision(engine, decision)

    def plc() -> tuple:
        with engine.connect() as conn:
            return tuple(
                conn.execute(
                    select(Inspection.plc_verdict, Inspection.plc_delivered_at).where(Inspection.inspection_id == iid)
                ).one()
            )

    assert record_plc_ack(engine, sample_ack(decision, delivered=False)) is True
    assert plc() == ("FAIL", None)  # attempted, not delivered
    delivered_ns = decision.decided_unix_ns + 4_000_000
    assert record_plc_ack(engine, sample_ack(decision, delivered_ns=delivered_ns)) is True
    assert plc() == ("FAIL", from_unix_ns(delivered_ns))
    assert plc()[1].tzinfo is UTC
    # The same ack again, a later retry, or a late undelivered one: the first delivery stays.
    assert record_plc_ack(engine, sample_ack(decision, delivered_ns=delivered_ns)) is True
    assert record_plc_ack(engine, sample_ack(decision, delivered_ns=delivered_ns + 10**9)) is True
    assert record_plc_ack(engine, sample_ack(decision, delivered=False, verdict=Verdict.VERDICT_PASS)) is True
    assert plc() == ("FAIL", from_unix_ns(delivered_ns))


def test_plc_ack_before_its_decision_reports_no_row(engine: Engine) -> None:
    decision = sample_decision()
    assert record_plc_ack(engine, sample_ack(decision)) is False
    assert counts(engine, decision.part.inspection_id) == (0, 0, 0)


def test_a_decision_committed_in_the_middle_of_its_acks_write_still_gets_the_plc_columns(
    engine: Engine, other_engine: Engine
) -> None:
    # The defect of issue 9: the ack's UPDATE found no committed row, its decision committed, and the ack's
    # second statement (SELECT EXISTS) found the row: the ack counted as recorded, the row kept NULL.
    decision = sample_decision()
    ack = sample_ack(decision)
    with in_between(engine, lambda: write_decision(other_engine, decision)) as decided:
        found = record_plc_ack(engine, ack)
    assert decided and decided[0].result() is True
    if not found:
        # How the ack consumer took False before plc_results: it retried. (A retry is harmless now, and no longer
        # made.) The defect was True, the message acked on it, with the row's PLC columns still NULL.
        record_plc_ack(engine, ack)
    assert plc_columns(engine, decision.part.inspection_id) == ("FAIL", from_unix_ns(ack.delivered_unix_ns))


def test_an_ack_committed_in_the_middle_of_its_decisions_write_fills_the_row(
    engine: Engine, other_engine: Engine
) -> None:
    decision = sample_decision()
    ack = sample_ack(decision)
    with in_between(engine, lambda: record_plc_ack(other_engine, ack)) as acked:
        assert write_decision(engine, decision) is True
    assert acked and acked[0].exception() is None
    assert plc_columns(engine, decision.part.inspection_id) == ("FAIL", from_unix_ns(ack.delivered_unix_ns))


def test_an_ack_long_before_its_decision_is_kept_and_filled_in_by_the_decision(engine: Engine) -> None:
    decision = sample_decision()
    iid = decision.part.inspection_id
    missed, delivered = sample_ack(decision, delivered=False), sample_ack(decision)
    assert record_plc_ack(engine, missed) is False
    assert record_plc_ack(engine, delivered) is False
    assert record_plc_ack(engine, missed) is False  # a late redelivery does not undo the delivery
    assert write_decision(engine, decision) is True
    assert plc_columns(engine, iid) == ("FAIL", from_unix_ns(delivered.delivered_unix_ns))
    # Redeliveries of both change nothing.
    assert write_decision(engine, decision) is False
    assert record_plc_ack(engine, sample_ack(decision, delivered_ns=delivered.delivered_unix_ns + 10**9)) is True
    assert plc_columns(engine, iid) == ("FAIL", from_unix_ns(delivered.delivered_unix_ns))
    with engine.connect() as conn:
        assert (
            conn.execute(select(func.count()).select_from(PlcResult).where(PlcResult.inspection_id == iid)).scalar_one()
            == 1
        )


def test_decisions_and_acks_written_at_once_in_any_order_fill_every_row(engine: Engine) -> None:
    decisions = [sample_decision(i) for i in range(100)]
    writes: list[Callable[[], bool]] = []
    for decision in decisions:
        writes += [
            lambda d=decision: write_decision(engine, d),
            lambda d=decision: record_plc_ack(engine, sample_ack(d)),
        ]
    random.Random(9).shuffle(writes)
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda write: write(), writes))
    ids = [d.part.inspection_id for d in decisions]
    with engine.connect() as conn:
        filled = conn.execute(
            select(func.count())
            .select_from(Inspection)
            .where(Inspection.inspection_id.in_(ids), Inspection.plc_delivered_at.is_not(None))
        ).scalar_one()
    assert filled == 100


def test_an_invalid_decision_writes_nothing(engine: Engine) -> None:
    decision = sample_decision()
    decision.verdict = 9  # type: ignore[assignment]
    with pytest.raises(InvalidRecord, match="unknown value 9"):
        write_decision(engine, decision)
    assert counts(engine, decision.part.inspection_id) == (0, 0, 0)


def test_a_database_that_is_down_raises(tmp_path: Path) -> None:
    # A SQLite file in a folder that is not there, and a PostgreSQL port nothing listens on.
    for url in (f"sqlite:///{tmp_path / 'missing' / 'x.db'}", "postgresql+psycopg://postgres@127.0.0.1:9/none"):
        engine = make_engine(url, connect_args={"connect_timeout": 2} if url.startswith("postgresql") else {})
        with pytest.raises(OperationalError):
            write_decision(engine, sample_decision())
        engine.dispose()


def test_sqlite_runs_in_wal_with_a_busy_timeout(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'lineguard.db'}"
    upgrade_database(url)
    engine = make_engine(url)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 5000
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    # A reader in the middle of its transaction neither stops the writer nor sees half of it.
    reader = engine.connect()
    assert reader.exec_driver_sql("SELECT count(*) FROM inspections").scalar() == 0
    assert write_decision(engine, sample_decision())
    assert reader.exec_driver_sql("SELECT count(*) FROM inspections").scalar() == 0  # its snapshot
    reader.rollback()
    assert reader.exec_driver_sql("SELECT count(*) FROM inspections").scalar() == 1
    reader.close()
    engine.dispose()
