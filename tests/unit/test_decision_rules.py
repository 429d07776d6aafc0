"""The recipe rules (classes, areas, counts, zones, the total area, the explanation) and the deadline join, called
directly; hypothesis for what holds whatever the recipe and the defects."""

from __future__ import annotations

import time

from hypothesis import given, settings
from hypothesis import strategies as st

from lineguard.config import ClassRule, RecipeSettings
from lineguard.services.decision.join import Joiner, mismatch
from lineguard.services.decision.rules import SEVERITY, defect_reason, judge, unknown_recipe
from lineguard.v1.common_pb2 import Box, Part
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
    assert j.reasons == ["DEFECT_SHORT", "DEFECT_SPUR"]  # worst first


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
        assert j.reasons == sorted(["TIMEOUT", extra])  # all FAIL: by name


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


# -- rules in the part's units: areas, counts, zones, the total area --------------------------------------------

PADS = [(100, 100), (300, 100), (300, 200), (100, 200)]  # a 200 x 100 rectangle
EDGE = [(0, 0), (640, 0), (640, 40), (0, 40)]
LOGO = [(500, 500), (600, 500), (600, 600), (500, 600)]
CODE = "LG-00000001"


def recipe(**settings: object) -> RecipeSettings:
    return RecipeSettings.model_validate({"min_score": 0.5, "image_size": {"width": 640, "height": 640}, **settings})


def defect(
    name: str, score: float, at: tuple[float, float], *, mm2: float = 0.0, px: float = 100.0, size: float = 10
) -> Detection:
    x, y = at
    box = Box(x1=x - size / 2, y1=y - size / 2, x2=x + size / 2, y2=y + size / 2)
    return Detection(class_name=name, score=score, box=box, area_px=px, area_mm2=mm2)


def seen(*dets: Detection, width: int = 640, height: int = 640) -> InferenceResult:
    return InferenceResult(detections=dets, image_width=width, image_height=height)


def test_the_explanation_names_rule_defect_score_place_area_and_zone() -> None:
    r = recipe(zones={"pads": {"kind": "tolerant", "polygon": PADS}})
    j = judge(r, seen(defect("short", 0.93, (312 - 100, 140), mm2=1.2)), ocr(CODE))
    assert (j.verdict, j.reasons) == (Verdict.VERDICT_FAIL, ["DEFECT_SHORT"])
    [f] = j.explanation
    assert f.text == "FAIL: short 0.93 ≥ 0.50 at (212, 140), 1.2 mm² in zone 'pads'"
    assert (f.rule, f.class_name, f.zone, f.detections, f.at) == ("score", "short", "pads", (0,), (212, 140))
    assert f.area_unit == "mm2"
    assert f.threshold == 0.5 and abs(f.score - 0.93) < 1e-6


def test_min_area_is_in_mm2_where_calibrated_and_in_px2_where_not() -> None:
    r = recipe(classes={"short": {"min_area_mm2": 0.5, "min_area_px": 300}})
    calibrated_small, calibrated_big = defect("short", 0.9, (50, 50), mm2=0.4), defect("short", 0.9, (50, 50), mm2=0.6)
    assert judge(r, seen(calibrated_small), ocr(CODE)).verdict == Verdict.VERDICT_PASS
    big = judge(r, seen(calibrated_big), ocr(CODE))
    assert big.verdict == Verdict.VERDICT_FAIL
    assert big.explanation[0].text == "FAIL: short 0.90 ≥ 0.50 at (50, 50), 0.6 mm² ≥ 0.5 mm²"
    # Uncalibrated (area_mm2 0): the px² limit applies.
    assert judge(r, seen(defect("short", 0.9, (50, 50), px=299)), ocr(CODE)).verdict == Verdict.VERDICT_PASS
    assert judge(r, seen(defect("short", 0.9, (50, 50), px=300)), ocr(CODE)).explanation[0].area_unit == "px2"
    # A mm² limit alone says nothing of an uncalibrated defect: it counts (never a silent pass).
    mm_only = recipe(classes={"short": {"min_area_mm2": 0.5}})
    assert judge(mm_only, seen(defect("short", 0.9, (50, 50), px=1)), ocr(CODE)).verdict == Verdict.VERDICT_FAIL


def test_max_count_tolerates_that_many_then_one_finding_names_them_all() -> None:
    r = recipe(classes={"spur": {"verdict": "rework", "max_count": 2}})
    two = [defect("spur", 0.8, (50 + 100 * i, 300)) for i in range(2)]
    assert judge(r, seen(*two), ocr(CODE)).verdict == Verdict.VERDICT_PASS
    three = judge(r, seen(*two, defect("spur", 0.6, (400, 300))), ocr(CODE))
    assert (three.verdict, three.reasons) == (Verdict.VERDICT_REWORK, ["DEFECT_SPUR"])
    [f] = three.explanation
    assert (f.rule, f.count, f.threshold, f.detections) == ("count", 3, 2, (0, 1, 2))
    assert f.text.startswith("REWORK: 3 spur > 2 allowed (0.80 at (50, 300), 100 px²; ")


def test_critical_zone_fails_any_defect_that_reaches_its_score_whatever_its_size_or_class_rule() -> None:
    r = recipe(
        classes={"dust": {"verdict": "ignore"}, "spur": {"verdict": "rework", "max_count": 5, "min_area_mm2": 2}},
        zones={"pads": {"kind": "critical", "polygon": PADS}},
    )
    for name in ("dust", "spur"):
        j = judge(r, seen(defect(name, 0.55, (150, 150), mm2=0.1)), ocr(CODE))
        assert j.verdict == Verdict.VERDICT_FAIL, name
        assert j.explanation[0].rule == "critical_zone"
        assert j.explanation[0].text.endswith("in critical zone 'pads'")
    assert judge(r, seen(defect("spur", 0.45, (150, 150))), ocr(CODE)).verdict == Verdict.VERDICT_PASS
    # The same spur outside the zone is judged by its class rule: too small, and within its count.
    assert judge(r, seen(defect("spur", 0.55, (400, 400), mm2=0.1)), ocr(CODE)).verdict == Verdict.VERDICT_PASS


def test_a_zone_rule_per_class_gives_that_class_its_verdict_there() -> None:
    r = recipe(zones={"pads": {"kind": "critical", "polygon": PADS, "classes": {"spur": {"verdict": "rework"}}}})
    assert judge(r, seen(defect("spur", 0.9, (150, 150))), ocr(CODE)).verdict == Verdict.VERDICT_REWORK
    assert judge(r, seen(defect("short", 0.9, (150, 150))), ocr(CODE)).verdict == Verdict.VERDICT_FAIL


def test_tolerant_zone_has_its_own_thresholds_and_takes_the_rest_from_the_class_rule() -> None:
    r = recipe(
        classes={"short": {"verdict": "rework"}},
        zones={"edge": {"kind": "tolerant", "polygon": EDGE, "min_score": 0.8, "classes": {"short": {"max_count": 1}}}},
    )
    low = defect("short", 0.7, (320, 20))
    assert judge(r, seen(low), ocr(CODE)).verdict == Verdict.VERDICT_PASS  # under the zone's 0.8
    assert judge(r, seen(defect("short", 0.7, (320, 320))), ocr(CODE)).verdict == Verdict.VERDICT_REWORK  # outside
    j = judge(r, seen(defect("short", 0.85, (100, 20)), defect("short", 0.9, (200, 20))), ocr(CODE))
    assert j.verdict == Verdict.VERDICT_REWORK  # the class rule's verdict, the zone's count
    assert j.explanation[0].text.startswith("REWORK: 2 short > 1 allowed in zone 'edge'")


def test_ignored_zone_ignores_only_what_no_other_zone_judges() -> None:
    r = recipe(
        zones={
            "logo": {"kind": "ignored", "polygon": LOGO},
            "pads": {"kind": "critical", "polygon": [(550, 550), (640, 550), (640, 640), (550, 640)]},
        }
    )
    assert judge(r, seen(defect("short", 0.99, (520, 520))), ocr(CODE)).verdict == Verdict.VERDICT_PASS
    overlap = judge(r, seen(defect("short", 0.99, (580, 580))), ocr(CODE))  # in both: the critical zone judges
    assert (overlap.verdict, overlap.explanation[0].zone) == (Verdict.VERDICT_FAIL, "pads")


def test_a_defect_on_a_zone_edge_is_in_the_zone() -> None:
    r = recipe(zones={"pads": {"kind": "critical", "polygon": PADS}}, classes={"short": {"verdict": "rework"}})
    for at in ((100, 150), (300, 200), (200, 100)):
        assert judge(r, seen(defect("short", 0.9, at)), ocr(CODE)).verdict == Verdict.VERDICT_FAIL, at


def test_total_defect_area_fires_over_its_limit_counting_only_defects_that_count() -> None:
    r = recipe(
        classes={"spur": {"max_count": 10, "verdict": "rework"}, "dust": {"verdict": "ignore"}},
        total_area={"max_mm2": 1.0},
    )
    spurs = [defect("spur", 0.9, (50 * i + 30, 300), mm2=0.3) for i in range(3)]
    assert judge(r, seen(*spurs), ocr(CODE)).verdict == Verdict.VERDICT_PASS  # 0.9 mm²
    assert judge(r, seen(*spurs, defect("dust", 0.9, (10, 10), mm2=5)), ocr(CODE)).verdict == Verdict.VERDICT_PASS
    j = judge(
        r, seen(*spurs, defect("dust", 0.9, (10, 10), mm2=5), defect("spur", 0.9, (400, 400), mm2=0.2)), ocr(CODE)
    )
    assert (j.verdict, j.reasons) == (Verdict.VERDICT_FAIL, ["TOTAL_DEFECT_AREA"])
    assert j.explanation[0].text == "FAIL: total defect area 1.1 mm² > 1 mm² over 4 defects"
    assert j.explanation[0].detections == (0, 1, 2, 4)


def test_reasons_and_explanation_are_worst_first_then_by_name_whatever_the_order_found() -> None:
    r = recipe(classes={"spur": {"verdict": "rework"}, "open": {"verdict": "rework"}}, require_code=True)
    dets = [defect("spur", 0.9, (10, 10)), defect("short", 0.9, (20, 20)), defect("open", 0.9, (30, 30))]
    for order in (dets, dets[::-1]):
        j = judge(r, seen(*order), ocr())
        assert j.reasons == ["CODE_MISSING", "DEFECT_SHORT", "DEFECT_OPEN", "DEFECT_SPUR"]
        assert [f.reason for f in j.explanation] == j.reasons


def test_an_image_of_another_size_than_the_zones_is_an_error_never_a_pass() -> None:
    r = recipe(zones={"pads": {"kind": "ignored", "polygon": PADS}})
    j = judge(r, seen(defect("short", 0.4, (150, 150)), width=800, height=600), ocr(CODE))
    assert (j.verdict, j.reasons) == (Verdict.VERDICT_ERROR, ["IMAGE_SIZE_MISMATCH"])
    assert "the image is 800 x 600, the recipe's zones are drawn on 640 x 640" in j.explanation[0].text


def test_every_reason_has_an_explanation_line() -> None:
    j = judge(RECIPE, None, ocr("garbage"))
    assert j.reasons == ["CODE_INVALID", "NO_INFERENCE", "TIMEOUT"]
    assert [f.text for f in j.explanation] == [
        r"FAIL: no code matches LG-\d{8} (read: 'garbage')",
        "FAIL: the defect model's result is missing",
        "FAIL: no inference result by the recipe's 2000 ms deadline",
    ]
    assert unknown_recipe("x", ["b", "a"]).explanation[0].text == "ERROR: recipe 'x' is not configured (known: a, b)"


# -- the properties: what holds for any recipe and any defects ---------------------------------------------------

_CLASSES = ("short", "spur", "open")
_ZONE_SHAPES = (PADS, EDGE, LOGO)


@st.composite
def recipes(draw: st.DrawFn) -> RecipeSettings:
    rule = st.fixed_dictionaries(
        {},
        optional={
            "min_score": st.floats(0, 1),
            "min_area_mm2": st.floats(0, 2),
            "min_area_px": st.floats(0, 400),
            "max_count": st.integers(0, 3),
            "verdict": st.sampled_from(["fail", "rework", "ignore"]),
        },
    )
    zones = {}
    for i, shape in enumerate(_ZONE_SHAPES):
        kind = draw(st.sampled_from(["critical", "tolerant", "ignored", None]))
        if kind == "critical":
            verdicts = st.fixed_dictionaries({"verdict": st.sampled_from(["fail", "rework"])})
            own = draw(st.dictionaries(st.sampled_from(_CLASSES), verdicts))
            zones[f"z{i}"] = {"kind": kind, "polygon": shape, "classes": own}
        elif kind == "tolerant":
            own = draw(st.dictionaries(st.sampled_from(_CLASSES), rule))
            zones[f"z{i}"] = {"kind": kind, "polygon": shape, "classes": own}
        elif kind == "ignored":
            zones[f"z{i}"] = {"kind": kind, "polygon": shape}
    total = draw(st.none() | st.fixed_dictionaries({"max_mm2": st.floats(0, 3), "max_px": st.floats(0, 2000)}))
    return recipe(classes=draw(st.dictionaries(st.sampled_from(_CLASSES), rule)), zones=zones, total_area=total)


detections = st.builds(
    lambda name, score, x, y, mm2, px: defect(name, score, (x, y), mm2=mm2, px=px),
    st.sampled_from(_CLASSES),
    st.floats(0, 1),
    st.floats(0, 640),
    st.floats(0, 640),
    st.sampled_from([0.0, 0.05, 0.5, 1.5]),
    st.floats(1, 900),
)


@settings(max_examples=300, deadline=None)
@given(recipes(), st.lists(detections, max_size=8), detections)
def test_a_defect_more_never_makes_the_verdict_better(
    r: RecipeSettings, dets: list[Detection], extra: Detection
) -> None:
    before = judge(r, seen(*dets), ocr(CODE))
    after = judge(r, seen(*dets, extra), ocr(CODE))
    assert SEVERITY[after.verdict] >= SEVERITY[before.verdict]
    assert set(before.reasons) <= set(after.reasons) or SEVERITY[after.verdict] > SEVERITY[before.verdict]


@settings(max_examples=200, deadline=None)
@given(recipes(), st.lists(detections, max_size=8), st.randoms(use_true_random=False))
def test_the_verdict_and_reasons_do_not_depend_on_the_order_defects_come_in(
    r: RecipeSettings, dets: list[Detection], rnd: object
) -> None:
    shuffled = list(dets)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    a, b = judge(r, seen(*dets), ocr(CODE)), judge(r, seen(*shuffled), ocr(CODE))
    assert (a.verdict, a.reasons) == (b.verdict, b.reasons)
    # Every verdict is explained: the worst finding's verdict is the part's, a pass has none.
    assert (a.explanation[0].verdict if a.explanation else Verdict.VERDICT_PASS) == a.verdict
    assert a.reasons == list(dict.fromkeys(f.reason for f in a.explanation))


def test_a_refused_frame_fails_with_its_reason_whatever_ocr_read_and_is_never_a_timeout() -> None:
    refused = InferenceResult(refused="OVERLOAD")
    for read in (ocr("LG-00000001"), None):
        j = judge(RECIPE, refused, read)
        assert j.verdict == Verdict.VERDICT_FAIL and j.reasons == ["OVERLOAD"]
        assert "refused the frame (OVERLOAD)" in j.explanation[0].text
    # The join decides it at once, without waiting for OCR.
    joiner = Joiner()
    entry = joiner.open(Part(inspection_id="a", triggered_unix_ns=time.time_ns()), 3000, trigger=True)
    entry.inference = refused
    assert entry.complete
    entry.inference = inference()
    assert not entry.complete
    # OCR's refusal alike: a FAIL with its reason whatever the model found, decided without waiting for the model.
    for found in (inference(), None):
        j = judge(RECIPE, found, OcrResult(refused="OVERLOAD"))
        assert j.verdict == Verdict.VERDICT_FAIL and j.reasons == ["OVERLOAD"]
        assert "the OCR service refused the frame (OVERLOAD)" in j.explanation[0].text
    entry.inference, entry.ocr = None, OcrResult(refused="OVERLOAD")
    assert entry.complete
