"""What a row says about a part besides its verdict: lot, product, shift, the PLC's part id, its reasons as rows in a
fixed order, and the model and recipe versions seen; on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select, text

from lineguard.config import LineConfig
from lineguard.services.results.db import make_engine, upgrade_database
from lineguard.services.results.records import InvalidRecord, LineFacts, recipe_sha256
from lineguard.services.results.schema import Inspection, InspectionReason, ModelVersion, RecipeVersion
from lineguard.services.results.store import write_decision
from lineguard.testing import throwaway_database
from lineguard.testing.records import sample_decision
from lineguard.v1.decision_pb2 import Verdict

# 2026-05-28 is a Thursday; in Europe/Berlin (UTC+2 in summer) the trigger at 23:30 UTC is 01:30 on Friday.
T_NIGHT_NS = 1_780_011_000_000_000_000  # 2026-05-28T23:30:00Z


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'lineguard.db'}"
        upgrade_database(url)
        engine = make_engine(url)
        yield engine
        engine.dispose()
    else:
        with throwaway_database() as url:
            upgrade_database(url)
            engine = make_engine(url)
            yield engine
            engine.dispose()


@pytest.fixture
def facts(line_config_dict) -> LineFacts:
    raw = line_config_dict()
    recipe = next(iter(raw["recipes"]))
    raw["recipes"][recipe].update(product="PCB-A rev 3", classes={"spur": {"verdict": "rework"}})
    raw["calendar"] = {
        "timezone": "Europe/Berlin",
        "shifts": [
            {"name": "early", "start": "06:00", "end": "14:00"},
            {"name": "late", "start": "14:00", "end": "22:00"},
            {"name": "night", "start": "22:00", "end": "06:00", "days": ["mon", "tue", "wed", "thu"]},
        ],
    }
    return LineFacts.of(LineConfig(**raw))


def row(engine: Engine, inspection_id: str) -> Any:
    with engine.connect() as conn:
        return conn.execute(select(Inspection.__table__).where(Inspection.inspection_id == inspection_id)).one()


def reasons(engine: Engine, inspection_id: str) -> list[tuple[str, str]]:
    with engine.connect() as conn:
        return [
            (r.reason_code, r.severity)
            for r in conn.execute(
                select(InspectionReason.__table__)
                .where(InspectionReason.inspection_id == inspection_id)
                .order_by(InspectionReason.position)
            )
        ]


def test_a_row_carries_lot_product_shift_and_the_plcs_part_id(engine: Engine, facts: LineFacts) -> None:
    decision = sample_decision(triggered_ns=T_NIGHT_NS)
    decision.part.part_id, decision.part.lot = "PLC-4711", "LOT-2026-0528"
    assert write_decision(engine, decision, facts) is True
    written = row(engine, decision.part.inspection_id)
    assert (written.part_id, written.lot, written.product) == ("PLC-4711", "LOT-2026-0528", "PCB-A rev 3")
    # Thursday's night shift, although it is Friday 01:30 in Berlin.
    assert (written.shift, written.shift_day) == ("night", date(2026, 5, 28))


def test_no_calendar_and_no_plc_ids_are_null(engine: Engine) -> None:
    decision = sample_decision()
    write_decision(engine, decision)
    written = row(engine, decision.part.inspection_id)
    assert (written.part_id, written.lot, written.product, written.shift, written.shift_day) == (None,) * 5


def test_reasons_are_rows_worst_first_then_by_name(engine: Engine, facts: LineFacts) -> None:
    decision = sample_decision()
    decision.reason_codes[:] = ["DEFECT_SPUR", "DEFECT_SHORT", "CODE_MISSING", "DEFECT_SHORT"]
    write_decision(engine, decision, facts)
    # spur is a rework class in this recipe: it comes after the failing reasons, which are in name order.
    assert reasons(engine, decision.part.inspection_id) == [
        ("CODE_MISSING", "FAIL"),
        ("DEFECT_SHORT", "FAIL"),
        ("DEFECT_SPUR", "REWORK"),
    ]
    rework = sample_decision(2, verdict=Verdict.VERDICT_REWORK)
    rework.reason_codes[:] = ["DEFECT_SPUR"]
    write_decision(engine, rework, facts)
    assert reasons(engine, rework.part.inspection_id) == [("DEFECT_SPUR", "REWORK")]
    with engine.connect() as conn:
        pareto = conn.execute(
            text("SELECT reason_code, severity, parts FROM defect_pareto ORDER BY parts DESC, reason_code")
        ).all()
    assert [tuple(p) for p in pareto] == [
        ("DEFECT_SPUR", "REWORK", 2),
        ("CODE_MISSING", "FAIL", 1),
        ("DEFECT_SHORT", "FAIL", 1),
    ]


def test_model_and_recipe_versions_seen_with_first_and_last_use(engine: Engine, facts: LineFacts) -> None:
    late, early, middle = (sample_decision(i) for i in (30, 10, 20))  # written out of order
    for decision in (late, early, middle):
        decision.inference.model_sha256 = "ab" * 32
        write_decision(engine, decision, facts)
    write_decision(engine, late, facts)  # a redelivery changes nothing
    with engine.connect() as conn:
        model = conn.execute(select(ModelVersion.__table__)).one()
        recipe = conn.execute(select(RecipeVersion.__table__)).one()
    assert (model.model_id, model.version, model.sha256) == ("deeppcb-yolo11n", "3", "ab" * 32)
    assert model.first_used_at == row(engine, early.part.inspection_id).decided_at
    assert model.last_used_at == row(engine, late.part.inspection_id).decided_at
    configured = facts.recipes[recipe.recipe_id]
    assert (recipe.version, recipe.sha256) == (configured.version, recipe_sha256(configured))
    assert (recipe.first_used_at, recipe.last_used_at) == (model.first_used_at, model.last_used_at)


def test_views_answer_the_common_questions(engine: Engine, facts: LineFacts) -> None:
    passed = sample_decision(1, verdict=Verdict.VERDICT_PASS, triggered_ns=T_NIGHT_NS)
    passed.reason_codes[:] = []
    failed = sample_decision(2, triggered_ns=T_NIGHT_NS + 60_000_000_000)
    for decision in (passed, failed):
        write_decision(engine, decision, facts)
    with engine.connect() as conn:
        shifts = conn.execute(text("SELECT shift, shift_day, parts, passed, failed, yield FROM yield_by_shift")).all()
        history = conn.execute(
            text(
                "SELECT verdict, reason_codes, model_version, model_sha256, recipe_sha256 "
                "FROM part_history WHERE serial = :serial ORDER BY decided_at"
            ),
            {"serial": "LG-00000001"},
        ).all()
    # SQLite hands a DATE back as text through a view: compare as text.
    assert [(s[0], str(s[1]), *s[2:]) for s in shifts] == [("night", "2026-05-28", 2, 1, 1, 0.5)]
    assert [h.verdict for h in history] == ["PASS", "FAIL"]
    assert history[1].recipe_sha256 == recipe_sha256(next(iter(facts.recipes.values())))


def test_ids_too_long_for_their_columns_are_refused_by_name(engine: Engine, facts: LineFacts) -> None:
    decision = sample_decision()
    decision.part.lot = "L" * 65
    decision.part.part_id = "P" * 65
    decision.reason_codes.append("X" * 65)
    with pytest.raises(InvalidRecord) as refused:
        write_decision(engine, decision, facts)
    message = str(refused.value)
    assert "part.lot: 65 characters, the column holds 64" in message
    assert "part.part_id: 65 characters" in message
    assert "reason_codes[2]: 65 characters" in message
