"""Thresholds from data (`lineguard recipe tune`): per class, escapes against false rejects over the score threshold
and the area threshold on a labelled set, and the thresholds that meet a target escape rate.

The line judges parts, not boxes, so these are part figures: for class C, a part with a labelled C defect
*escapes* at a threshold when no detection of class C reaches it (anywhere on the part: the line would pass it,
as far as C goes); a good part (no labelled defect at all) is *falsely rejected* when one does. A rule's
`max_count` from the recipe counts as the decision service counts it (the rule fires above it). Per class, so
meeting the target for each class meets it for the part: a defective part is caught by its own class.

The proposal, per class the recipe judges (not `verdict: ignore`):
- the score threshold: the highest on a 0.01 grid whose escape rate is at most the target (the most false
  rejects removed for the target); where none meets it, the highest with the fewest escapes, marked unmet;
- the area threshold, at that score: the smallest that removes the most false rejects without more escapes than
  the score alone gives; none when no area removes a false reject (an area rule that buys nothing only risks
  escapes), and the recipe's own where the set has no good part to tell.

Plain functions over lineguard.modelops.evaluate's Truth / Predicted (predict_split makes them with a model),
so a test gives made-up predictions whose figures are known. The curve is drawn with OpenCV."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from lineguard.config import RecipeSettings
from lineguard.config.rules import Zone, resolve_rule
from lineguard.modelops.evaluate import Predicted, Truth
from lineguard.modelops.rates import Rates

SCORE_GRID = tuple(round(0.01 * i, 2) for i in range(1, 100))
AREA_POINTS = 100  # area thresholds tried: the detections' own areas, thinned to this many


@dataclass(frozen=True)
class Point(Rates):
    """The figures at one threshold."""

    threshold: float


@dataclass(frozen=True)
class Thresholds:
    min_score: float
    min_area: float | None  # in `unit`; None: no area rule


@dataclass
class ClassTune:
    name: str
    bad: int  # parts with a labelled defect of this class
    good: int  # parts with no labelled defect
    max_count: int
    current: Thresholds
    proposed: Thresholds
    at_current: Point
    at_proposed: Point
    met: bool
    score_curve: list[Point] = field(default_factory=list)  # area threshold 0
    area_curve: list[Point] = field(default_factory=list)  # at the proposed score threshold
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "bad": self.bad,
            "good": self.good,
            "max_count": self.max_count,
            "current": asdict(self.current),
            "proposed": asdict(self.proposed),
            "at_current": self.at_current.to_dict(),
            "at_proposed": self.at_proposed.to_dict(),
            "met": self.met,
            "note": self.note,
            "score_curve": [p.to_dict() for p in self.score_curve],
            "area_curve": [p.to_dict() for p in self.area_curve],
        }


@dataclass
class Tuning:
    target_escape: float
    unit: str  # "px2" or "mm2"
    images: int
    classes: list[ClassTune]
    ignored: list[str]  # classes the recipe ignores: not tuned
    part_current: Point  # the whole part, every class at once (threshold field unused: 0)
    part_proposed: Point

    @property
    def met(self) -> bool:
        return all(c.met for c in self.classes)

    def to_dict(self) -> dict[str, Any]:
        return {
            "target_escape": self.target_escape,
            "unit": self.unit,
            "images": self.images,
            "met": self.met,
            "parts": {"current": self.part_current.to_dict(), "proposed": self.part_proposed.to_dict()},
            "ignored": self.ignored,
            "classes": [c.to_dict() for c in self.classes],
        }


@dataclass(frozen=True)
class _Parts:
    """The set as arrays: per part whether it is good and which classes it has; the detections flat, by part."""

    good: np.ndarray  # (P,) bool
    has: np.ndarray  # (P, C) bool
    part: np.ndarray  # (D,) int: the part of each detection
    class_id: np.ndarray  # (D,)
    score: np.ndarray  # (D,) float64
    area: np.ndarray  # (D,) float64 in the unit


def _in_a_zone(zones: Sequence[Zone], xyxy: np.ndarray) -> np.ndarray:
    """(N,) bool: the boxes whose centre lies in one of the zones (as the decision service places a defect)."""
    x, y = (xyxy[:, 0] + xyxy[:, 2]) / 2, (xyxy[:, 1] + xyxy[:, 3]) / 2
    return np.array([any(z.contains(float(a), float(b)) for z in zones) for a, b in zip(x, y, strict=True)], dtype=bool)


def _parts(
    truths: Sequence[Truth],
    predictions: Sequence[Predicted],
    classes: int,
    px_per_mm: float | None,
    zones: Sequence[Zone] = (),
) -> _Parts:
    """The set as the class rules see it: with zones, what lies in a zone (a detection, a labelled defect) is the
    zone's to judge, by its own rules, and left out of these figures."""
    found = {p.name: p.detections for p in predictions}
    parts, class_ids, scores, areas = [], [], [], []
    for i, truth in enumerate(truths):
        d = found.get(truth.name)
        if d is None or not len(d):
            continue
        if zones:
            d = d[~_in_a_zone(zones, d.xyxy)]
            if not len(d):
                continue
        parts.append(np.full(len(d), i))
        class_ids.append(d.class_id.astype(np.int64))
        scores.append(d.confidence.astype(np.float64))
        area = d.area_px
        areas.append(area / px_per_mm**2 if px_per_mm else area)
    has = np.zeros((len(truths), classes), dtype=bool)
    for i, truth in enumerate(truths):
        outside = (
            ~_in_a_zone(zones, truth.boxes) if zones and len(truth.class_ids) else np.ones(len(truth.class_ids), bool)
        )
        ids = truth.class_ids[outside]
        has[i, ids[(ids >= 0) & (ids < classes)]] = True
    empty = np.zeros(0)
    return _Parts(
        good=np.array([not len(t.class_ids) for t in truths], dtype=bool),
        has=has,
        part=np.concatenate(parts) if parts else empty.astype(np.int64),
        class_id=np.concatenate(class_ids) if class_ids else empty.astype(np.int64),
        score=np.concatenate(scores) if scores else empty,
        area=np.concatenate(areas) if areas else empty,
    )


def _fires(parts: _Parts, k: int, min_score: float, min_area: float | None, max_count: int) -> np.ndarray:
    """(P,) bool: the parts where class k's rule fires at these thresholds."""
    # A detection's score as a Python float against the threshold, as the decision service compares them.
    counted = (parts.class_id == k) & (parts.score >= min_score)
    if min_area is not None:
        counted &= parts.area >= min_area
    counts = np.bincount(parts.part[counted], minlength=len(parts.good))
    return counts > max_count


def _point(parts: _Parts, bad: np.ndarray, fired: np.ndarray, threshold: float) -> Point:
    return Point(
        threshold=threshold,
        escapes=int((bad & ~fired).sum()),
        false_rejects=int((parts.good & fired).sum()),
        bad=int(bad.sum()),
        good=int(parts.good.sum()),
    )


def _area_grid(parts: _Parts, k: int, min_score: float) -> list[float]:
    areas = np.unique(parts.area[(parts.class_id == k) & (parts.score >= min_score)])
    if len(areas) > AREA_POINTS:
        areas = np.unique(np.quantile(areas, np.linspace(0, 1, AREA_POINTS), method="lower"))
    return [0.0, *(float(a) for a in areas if a > 0)]


def _floor(value: float, digits: int = 4) -> float:
    """Rounded down: a threshold written with fewer digits still counts the defect it was chosen on."""
    scale = 10**digits
    return math.floor(value * scale) / scale


def class_rules(recipe: RecipeSettings, name: str) -> tuple[str, float, float | None, float | None, int]:
    """The recipe's rule for class `name` outside every zone, as the decision service resolves it: verdict,
    min_score, min_area_px, min_area_mm2, max_count."""
    rule = resolve_rule(recipe, name)
    return rule.verdict, rule.min_score, rule.min_area_px, rule.min_area_mm2, rule.max_count


def tune(
    truths: Sequence[Truth],
    predictions: Sequence[Predicted],
    class_names: Sequence[str],
    recipe: RecipeSettings,
    *,
    target_escape: float = 0.0,
    px_per_mm: float | None = None,
) -> Tuning:
    """The curves and the proposal for each class `recipe` judges; areas in mm² with `px_per_mm`, else px²."""
    if not 0 <= target_escape < 1:
        raise ValueError(f"target_escape: a rate in [0, 1), got {target_escape}")
    parts = _parts(truths, predictions, len(class_names), px_per_mm, list(recipe.zones.values()))
    unit = "mm2" if px_per_mm else "px2"
    tuned, ignored = [], []
    current_fired = np.zeros(len(truths), dtype=bool)
    proposed_fired = np.zeros(len(truths), dtype=bool)
    for k, name in enumerate(class_names):
        verdict, score, area_px, area_mm2, max_count = class_rules(recipe, name)
        if verdict == "ignore":
            ignored.append(name)
            continue
        current = Thresholds(score, area_mm2 if px_per_mm else area_px)
        at_current = _fires(parts, k, current.min_score, current.min_area, max_count)
        current_fired |= at_current
        curve = [_point(parts, parts.has[:, k], _fires(parts, k, t, None, max_count), t) for t in SCORE_GRID]
        bad = curve[0].bad
        allowed = math.floor(target_escape * bad + 1e-9)
        note = ""
        if bad == 0:
            # Nothing to tell an escape by: the recipe's threshold stays.
            best, met, note = current.min_score, True, f"no labelled part has a {name}: its thresholds are kept"
        else:
            meeting = [p for p in curve if p.escapes <= allowed]
            if meeting:
                best, met = meeting[-1].threshold, True
            else:
                fewest = min(p.escapes for p in curve)
                best, met = [p for p in curve if p.escapes == fewest][-1].threshold, False
                note = (
                    f"no score threshold meets the target: at best {fewest} of {bad} parts with a {name} escape "
                    "(the model does not find them)"
                )
        base = _point(parts, parts.has[:, k], _fires(parts, k, best, None, max_count), best)
        area_curve = [
            _point(parts, parts.has[:, k], _fires(parts, k, best, a, max_count), a) for a in _area_grid(parts, k, best)
        ]
        if bad == 0 or parts.good.sum() == 0:
            area = current.min_area
            if bad and not note:
                note = "the set has no good part: false rejects unknown, the area threshold is kept"
        else:
            safe = [p for p in area_curve if p.escapes <= base.escapes]
            fewest_fr = min(p.false_rejects for p in safe)
            chosen = next(p for p in safe if p.false_rejects == fewest_fr)
            area = _floor(chosen.threshold) if chosen.false_rejects < base.false_rejects else None
        proposed = Thresholds(best, area)
        fired = _fires(parts, k, proposed.min_score, proposed.min_area, max_count)
        proposed_fired |= fired
        tuned.append(
            ClassTune(
                name=name,
                bad=bad,
                good=int(parts.good.sum()),
                max_count=max_count,
                current=current,
                proposed=proposed,
                at_current=_point(parts, parts.has[:, k], at_current, current.min_score),
                at_proposed=_point(parts, parts.has[:, k], fired, proposed.min_score),
                met=met,
                score_curve=curve,
                area_curve=area_curve,
                note=note,
            )
        )
    judged = [k for k, name in enumerate(class_names) if name not in ignored]
    # The part is bad by the classes the recipe judges (a part with only ignored defects is neither bad nor good).
    judged_bad: np.ndarray = np.asarray(parts.has[:, judged].any(axis=1))
    return Tuning(
        target_escape=target_escape,
        unit=unit,
        images=len(truths),
        classes=tuned,
        ignored=ignored,
        part_current=_point(parts, judged_bad, current_fired, 0.0),
        part_proposed=_point(parts, judged_bad, proposed_fired, 0.0),
    )


def proposed_recipe(recipe: RecipeSettings, tuning: Tuning, version: str) -> dict[str, Any]:
    """The recipe's settings with the proposed thresholds, as a version file's mapping (without its `id`)."""
    data = {"version": version, **recipe.model_dump(mode="json", exclude_defaults=True, exclude={"version"})}
    field_name = "min_area_mm2" if tuning.unit == "mm2" else "min_area_px"
    classes = data.setdefault("classes", {})
    for c in tuning.classes:
        rule = classes.setdefault(c.name, {})
        rule["min_score"] = c.proposed.min_score
        if c.proposed.min_area is None:
            rule.pop(field_name, None)
        else:
            rule[field_name] = c.proposed.min_area
    return data


# --- the curve as a PNG --------------------------------------------------------------------------------------

_PANEL = (360, 240)  # width, height
_MARGIN = 36
_ESCAPE = (40, 40, 220)  # BGR: red
_REJECT = (200, 120, 30)  # blue
_CHOSEN = (60, 160, 60)


def _panel(title: str, xs: Sequence[float], curve: Sequence[Point], chosen: float | None, log_x: bool) -> np.ndarray:
    w, h = _PANEL
    image = np.full((h, w, 3), 255, np.uint8)
    x0, y0, x1, y1 = _MARGIN, 24, w - 12, h - _MARGIN
    cv2.rectangle(image, (x0, y0), (x1, y1), (180, 180, 180), 1)
    lo, hi = (0.0, 1.0) if not xs else (min(xs), max(xs))
    if log_x:
        lo, hi = math.log10(1 + lo), math.log10(1 + hi)
    span = hi - lo or 1.0

    def px(x: float, rate: float) -> tuple[int, int]:
        value = math.log10(1 + x) if log_x else x
        return int(x0 + (value - lo) / span * (x1 - x0)), int(y1 - rate * (y1 - y0))

    for rate_of, colour in ((lambda p: p.escape_rate, _ESCAPE), (lambda p: p.false_reject_rate, _REJECT)):
        points = [px(x, r) for x, p in zip(xs, curve, strict=True) if (r := rate_of(p)) is not None]
        if len(points) > 1:
            cv2.polylines(image, [np.array(points, np.int32)], False, colour, 2, cv2.LINE_AA)
    if chosen is not None and xs:
        cx = px(chosen, 0)[0]
        cv2.line(image, (cx, y0), (cx, y1), _CHOSEN, 1, cv2.LINE_AA)
    font = cv2.FONT_HERSHEY_SIMPLEX
    cv2.putText(image, title, (x0, 16), font, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    left = f"{min(xs):g}" if xs else "0"
    cv2.putText(image, left, (x0 - 4, y1 + 16), font, 0.35, (0, 0, 0), 1, cv2.LINE_AA)
    right = f"{max(xs):g}" if xs else "1"
    cv2.putText(image, right, (x1 - 8 * len(right), y1 + 16), font, 0.35, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(image, "1", (x0 - 14, y0 + 6), font, 0.35, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(image, "0", (x0 - 14, y1 + 4), font, 0.35, (0, 0, 0), 1, cv2.LINE_AA)
    return image


def plot_curves(tuning: Tuning, path: Path) -> Path:
    """Per class two panels: escape rate (red) and false-reject rate (blue) over the score threshold, and over the
    area threshold at the proposed score; the proposed thresholds as green lines."""
    rows = []
    for c in tuning.classes:
        score = _panel(
            f"{c.name}: over min_score ({'met' if c.met else 'NOT met'})",
            [p.threshold for p in c.score_curve],
            c.score_curve,
            c.proposed.min_score,
            log_x=False,
        )
        area = _panel(
            f"{c.name}: over min area ({tuning.unit}, log) at {c.proposed.min_score:g}",
            [p.threshold for p in c.area_curve],
            c.area_curve,
            c.proposed.min_area,
            log_x=True,
        )
        rows.append(np.hstack([score, area]))
    legend = np.full((28, 2 * _PANEL[0], 3), 255, np.uint8)
    font = cv2.FONT_HERSHEY_SIMPLEX
    for x, text, colour in (
        (10, "escape rate", _ESCAPE),
        (140, "false-reject rate", _REJECT),
        (310, f"proposed (target escape {tuning.target_escape:g})", _CHOSEN),
    ):
        cv2.line(legend, (x, 14), (x + 20, 14), colour, 2)
        cv2.putText(legend, text, (x + 26, 18), font, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    image = np.vstack([legend, *rows]) if rows else legend
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), image):
        raise OSError(f"cannot write {path}")
    return path
