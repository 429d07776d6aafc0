"""Thresholds from data (lineguard.modelops.tune) on made-up predictions whose figures are known exactly: the
escape / false-reject curves, the score and area thresholds meeting a target, an unmet target, ignored classes,
max_count, the proposal as a valid recipe version and the curves as a PNG."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import pytest
import yaml

from lineguard.config import RecipeSettings
from lineguard.modelops.evaluate import Predicted, Truth
from lineguard.modelops.tune import plot_curves, proposed_recipe, tune
from lineguard.recipes import parse_bundle

CLASSES = ("open", "short")
OPEN, SHORT = 0, 1


def box(side: float) -> tuple[float, float, float, float]:
    return (10.0, 10.0, 10.0 + side, 10.0 + side)  # area side²


def made_up(extra_short: bool = False) -> tuple[list[Truth], list[Predicted]]:
    """A and B have an open, C a short, G1 and G2 are good. Detections (class, score, area):
    A open 0.9 100 px²; B open 0.6 400; C short 0.8 100; G1 open 0.3 25; G2 open 0.7 16 (a small false one)."""
    truths = [
        Truth.of("A", 64, 64, [(OPEN, *box(10))]),
        Truth.of("B", 64, 64, [(OPEN, *box(20))]),
        Truth.of("C", 64, 64, [(SHORT, *box(10))]),
        Truth.of("G1", 64, 64, []),
        Truth.of("G2", 64, 64, []),
    ]
    predictions = [
        Predicted.of("A", [(OPEN, 0.9, *box(10))]),
        Predicted.of("B", [(OPEN, 0.6, *box(20))]),
        Predicted.of("C", [(SHORT, 0.8, *box(10))]),
        Predicted.of("G1", [(OPEN, 0.3, *box(5))]),
        Predicted.of("G2", [(OPEN, 0.7, *box(4))]),
    ]
    if extra_short:  # D has a short the model never finds
        truths.append(Truth.of("D", 64, 64, [(SHORT, *box(10))]))
    return truths, predictions


def recipe(**classes: Any) -> RecipeSettings:
    return RecipeSettings(version="1", min_score=0.5, classes=classes)


def test_a_zero_escape_target_takes_the_weakest_caught_score_and_an_area_that_removes_a_false_reject() -> None:
    truths, predictions = made_up()
    tuning = tune(truths, predictions, CLASSES, recipe(open={"verdict": "fail"}))
    open_, short = tuning.classes
    assert (open_.bad, open_.good, short.bad) == (2, 2, 1)
    # Now (0.5): no escape, G2's 0.7 is a false reject.
    assert (open_.at_current.escapes, open_.at_current.false_rejects) == (0, 1)
    # 0.6 is the highest score catching both opens; at it G2 (16 px²) is still rejected, an area of 100 removes it.
    assert open_.proposed.min_score == 0.6 and open_.proposed.min_area == 100.0
    assert (open_.at_proposed.escapes, open_.at_proposed.false_rejects) == (0, 0) and open_.met
    assert [(p.threshold, p.escapes, p.false_rejects) for p in open_.area_curve] == [
        (0.0, 0, 1),
        (16.0, 0, 1),
        (100.0, 0, 0),
        (400.0, 1, 0),
    ]
    # The short: its one part scores 0.8; no good part has a short, so no area rule.
    assert short.proposed.min_score == 0.8 and short.proposed.min_area is None
    by_score = {p.threshold: (p.escapes, p.false_rejects) for p in open_.score_curve}
    assert by_score[0.3] == (0, 2) and by_score[0.61] == (1, 1) and by_score[0.91] == (2, 0)
    assert (tuning.part_current.false_rejects, tuning.part_proposed.false_rejects) == (1, 0)
    assert tuning.part_proposed.escapes == 0 and tuning.met


def test_a_looser_target_allows_its_share_of_escapes() -> None:
    truths, predictions = made_up()
    tuning = tune(truths, predictions, CLASSES, recipe(), target_escape=0.5)
    open_ = tuning.classes[0]
    # B escapes (1 of 2 allowed); A's score is float32(0.9) = 0.8999999762, under 0.9 as the decision service
    # compares it: 0.89 is the highest threshold that still catches A.
    assert open_.proposed.min_score == 0.89 and open_.at_proposed.escapes == 1
    assert open_.proposed.min_area is None, "no false reject left for an area rule to remove"


def test_a_defect_the_model_never_finds_is_an_unmet_target_named() -> None:
    truths, predictions = made_up(extra_short=True)
    tuning = tune(truths, predictions, CLASSES, recipe())
    short = tuning.classes[1]
    assert not short.met and not tuning.met
    assert short.proposed.min_score == 0.8 and short.at_proposed.escapes == 1
    assert "at best 1 of 2 parts with a short escape" in short.note


def test_ignored_classes_are_not_tuned_and_max_count_counts_as_the_rule_does() -> None:
    truths, predictions = made_up()
    ignoring = tune(truths, predictions, CLASSES, recipe(short={"verdict": "ignore"}))
    assert [c.name for c in ignoring.classes] == ["open"] and ignoring.ignored == ["short"]
    assert ignoring.part_current.bad == 2, "the part with only a short is judged neither bad nor good"
    tolerant = tune(truths, predictions, CLASSES, recipe(open={"max_count": 1}))
    # One open per part never fires a rule that allows one: every open escapes at any threshold.
    assert not tolerant.classes[0].met and tolerant.classes[0].at_proposed.escapes == 2


def zoned(**zones: list[tuple[float, float]]) -> RecipeSettings:
    return RecipeSettings(
        version="1",
        min_score=0.5,
        image_size={"width": 64, "height": 64},
        zones={name: {"kind": "tolerant", "polygon": polygon} for name, polygon in zones.items()},
    )


def test_what_lies_in_a_zone_is_the_zones_to_judge_and_left_out_of_the_class_figures() -> None:
    truths, predictions = made_up()
    # G1's and G2's small false opens (centres 12.5 and 12) lie in the zone: the class rule never sees them, so no
    # false reject is left for an area rule to remove (without the zone: min_area 100).
    around_the_false_ones = tune(truths, predictions, CLASSES, zoned(pads=[(11, 11), (13, 11), (13, 13), (11, 13)]))
    open_ = around_the_false_ones.classes[0]
    assert (open_.bad, open_.at_current.false_rejects) == (2, 0)
    assert open_.proposed.min_score == 0.6 and open_.proposed.min_area is None
    # A's open and C's short (centres 15) lie in it: their labelled defects are the zone's too, so only B's open is
    # the class rule's to catch, and no part is left with a short for it.
    around_a_and_c = tune(truths, predictions, CLASSES, zoned(pads=[(14, 14), (16, 14), (16, 16), (14, 16)]))
    open_, short = around_a_and_c.classes
    assert (open_.bad, short.bad) == (1, 0)
    assert open_.proposed.min_score == 0.6 and "no labelled part has a short" in short.note


def test_bad_targets_are_refused() -> None:
    truths, predictions = made_up()
    for target in (-0.1, 1.0):
        with pytest.raises(ValueError, match="target_escape"):
            tune(truths, predictions, CLASSES, recipe(), target_escape=target)


def test_the_proposal_is_a_valid_version_of_the_recipe_and_the_curves_a_png(tmp_path: Path) -> None:
    truths, predictions = made_up()
    current = recipe(open={"verdict": "rework", "min_area_px": 4.0}, short={"verdict": "fail"})
    tuning = tune(truths, predictions, CLASSES, current)
    mapping = proposed_recipe(current, tuning, "1-tuned")
    proposal = parse_bundle(yaml.safe_dump({"id": "pcb-a", **mapping}), "proposal.yaml")
    assert proposal.ref == "pcb-a@1-tuned"
    rules = proposal.settings.classes
    assert (rules["open"].verdict, rules["open"].min_score, rules["open"].min_area_px) == ("rework", 0.6, 100.0)
    assert (rules["short"].min_score, rules["short"].min_area_px) == (0.8, None)
    assert proposal.settings.min_score == current.min_score

    calibrated = tune(truths, predictions, CLASSES, current, px_per_mm=10.0)
    assert calibrated.unit == "mm2" and calibrated.classes[0].proposed.min_area == 1.0  # 100 px² at 10 px/mm
    assert (
        parse_bundle(yaml.safe_dump({"id": "pcb-a", **proposed_recipe(current, calibrated, "2")}))
        .settings.classes["open"]
        .min_area_mm2
        == 1.0
    )

    png = plot_curves(tuning, tmp_path / "curves.png")
    image = cv2.imread(str(png))
    assert image is not None and image.shape[0] > 2 * 200 and image.shape[1] == 720  # two classes, two panels each
    assert (image < 250).any(), "something is drawn"
