"""The store on a real SQLite file and a real PostgreSQL: one row per inspection, whatever arrives twice."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from lineguard.services.results.db import make_engine, upgrade_database
from lineguard.services.results.records import InvalidRecord, from_unix_ns
from lineguard.services.results.schema import Code, Defect, Inspection
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


def counts(engine: Engine, inspection_id: str) -> tuple[int, int, int]:
    with engine.connect() as conn:
        return tuple(
            conn.execute(select(func.count()).select_from(table).where(table.inspection_id == inspection_id))
            .scalar_one()
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
    assert [(d.class_name, d.score, d.area_mm2) for d in defects] == [("short", 0.9, 0.1777),
                                                                              ("spur", 0.61, None)]
    assert defects[0].mask is None
    assert defects[1].mask == [[100.0, 100.0], [110.0, 100.0], [105.0, 120.0]]
    assert [(c.symbology, c.text, c.x2) for c in codes] == [("DataMatrix", "LG-00000001", 85.0)]


def test_a_missing_mask_is_sql_null(engine: Engine) -> None:
    decision = sample_decision()
    write_decision(engine, decision)
    with engine.connect() as conn:
        nulls = conn.execute(text("SELECT count(*) FROM defects WHERE inspection_id = :i AND mask IS NULL"),
                             {"i": decision.part.inspection_id}).scalar_one()
    assert nulls == 1


def test_the_same_decision_twice_is_one_row_with_the_same_defects(engine: Engine) -> None:
    decision = sample_decision()
    iid = decision.part.inspection_id
    assert write_decision(engine, decision) is True
    with engine.connect() as conn:
        first_ids = conn.execute(select(Defect.id).where(Defect.inspection_id == iid).order_by(Defect.id)).scalars().all()
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
        row = conn.execute(select(Inspection.model_id, Inspection.serial, Inspection.image_width,
                                  Inspection.reason_codes).where(Inspection.inspection_id == iid)).one()
    assert tuple(row) == (None, None, None, "TIMEOUT")
    assert counts(engine, iid) == (1, 0, 0)


def test_plc_ack_fills_delivery_once(engine: Engine) -> None:
    decision = sample_decision()
    iid = decision.part.inspection_id
    write_decision(engine, decision)

    def plc() -> tuple:
        with engine.connect() as conn:
            return tuple(conn.execute(select(Inspection.plc_verdict, Inspection.plc_delivered_at)
                                      .where(Inspection.inspection_id == iid)).one())

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
