"""A recipe's defect rules as configured: per class, per zone, and on the part's total defect area.

The decision service applies them (lineguard.services.decision.rules); docs/decisions.md is the
language. What a recipe alone can get wrong is refused when it is validated (a zone outside the
image the recipe's zones are drawn on, a threshold that does not apply to its zone); what needs
the model, the classes it has, is checked by `model_problems` wherever the model is known."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

if TYPE_CHECKING:
    from lineguard.config.model import RecipeSettings

# Reason codes of a recipe refused for the model or the image it is meant for.
ZONE_OUTSIDE_IMAGE = "ZONE_OUTSIDE_IMAGE"
RECIPE_CLASSES_UNKNOWN = "RECIPE_CLASSES_UNKNOWN"

Verdict = Literal["fail", "rework", "ignore"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ImageSize(_Strict):
    """The frame a recipe's zones are drawn on: the camera's image as it reaches inference (after the camera's own
    ROI, before the recipe's inspect_roi), the coordinates detections come back in."""

    width: int = Field(gt=0, le=65535)
    height: int = Field(gt=0, le=65535)


class ClassRule(_Strict):
    """When defects of one class count, and what they do to the part. A field left out takes the recipe's (in a
    zone: the recipe's class rule's, then the recipe's)."""

    min_score: float | None = Field(None, ge=0, le=1, description="overrides the recipe's min_score")
    min_area_mm2: float | None = Field(
        None, ge=0, description="a smaller defect does not count; applies where the station is calibrated"
    )
    min_area_px: float | None = Field(
        None, ge=0, description="a smaller defect does not count (px²); applies where the station is uncalibrated"
    )
    max_count: int = Field(
        0, ge=0, description="defects of this class a part (or zone) may have before the rule fires; 0: any one fires"
    )
    verdict: Verdict = "fail"


class TotalAreaRule(_Strict):
    """The part's defects that count, their areas summed: more than the limit gives `verdict`."""

    max_mm2: float | None = Field(None, ge=0, description="limit where the station is calibrated")
    max_px: float | None = Field(None, ge=0, description="limit (px²) where the station is uncalibrated")
    verdict: Literal["fail", "rework"] = "fail"

    @model_validator(mode="after")
    def _a_limit(self) -> TotalAreaRule:
        if self.max_mm2 is None and self.max_px is None:
            raise ValueError("total_area needs max_mm2 or max_px (or both)")
        return self


class Zone(_Strict):
    """A polygon in image pixels. critical: a defect there that reaches its class's score fails the part (no area
    or count tolerance); tolerant: its own class rules; ignored: what no other zone judges is not judged."""

    kind: Literal["critical", "tolerant", "ignored"]
    polygon: list[tuple[float, float]] = Field(min_length=3, description="[[x, y], ...] in image pixels, in order")
    min_score: float | None = Field(None, ge=0, le=1, description="the zone's default score threshold")
    classes: dict[str, ClassRule] = Field(default_factory=dict, description="the zone's own rule per class")

    @model_validator(mode="after")
    def _fits_its_kind(self) -> Zone:
        if _area(self.polygon) == 0:
            raise ValueError("the polygon has no area (its points are on one line)")
        if self.kind == "ignored" and (self.classes or self.min_score is not None):
            raise ValueError("an ignored zone judges nothing: it takes no classes or min_score")
        if self.kind == "critical":
            for name, rule in self.classes.items():
                tolerances = sorted(rule.model_fields_set & {"min_area_mm2", "min_area_px", "max_count"})
                if tolerances:
                    raise ValueError(
                        f"classes.{name}: {', '.join(tolerances)} do not apply in a critical zone (any defect "
                        "counts); make the zone tolerant"
                    )
        return self

    def bounds(self) -> tuple[float, float, float, float]:
        """x0, y0, x1, y1 of the polygon's bounding box."""
        xs, ys = [p[0] for p in self.polygon], [p[1] for p in self.polygon]
        return min(xs), min(ys), max(xs), max(ys)

    def contains(self, x: float, y: float) -> bool:
        """Whether (x, y) lies inside the polygon or on its edge (a defect on the line is in the zone)."""
        x0, y0, x1, y1 = self.bounds()
        return x0 <= x <= x1 and y0 <= y <= y1 and polygon_contains(self.polygon, x, y)


MM2, PX2 = "mm2", "px2"  # a defect's area unit: calibrated station, uncalibrated
_DEFAULT_RULE = ClassRule()


@dataclass(frozen=True)
class ResolvedRule:
    """A class's rule where one defect is judged, every field resolved: what the class actually gets."""

    min_score: float
    min_area_mm2: float | None
    min_area_px: float | None
    max_count: int
    verdict: Verdict
    zone: str
    critical: bool

    def min_area(self, unit: str) -> float | None:
        return self.min_area_mm2 if unit == MM2 else self.min_area_px


def resolve_rule(recipe: RecipeSettings, class_name: str, name: str = "", zone: Zone | None = None) -> ResolvedRule:
    """A class's rule in zone `name` (or outside all, zone None): the zone's class rule's fields, then the zone's
    min_score, then the recipe's class rule, then the recipe's min_score; a class the recipe does not list fails
    at its min_score. A critical zone counts any defect that reaches its score and fails it, unless the zone's own
    rule for the class says otherwise. The decision service judges by it (docs/decisions.md)."""
    base = recipe.classes.get(class_name, _DEFAULT_RULE)
    own = zone.classes.get(class_name) if zone is not None else None

    def given(attr: str) -> bool:
        return own is not None and attr in own.model_fields_set

    min_score = own.min_score if own is not None and given("min_score") else None
    if min_score is None and zone is not None:
        min_score = zone.min_score
    if min_score is None:
        min_score = base.min_score if base.min_score is not None else recipe.min_score
    if zone is not None and zone.kind == "critical":
        verdict = own.verdict if own is not None and given("verdict") else "fail"
        return ResolvedRule(min_score, None, None, 0, verdict, name, critical=True)
    if own is None:
        return ResolvedRule(
            min_score, base.min_area_mm2, base.min_area_px, base.max_count, base.verdict, name, critical=False
        )
    return ResolvedRule(
        min_score,
        own.min_area_mm2 if given("min_area_mm2") else base.min_area_mm2,
        own.min_area_px if given("min_area_px") else base.min_area_px,
        own.max_count if given("max_count") else base.max_count,
        own.verdict if given("verdict") else base.verdict,
        name,
        critical=False,
    )


def polygon_contains(points: list[tuple[float, float]], x: float, y: float) -> bool:
    """Whether (x, y) lies inside the closed polygon `points` or on its edge (even-odd rule)."""
    inside = False
    ax, ay = points[-1]
    for bx, by in points:
        if _on_segment(x, y, ax, ay, bx, by):
            return True
        if (ay > y) != (by > y) and x < (bx - ax) * (y - ay) / (by - ay) + ax:
            inside = not inside
        ax, ay = bx, by
    return inside


def _area(points: list[tuple[float, float]]) -> float:
    return abs(sum(ax * by - bx * ay for (ax, ay), (bx, by) in zip(points, points[1:] + points[:1], strict=True))) / 2


def _on_segment(x: float, y: float, ax: float, ay: float, bx: float, by: float) -> bool:
    if (bx - ax) * (y - ay) != (by - ay) * (x - ax):
        return False
    return min(ax, bx) <= x <= max(ax, bx) and min(ay, by) <= y <= max(ay, by)


def zone_problems(zones: Mapping[str, Zone], image: ImageSize | None) -> list[str]:
    """Why these zones cannot be used on `image` (empty: they can)."""
    if not zones:
        return []
    if image is None:
        return ["zones need image_size, the width and height of the image they are drawn on"]
    problems = []
    for name, zone in zones.items():
        outside = [(x, y) for x, y in zone.polygon if not (0 <= x <= image.width and 0 <= y <= image.height)]
        if outside:
            points = ", ".join(f"({x:g}, {y:g})" for x, y in outside)
            problems.append(
                f"{ZONE_OUTSIDE_IMAGE}: zone {name!r} has points outside the {image.width} x {image.height} image: "
                f"{points}"
            )
    return problems


@dataclass(frozen=True)
class RecipeProblem:
    """Why a recipe cannot run with a model: a reason code, the field path it is about and a sentence."""

    reason: str
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.reason}: {self.field}: {self.message}"


def model_problems(
    recipe: RecipeSettings, model_classes: Iterable[str], model: str = "the model"
) -> list[RecipeProblem]:
    """The recipe's class names (its `classes` and each zone's) that `model` (its card's `classes`) does not have:
    a rule for a class the model never reports never fires, which a typo would make a silent escape."""
    known = list(model_classes)
    have = ", ".join(known)
    named = [(f"classes.{c}", c) for c in recipe.classes]
    named += [(f"zones.{z}.classes.{c}", c) for z, zone in recipe.zones.items() for c in zone.classes]
    return [
        RecipeProblem(RECIPE_CLASSES_UNKNOWN, path, f"{model} has no class {name!r} (its classes: {have})")
        for path, name in named
        if name not in known
    ]
