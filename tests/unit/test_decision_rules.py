"""The recipe rules and the deadline join, called directly."""

from __future__ import annotations

import time

from lineguard.config import ClassRule, RecipeSettings
from lineguard.services.decision.join import Joiner, mismatch
from lineguard.services.decision.rules import defect_reason, judge
from lineguard.v1.common_pb2 import Part
from lineguard.v1.decision_pb2 import Verdict
from lineguard.v1.inference_pb2 import Detection, InferenceResult
from lineguard.v1.ocr_pb2 import Code, OcrResult

RECIPE = RecipeSettings(
    min_score=0.5,
    classes={
        "short": ClassRule(verdict="fail"),
        "spur": ClassRule(verdict="rework", min_score=0.7),
        "dust": ClassRule(verdict="ignore"),
    },
    require_code=True,
    code_pattern=r"LG-\d{8}",
)


def inference(*dets: tuple[str, float]) -> InferenceResult:
    return InferenceResult(detections=[Detection(class_name=c, score=s) for c, s in dets])


def ocr(*texts: str) -> OcrResult:
    return OcrResult(codes=[Code(symbology="DataMatrix", text=t) for t in texts])


def test_clean_part_with_valid_code_passes() -> None:
    j = judge(RECIPE, inference(), ocr("LG-00000001"))
    assert (j.verdict, j.reasons, j.serial) == (Verdict.VERDICT_PASS, [], "LG-00000001")


def test_fail_class_fails_and_wins_over_rework() -> None:
    j = judge(RECIPE, inference(("spur", 0.9), ("short", 0.6)), ocr("LG-00000001"))
    assert j.verdict == Verdict.VERDICT_FAIL
    assert j.reasons == ["DEFECT_SPUR", "DEFECT_SHORT"]


def test_class_threshold_overrides_recipe_threshold() -> None:
    assert judge(RECIPE, inference(("spur", 0.65)), ocr("LG-00000001")).verdict == Verdict.VERDICT_PASS
    assert judge(RECIPE, inference(("spur", 0.75)), ocr("LG-00000001")).verdict == Verdict.VERDICT_REWORK


def test_unlisted_class_fails_at_recipe_threshold_and_ignored_class_is_ignored() -> None:
    assert judge(RECIPE, inference(("open", 0.49)), ocr("LG-00000001")).verdict == Verdict.VERDICT_PASS
    assert judge(RECIPE, inference(("open", 0.5)), ocr("LG-00000001")).reasons == ["DEFECT_OPEN"]
    assert judge(RECIPE, inference(("dust", 0.99)), ocr("LG-00000001")).verdict == Verdict.VERDICT_PASS


def test_missing_input_is_fail_timeout_never_pass() -> None:
    for inf, o, extra in ((None, ocr("LG-00000001"), "NO_INFERENCE"), (inference(), None, "NO_OCR")):
        j = judge(RECIPE, inf, o)
        assert j.verdict == Verdict.VERDICT_FAIL
        assert j.reasons[0] == "TIMEOUT" and extra in j.reasons


def test_codes_missing_or_invalid_fail() -> None:
    assert judge(RECIPE, inference(), ocr()).reasons == ["CODE_MISSING"]
    j = judge(RECIPE, inference(), ocr("garbage"))
    assert (j.verdict, j.reasons, j.serial) == (Verdict.VERDICT_FAIL, ["CODE_INVALID"], "")


def test_defect_reason_names() -> None:
    assert defect_reason("pin-hole") == "DEFECT_PIN_HOLE"
    assert defect_reason("mousebite") == "DEFECT_MOUSEBITE"


def test_joiner_deadline_counts_from_trigger_time() -> None:
    joiner = Joiner()
    part = Part(inspection_id="a", triggered_unix_ns=1_000_000_000)
    entry = joiner.open(part, deadline_ms=500, trigger=True)
    assert entry.deadline_ns == 1_500_000_000
    assert joiner.expired(1_499_999_999) == []
    assert joiner.expired(1_500_000_000) == [entry]
    assert joiner.open(part, deadline_ms=9999, trigger=True) is entry  # the first message fixes the deadline


def test_joiner_results_before_their_trigger_wait_for_it_no_longer_than_the_deadline_from_now() -> None:
    joiner = Joiner()
    # A result claiming a trigger an hour ahead cannot hold its entry for an hour.
    claimed = Part(inspection_id="a", station="s1", triggered_unix_ns=time.time_ns() + 3600 * 10**9)
    entry = joiner.open(claimed, deadline_ms=500, trigger=False)
    assert not entry.triggered and entry.deadline_ns <= time.time_ns() + 500 * 10**6
    trigger = Part(inspection_id="a", station="s1", triggered_unix_ns=1_000_000_000)
    assert joiner.open(trigger, deadline_ms=500, trigger=True) is entry
    assert entry.triggered and entry.part is trigger and entry.deadline_ns == 1_500_000_000
    said = mismatch(trigger, claimed)
    assert said == f"part.triggered_unix_ns is {claimed.triggered_unix_ns!r}, its trigger's 1000000000"
    assert joiner.drop("a") is entry and "a" not in joiner.deadlines and not joiner.already_decided("a")


def test_joiner_remembers_decided_parts_boundedly() -> None:
    joiner = Joiner(remember=2)
    for pid in "abc":
        joiner.open(Part(inspection_id=pid), 100, trigger=True)
        joiner.close(pid)
    assert not joiner.already_decided("a")
    assert joiner.already_decided("b") and joiner.already_decided("c")
    joiner.forget("c")
    assert not joiner.already_decided("c")


def test_a_score_that_is_not_a_number_is_an_error_never_a_pass() -> None:
    j = judge(RECIPE, inference(("short", float("nan"))), ocr("LG-00000001"))
    assert (j.verdict, j.reasons) == (Verdict.VERDICT_ERROR, ["INVALID_RESULT"])
