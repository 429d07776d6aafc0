"""Recipes the decision rules refuse: zones outside the image they are drawn on, tolerances a zone cannot have, and
classes the model does not have; each with a reason code and the field it is about."""

from __future__ import annotations

import pytest

from lineguard.config import ConfigError, RecipeSettings, parse_config
from lineguard.config.rules import RECIPE_CLASSES_UNKNOWN, model_problems
from lineguard.vision.card import ModelCard
from lineguard.vision.model import packaged_model_path

LINE = """\
stations: [{{id: s1, recipe: pcb-a}}]
recipes:
  pcb-a:
    image_size: {{width: 640, height: 640}}
    zones:
      pads:
        kind: {kind}
        polygon: {polygon}
{extra}"""


def refusal(kind: str = "critical", polygon: str = "[[0, 0], [100, 0], [100, 100]]", extra: str = "") -> str:
    with pytest.raises(ConfigError) as caught:
        parse_config(LINE.format(kind=kind, polygon=polygon, extra=extra), "line.yaml")
    return str(caught.value)


def test_a_zone_outside_the_image_is_refused_naming_the_file_line_field_zone_and_points() -> None:
    said = refusal(polygon="[[0, 0], [700, 0], [700, 100]]")
    assert said.splitlines()[-1] == (
        "line.yaml:5: recipes.pcb-a.zones: Value error, ZONE_OUTSIDE_IMAGE: zone 'pads' has points outside the "
        "640 x 640 image: (700, 0), (700, 100)"
    )
    assert "ZONE_OUTSIDE_IMAGE" in refusal(polygon="[[-1, 0], [100, 0], [100, 100]]")


def test_zones_need_the_image_they_are_drawn_on() -> None:
    with pytest.raises(ValueError, match="zones need image_size"):
        RecipeSettings.model_validate({"zones": {"pads": {"kind": "critical", "polygon": [[0, 0], [1, 0], [1, 1]]}}})


def test_zone_shapes_and_rules_that_cannot_work_are_refused() -> None:
    assert "the polygon has no area" in refusal(polygon="[[0, 0], [50, 50], [100, 100]]")
    assert "polygon: List should have at least 3 items" in refusal(polygon="[[0, 0], [50, 50]]")
    critical = refusal(extra="        classes: {short: {max_count: 2, min_area_mm2: 1}}\n")
    assert "classes.short: max_count, min_area_mm2 do not apply in a critical zone" in critical
    assert "an ignored zone judges nothing" in refusal(kind="ignored", extra="        min_score: 0.3\n")
    with pytest.raises(ValueError, match="total_area needs max_mm2 or max_px"):
        RecipeSettings.model_validate({"total_area": {"verdict": "fail"}})


def test_classes_the_model_does_not_have_are_refused_with_their_field_and_the_models_classes() -> None:
    card = ModelCard.beside(packaged_model_path())
    assert card is not None
    recipe = RecipeSettings.model_validate(
        {
            "classes": {"short": {}, "shrot": {"verdict": "rework"}},
            "image_size": {"width": 640, "height": 640},
            "zones": {"pads": {"kind": "critical", "polygon": [[0, 0], [9, 0], [9, 9]], "classes": {"dirt": {}}}},
        }
    )
    problems = model_problems(recipe, card.classes, f"model {card.model_id} v{card.version}")
    assert [(p.reason, p.field) for p in problems] == [
        (RECIPE_CLASSES_UNKNOWN, "classes.shrot"),
        (RECIPE_CLASSES_UNKNOWN, "zones.pads.classes.dirt"),
    ]
    assert f"model {card.model_id} v{card.version} has no class 'shrot' (its classes: {', '.join(card.classes)})" in (
        problems[0].message
    )
    fit = RecipeSettings.model_validate({"classes": {c: {} for c in card.classes}})
    assert model_problems(fit, card.classes) == []
