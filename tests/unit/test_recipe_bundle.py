"""A recipe version file: validated with the file line and field path of each problem; its sha256; diffs."""

from __future__ import annotations

import pytest

from lineguard.config import ConfigError, LineConfig, RecipeSettings
from lineguard.recipes import (
    RecipeError,
    RecipeVersion,
    diff,
    parse_bundle,
    parse_ref,
    recipe_sha256,
    rule_changes,
    rule_text,
)
from lineguard.services.decision.rules import judge
from lineguard.services.results.records import LineFacts
from lineguard.v1.common_pb2 import Box
from lineguard.v1.decision_pb2 import Verdict
from lineguard.v1.inference_pb2 import Detection, InferenceResult
from lineguard.v1.ocr_pb2 import OcrResult

GOOD = """\
id: pcb-a
version: "2"
min_score: 0.6
plc_recipe_number: 3
camera: {exposure_us: 800}
retention: {defect_days: 30, good_days: 1}
classes:
  short: {verdict: fail}
"""


def test_a_good_file_is_a_version_with_the_sha256_of_its_settings() -> None:
    version = parse_bundle(GOOD, "pcb-a-2.yaml")
    assert (version.ref, version.settings.min_score, version.settings.plc_recipe_number) == ("pcb-a@2", 0.6, 3)
    assert version.settings.camera.exposure_us == 800 and version.settings.retention.defect_days == 30
    assert version.sha256 == recipe_sha256(version.settings) and len(version.sha256) == 64
    # The same settings written in another order (and other YAML spelling) hash alike: canonical JSON.
    reordered = 'classes: {short: {verdict: fail}}\nretention: {good_days: 1, defect_days: 30}\nversion: "2"\n'
    reordered += "camera: {exposure_us: 800.0}\nplc_recipe_number: 3\nmin_score: 0.60\nid: pcb-a\n"
    assert parse_bundle(reordered).sha256 == version.sha256
    assert parse_bundle(GOOD.replace("0.6", "0.61")).sha256 != version.sha256


def test_the_results_service_names_versions_by_the_same_function() -> None:
    settings = RecipeSettings(version="4", min_score=0.7)
    config = LineConfig(stations=[{"id": "s1", "recipe": "r"}], recipes={"r": settings})
    assert LineFacts.of(config).recipe_sha256[("r", "4")] == RecipeVersion.of("r", settings).sha256


def test_a_bad_file_is_refused_with_each_line_and_field_path() -> None:
    text = GOOD.replace("min_score: 0.6", "min_score: 1.6").replace("{verdict: fail}", "{verdict: maybe}")
    text += "model: {id: m, version: '1', sha256: nothex}\n"
    with pytest.raises(ConfigError) as caught:
        parse_bundle(text, "bad.yaml")
    rendered = str(caught.value).splitlines()
    assert any(r.startswith("bad.yaml:3: min_score: ") and "less than or equal to 1" in r for r in rendered)
    assert any(r.startswith("bad.yaml:8: classes.short.verdict: ") for r in rendered)
    assert any(r.startswith("bad.yaml:9: model.sha256: ") for r in rendered)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (GOOD.replace("id: pcb-a", "id: pcb a"), "bad.yaml:1: id: the recipe's id"),
        (GOOD.replace('version: "2"\n', ""), "bad.yaml:1: version: a recipe version file names its version"),
        (GOOD.replace('version: "2"', 'version: "2/3"'), "bad.yaml:2: version: 1 to 64 letters"),
        (GOOD + "exposure: 3\n", "bad.yaml:9: exposure: unknown field"),
        ("- a list\n", "bad.yaml:1: <top>: the file must hold a mapping"),
    ],
)
def test_names_and_structure_are_checked(text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_bundle(text, "bad.yaml")
    assert expected in str(caught.value)


def test_a_line_may_not_give_two_recipes_the_same_plc_number() -> None:
    with pytest.raises(ValueError, match="the same plc_recipe_number 3"):
        LineConfig(
            stations=[{"id": "s1", "recipe": "a"}],
            recipes={"a": {"plc_recipe_number": 3}, "b": {"plc_recipe_number": 3}},
        )


def test_diff_names_the_field_paths_that_differ() -> None:
    a = parse_bundle(GOOD)
    b = parse_bundle(GOOD.replace("0.6", "0.7").replace("{verdict: fail}", "{verdict: rework}") + "product: X\n")
    changes = {path: (x, y) for path, x, y in diff(a, b)}
    assert changes == {
        "min_score": (0.6, 0.7),
        "classes.short.verdict": ("fail", "rework"),
        "product": (None, "X"),
    }
    assert diff(a, a) == []


# The user trial's versions, with a tolerant zone along the edge that has no rules of its own: its classes take
# the recipe's.
LISTS_ALL = """\
id: pcb-a
version: "1"
min_score: 0.5
image_size: {width: 640, height: 640}
zones:
  edge: {kind: tolerant, polygon: [[0, 600], [640, 600], [640, 640], [0, 640]]}
classes:
  short: {verdict: fail}
  spur: {verdict: rework}
  mousebite: {verdict: rework}
  copper: {verdict: rework, min_area_px: 120, max_count: 2}
  pin-hole: {verdict: ignore}
"""
LISTS_TWO = (
    LISTS_ALL.replace('"1"', '"2"')
    .split("  mousebite:")[0]
    .replace("{verdict: rework}", "{verdict: rework, min_score: 0.7}")
)


def test_the_rule_changes_are_what_each_class_gets_after_the_defaults() -> None:
    a, b = parse_bundle(LISTS_ALL), parse_bundle(LISTS_TWO)
    assert list(b.settings.classes) == ["short", "spur"]
    got = {(c.class_name, c.zone): (rule_text(c.a), rule_text(c.b), c.listed) for c in rule_changes(a, b)}
    for zone in ("", "edge"):
        assert got.pop(("mousebite", zone)) == ("rework at min_score 0.5", "fail at min_score 0.5", (True, False))
        assert got.pop(("copper", zone)) == (
            "rework at min_score 0.5, area ≥ 120 px², up to 2 allowed",
            "fail at min_score 0.5",
            (True, False),
        )
        assert got.pop(("pin-hole", zone)) == ("ignore", "fail at min_score 0.5", (True, False))
        assert got.pop(("spur", zone)) == ("rework at min_score 0.5", "rework at min_score 0.7", (True, True))
    assert got == {}  # short and every class neither lists (open): fail at 0.5 in both
    lower = parse_bundle(LISTS_TWO.replace("min_score: 0.5", "min_score: 0.4"))
    assert {(c.class_name, c.zone) for c in rule_changes(b, lower)} == {
        (name, zone) for name in ("short", None) for zone in ("", "edge")
    }  # spur keeps its own 0.7; None: any class neither version names
    assert rule_changes(a, a) == []


@pytest.mark.parametrize("zone", ["", "edge"])
def test_the_rule_changes_say_what_the_decision_service_does(zone: str) -> None:
    """One way to decide: defects of each class the diff names, at a score both versions count and more of them
    than either allows, are judged by the decision service's judge with the verdict the diff gives each version."""
    a, b = parse_bundle(LISTS_ALL), parse_bundle(LISTS_TWO)
    y = 620 if zone else 300
    verdicts = {"fail": Verdict.VERDICT_FAIL, "rework": Verdict.VERDICT_REWORK, "ignore": Verdict.VERDICT_PASS}
    changes = [c for c in rule_changes(a, b) if c.zone == zone and c.class_name is not None]
    assert changes
    for change in changes:
        assert change.a is not None and change.b is not None
        # A hundredth over the higher threshold: a score is float32 on the wire, and float32 0.7 is under 0.7.
        score = max(change.a.min_score, change.b.min_score) + 0.01
        many = max(change.a.max_count, change.b.max_count) + 1
        boxes = [Box(x1=100 * i, y1=y - 10, x2=100 * i + 10, y2=y + 10) for i in range(many)]  # 200 px² each
        part = InferenceResult(
            detections=[Detection(class_name=change.class_name, score=score, box=b, area_px=200) for b in boxes],
            image_width=640,
            image_height=640,
        )
        for version, rule in ((a, change.a), (b, change.b)):
            assert judge(version.settings, part, OcrResult()).verdict == verdicts[rule.verdict], (change, version.ref)


def test_refs() -> None:
    assert parse_ref("pcb-a@1.2") == ("pcb-a", "1.2")
    for bad in ("pcb-a", "@1", "pcb-a@", "pc.b@1"):
        with pytest.raises(RecipeError):
            parse_ref(bad)
