"""Decision and PlcAck to rows: what is kept, and what is refused with which reason."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from lineguard.ocr.grades import LETTERS
from lineguard.services.results.records import (
    GRADE_LETTERS,
    InvalidRecord,
    ack_update,
    decision_rows,
    from_unix_ns,
    to_unix_ns,
)
from lineguard.testing.records import T0_NS, sample_ack, sample_decision
from lineguard.v1.decision_pb2 import Decision, Verdict


def test_decision_becomes_one_inspection_with_its_defects_and_codes() -> None:
    decision = sample_decision(7)
    rows = decision_rows(decision)
    row = rows.inspection
    assert row["inspection_id"] == decision.part.inspection_id
    assert (row["line"], row["station"], row["recipe_id"], row["recipe_version"]) == ("l1", "s1", "pcb-a", "1")
    assert row["sequence"] == 7 and row["verdict"] == "FAIL" and row["serial"] == "LG-00000001"
    assert row["reason_codes"] == "DEFECT_SHORT,DEFECT_SPUR"
    assert row["timings"] == {"trigger_to_inference": 41.5, "decision": 0.25, "total": 55.75}
    assert row["total_ms"] == 55.75
    assert (row["image_width"], row["image_height"]) == (640, 800)
    assert row["triggered_at"] == datetime(2026, 5, 28, 20, 26, 47, 123456, tzinfo=UTC)
    assert [d["class_name"] for d in rows.defects] == ["short", "spur"]
    short, spur = rows.defects
    # float32 noise is gone: 0.9 stays 0.9
    assert (short["score"], short["x2"], short["area_mm2"], short["mask"]) == (0.9, 30.5, 0.1777, None)
    assert spur["area_mm2"] is None  # 0 on the wire = uncalibrated
    assert spur["mask"] == [[100.0, 100.0], [110.0, 100.0], [105.0, 120.0]]
    assert rows.codes == [
        {
            "inspection_id": row["inspection_id"],
            "symbology": "DataMatrix",
            "text": "LG-00000001",
            "x1": 5.0,
            "y1": 650.0,
            "x2": 85.0,
            "y2": 730.0,
            "outline": [[5.0, 650.0], [85.0, 650.0], [85.0, 730.0], [5.0, 730.0]],
            # Not graded on the wire (empty maps, no letter): NULL, never an "F" or an empty object.
            "grade": None,
            "quality": None,
            "quality_grades": None,
        }
    ]
    assert all(d["inspection_id"] == row["inspection_id"] for d in rows.defects)


def test_timeout_decision_without_results_has_nulls_not_zeros() -> None:
    decision = sample_decision()
    decision.ClearField("inference")
    decision.ClearField("ocr")
    decision.ClearField("timings")
    for name in ("model_id", "model_version", "serial", "recipe_version"):
        decision.ClearField(name)
    rows = decision_rows(decision)
    row = rows.inspection
    assert rows.defects == [] and rows.codes == []
    assert row["model_id"] is None and row["model_version"] is None and row["serial"] is None
    assert row["recipe_version"] is None and row["image_width"] is None
    assert row["total_ms"] == pytest.approx(55.75)  # from the two timestamps when no "total" stage came
    assert row["timings"] == {}


@pytest.mark.parametrize(
    ("spoil", "reason"),
    [
        (lambda d: setattr(d, "verdict", 9), "verdict: unknown value 9 (expected one of PASS, FAIL, REWORK, ERROR)"),
        (lambda d: setattr(d, "verdict", Verdict.VERDICT_UNSPECIFIED), "verdict: missing (VERDICT_UNSPECIFIED)"),
        (lambda d: d.part.ClearField("station"), "part.station: missing"),
        (lambda d: d.part.ClearField("triggered_unix_ns"), "part.triggered_unix_ns: missing"),
        (lambda d: d.ClearField("decided_unix_ns"), "decided_unix_ns: missing"),
        (lambda d: setattr(d.part, "inspection_id", "part-42"), "part.inspection_id: 'part-42' is not a UUID"),
        (lambda d: d.reason_codes.append("A,B"), "reason_codes[2]: 'A,B' is empty or contains ','"),
        (
            lambda d: setattr(d.inference.detections[1], "score", float("nan")),
            "inference.detections[1]: score not finite",
        ),
        (lambda d: setattr(d, "serial", "x" * 200), "serial: 200 characters, the column holds 128"),
        (lambda d: setattr(d.ocr.codes[0], "symbology", ""), "ocr.codes[0].symbology: missing"),
        (lambda d: setattr(d.ocr.codes[0], "grade", "E"), "ocr.codes[0].grade: 'E' is not one of the letters A, B"),
        (
            lambda d: (d.ocr.codes[0].quality_grades.update(modulation="c"), setattr(d.ocr.codes[0], "grade", "C")),
            "ocr.codes[0].quality_grades: modulation not one of A, B, C, D, F",
        ),
        (
            lambda d: (d.ocr.codes[0].quality.update(modulation=float("inf")), setattr(d.ocr.codes[0], "grade", "C")),
            "ocr.codes[0].quality: modulation not finite",
        ),
        (
            lambda d: d.ocr.codes[0].quality_grades.update(modulation="C"),
            "ocr.codes[0].grade: missing although the code has print-quality parameters",
        ),
    ],
)
def test_invalid_decision_is_refused_naming_the_cause(spoil, reason: str) -> None:
    decision = sample_decision()
    spoil(decision)
    with pytest.raises(InvalidRecord) as caught:
        decision_rows(decision)
    assert reason in str(caught.value)
    assert decision.part.inspection_id in str(caught.value) or "inspection_id" in reason


def test_every_problem_is_named_at_once() -> None:
    with pytest.raises(InvalidRecord) as caught:
        decision_rows(Decision())
    text = str(caught.value)
    for expected in (
        "<no id>",
        "part.inspection_id: missing",
        "part.line: missing",
        "part.station: missing",
        "part.recipe_id: missing",
        "verdict: missing",
    ):
        assert expected in text


def test_ack_update_delivered_and_not() -> None:
    decision = sample_decision()
    delivered = ack_update(sample_ack(decision, delivered_ns=T0_NS))
    assert delivered.plc_verdict == "FAIL"
    assert delivered.plc_delivered_at == from_unix_ns(T0_NS)
    missed = ack_update(sample_ack(decision, delivered=False))
    assert missed.plc_verdict == "FAIL" and missed.plc_delivered_at is None
    with pytest.raises(InvalidRecord, match="verdict: unknown value 12"):
        ack_update(sample_ack(decision, verdict=12))


def test_timestamps_keep_microseconds() -> None:
    at = from_unix_ns(T0_NS)
    assert at.tzinfo is UTC
    assert to_unix_ns(at) == T0_NS - 789  # nanoseconds below a microsecond are dropped


def test_a_codes_print_quality_is_kept_as_the_ocr_result_carries_it() -> None:
    decision = sample_decision()
    code = decision.ocr.codes[0]
    code.grade = "C"
    code.quality.update(symbol_contrast=0.4979, modulation=0.911)
    code.quality_grades.update(symbol_contrast="C", modulation="A")
    (row,) = decision_rows(decision).codes
    assert row["grade"] == "C"
    assert row["quality"] == {"symbol_contrast": 0.4979, "modulation": 0.911}  # float32 noise gone
    assert row["quality_grades"] == {"symbol_contrast": "C", "modulation": "A"}


def test_the_grade_letters_are_the_ocr_libraries() -> None:
    assert sorted(GRADE_LETTERS) == sorted(LETTERS)
