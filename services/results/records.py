"""From the wire messages (Decision, PlcAck, a shadow candidate's Decision) to database rows, checking them on the way.

Everything a row needs is checked here, before any database is touched, so a
message that can never be written is refused at once with every reason named
(the service dead-letters it) instead of being retried until it gives up."""

from __future__ import annotations

import functools
import math
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, String

from lineguard.config import LineConfig, RecipeSettings
from lineguard.config.model import ShiftCalendar
from lineguard.contracts import VERDICT_NAMES
from lineguard.imagequality import stored_figures
from lineguard.reasons import SEVERITY_RANK, ordered_reasons, reason_severity
from lineguard.recipes import recipe_sha256
from lineguard.services.results.schema import (
    VERDICTS,
    Code,
    Defect,
    Inspection,
    InspectionReason,
    ModelVersion,
    ShadowVerdict,
)
from lineguard.services.results.shifts import shift_at
from lineguard.v1.common_pb2 import Box, Polygon
from lineguard.v1.decision_pb2 import Decision
from lineguard.v1.plc_pb2 import PlcAck

REASON_SEPARATOR = ","
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_INT32_MAX = 2**31 - 1
GRADE_LETTERS = ("A", "B", "C", "D", "F")  # lineguard.ocr.grades.LETTERS, best first
_LETTER_SET = frozenset(GRADE_LETTERS)


class InvalidRecord(ValueError):
    """The message cannot become a row; the text names each problem."""


@dataclass(frozen=True)
class LineFacts:
    """What the line's configuration adds to a decision's rows: the product, the shift, how bad each reason is,
    and the sha256 of each recipe version as configured."""

    calendar: ShiftCalendar = field(default_factory=ShiftCalendar)
    recipes: Mapping[str, RecipeSettings] = field(default_factory=dict)
    recipe_sha256: Mapping[tuple[str, str], str] = field(default_factory=dict)

    @classmethod
    def of(cls, config: LineConfig) -> LineFacts:
        return cls(
            calendar=config.calendar,
            recipes=dict(config.recipes),
            recipe_sha256={(rid, r.version): recipe_sha256(r) for rid, r in config.recipes.items()},
        )


@dataclass
class InspectionRows:
    """One decision as rows: the inspection, its defects, codes and reasons (no ids yet), and the model and recipe
    versions it names."""

    inspection: dict[str, Any]
    defects: list[dict[str, Any]] = field(default_factory=list)
    codes: list[dict[str, Any]] = field(default_factory=list)
    reasons: list[dict[str, Any]] = field(default_factory=list)
    model_version: dict[str, Any] | None = None  # model_versions' row: model_id, version, sha256
    recipe_version: dict[str, Any] | None = None  # recipe_versions' row: recipe_id, version, sha256

    @property
    def inspection_id(self) -> str:
        return self.inspection["inspection_id"]


@dataclass(frozen=True)
class AckUpdate:
    """What a PlcAck changes on its inspection's row."""

    inspection_id: str
    plc_verdict: str
    plc_delivered_at: datetime | None  # None: the PLC could not be reached


def from_unix_ns(ns: int) -> datetime:
    """Nanoseconds since the epoch as an aware UTC datetime (microsecond precision)."""
    return _EPOCH + timedelta(microseconds=ns // 1000)


def to_unix_ns(at: datetime) -> int:
    delta = at - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000


def decision_rows(decision: Decision, facts: LineFacts | None = None) -> InspectionRows:
    """The rows for `decision`, or InvalidRecord naming every problem found.

    `facts` (the line's configuration) gives the product, the shift and each reason's severity; without it they
    are NULL, and every reason is as bad as the verdict."""
    facts = facts or LineFacts()
    problems: list[str] = []
    part = decision.part
    inspection_id = _inspection_id(part.inspection_id, problems)
    for name in ("line", "station", "recipe_id"):
        _required(problems, f"part.{name}", getattr(part, name), _LENGTHS[name])
    for name in ("part_id", "lot"):
        _fits(problems, f"part.{name}", getattr(part, name), _LENGTHS[name])
    _fits(problems, "inference.model_sha256", decision.inference.model_sha256, _LENGTHS["model_sha256"])
    verdict = _verdict(problems, "verdict", decision.verdict)
    if part.triggered_unix_ns <= 0:
        problems.append("part.triggered_unix_ns: missing (must be > 0)")
    if decision.decided_unix_ns <= 0:
        problems.append("decided_unix_ns: missing (must be > 0)")
    reason_length = _REASON_LENGTH
    for i, code in enumerate(decision.reason_codes):
        if not code.strip() or REASON_SEPARATOR in code:
            problems.append(f"reason_codes[{i}]: {code!r} is empty or contains {REASON_SEPARATOR!r}")
        elif len(code) > reason_length:
            problems.append(f"reason_codes[{i}]: {len(code)} characters, the column holds {reason_length}")
    for name in ("recipe_version", "serial", "model_id", "model_version"):
        _fits(problems, name, getattr(decision, name), _LENGTHS[name])

    timings: dict[str, float] = {}
    for i, stage in enumerate(decision.timings):
        if not stage.stage or not math.isfinite(stage.ms):
            problems.append(f"timings[{i}]: needs a stage name and a finite ms, got {stage.stage!r}={stage.ms}")
        else:
            timings[stage.stage] = stage.ms

    defects = [_defect(problems, i, d) for i, d in enumerate(decision.inference.detections)]
    explanation = [_finding(problems, i, f) for i, f in enumerate(decision.explanation)]
    codes = [_code(problems, i, c) for i, c in enumerate(decision.ocr.codes)]
    if problems:
        raise InvalidRecord(f"invalid decision {part.inspection_id or '<no id>'}: " + "; ".join(problems))

    triggered_at = from_unix_ns(part.triggered_unix_ns)
    decided_at = from_unix_ns(decision.decided_unix_ns)
    recipe = facts.recipes.get(part.recipe_id)
    # The version's sha256 as the decision service judged by it (the recipe store's); else as configured here.
    recipe_sha = part.recipe_sha256 or facts.recipe_sha256.get((part.recipe_id, decision.recipe_version)) or None
    slot = shift_at(facts.calendar, triggered_at)
    inspection = {
        "inspection_id": inspection_id,
        "line": part.line,
        "station": part.station,
        "recipe_id": part.recipe_id,
        "recipe_version": decision.recipe_version or None,
        "recipe_sha256": recipe_sha if decision.recipe_version else None,
        "sequence": part.sequence,
        "serial": decision.serial or None,
        "verdict": verdict,
        "reason_codes": REASON_SEPARATOR.join(decision.reason_codes),
        "model_id": decision.model_id or None,
        "model_version": decision.model_version or None,
        "triggered_at": triggered_at,
        "decided_at": decided_at,
        "total_ms": timings.get("total", (decision.decided_unix_ns - part.triggered_unix_ns) / 1e6),
        "timings": timings,
        # 0 is the wire's "not set"; no image has zero pixels.
        "image_width": decision.inference.image_width or None,
        "image_height": decision.inference.image_height or None,
        "part_id": part.part_id or None,
        "lot": part.lot or None,
        "product": recipe.product if recipe is not None else None,
        "shift": slot.name if slot is not None else None,
        "shift_day": slot.day if slot is not None else None,
        # Written since the decision service explains its verdicts (issue 17); an older producer's: NULL.
        "explanation": explanation or None,
        # The frame's brightness, contrast, sharpness and saturation as capture measured them (docs/drift.md).
        "image_quality": _image_quality(decision),
    }
    for row in (*defects, *codes):
        row["inspection_id"] = inspection_id
    rework = tuple(c for c, rule in recipe.classes.items() if rule.verdict == "rework") if recipe is not None else ()
    # The decision's own findings say how bad each reason was where it fired (a zone can make a class rework in one
    # place and fail in another); a reason it does not explain is judged by the recipe as configured.
    explained: dict[str, str] = {}
    for finding in explanation:
        worst = explained.get(finding["reason"])
        if worst is None or SEVERITY_RANK[finding["verdict"]] > SEVERITY_RANK[worst]:
            explained[finding["reason"]] = finding["verdict"]
    severities = [
        (code, explained.get(code) or (_severity(code, verdict, rework) if recipe is not None else verdict))
        for code in decision.reason_codes
    ]
    reasons = [
        {"inspection_id": inspection_id, "position": i, "reason_code": code, "severity": severity}
        for i, (code, severity) in enumerate(ordered_reasons(severities))
    ]
    model_version = None
    if decision.model_id and decision.model_version:
        sha = decision.inference.model_sha256 or None
        model_version = {"model_id": decision.model_id, "version": decision.model_version, "sha256": sha}
    recipe_version = None
    if decision.recipe_version:
        recipe_version = {"recipe_id": part.recipe_id, "version": decision.recipe_version, "sha256": recipe_sha}
    return InspectionRows(inspection, defects, codes, reasons, model_version, recipe_version)


def ack_update(ack: PlcAck) -> AckUpdate:
    """What `ack` records, or InvalidRecord naming every problem found."""
    problems: list[str] = []
    inspection_id = _inspection_id(ack.part.inspection_id, problems)
    verdict = _verdict(problems, "verdict", ack.verdict)
    if ack.delivered and ack.delivered_unix_ns <= 0:
        problems.append("delivered_unix_ns: missing although delivered is true")
    if problems:
        raise InvalidRecord(f"invalid PLC ack {ack.part.inspection_id or '<no id>'}: " + "; ".join(problems))
    delivered_at = from_unix_ns(ack.delivered_unix_ns) if ack.delivered else None
    return AckUpdate(inspection_id, verdict, delivered_at)


# Looked up once: the column's length through the ORM, and a reason's severity (a regex a defect class), were a
# tenth of decision_rows' time at thousands of inspections a second (benchmarks/results.py).
_REASON_LENGTH: int = InspectionReason.reason_code.type.length  # a String's
_INSPECTION_CHECKED = (
    *("line", "station", "recipe_id", "part_id", "lot"),
    *("recipe_version", "serial", "model_id", "model_version"),
)
_severity = functools.lru_cache(maxsize=4096)(reason_severity)


def _inspection_id(value: str, problems: list[str]) -> str:
    if not value:
        problems.append("part.inspection_id: missing")
        return value
    try:
        canonical = str(uuid.UUID(value))
    except ValueError:
        problems.append(f"part.inspection_id: {value[:60]!r} is not a UUID")
        return value
    if canonical != value.lower() or len(value) != 36:
        problems.append(f"part.inspection_id: {value[:60]!r} is not in the 36-character form")
    return value


def _verdict(problems: list[str], name: str, value: int) -> str:
    label = VERDICT_NAMES.get(value)
    if label in VERDICTS:
        return label
    if label == "UNSPECIFIED":
        problems.append(f"{name}: missing (VERDICT_UNSPECIFIED)")
    else:
        problems.append(f"{name}: unknown value {value} (expected one of {', '.join(VERDICTS)})")
    return ""


def _length(column: ColumnElement[Any]) -> int | None:
    return column.type.length if isinstance(column.type, String) else None


def _required(problems: list[str], name: str, value: str, length: int | None) -> None:
    if not value:
        problems.append(f"{name}: missing")
    else:
        _fits(problems, name, value, length)


def _fits(problems: list[str], name: str, value: str, length: int | None) -> None:
    if length is not None and len(value) > length:
        problems.append(f"{name}: {len(value)} characters, the column holds {length}")


# Each checked column's length, read off the ORM once (a lookup through the table's columns a field cost more than
# the check).
_LENGTHS: dict[str, int | None] = {
    **{name: _length(Inspection.__table__.c[name]) for name in _INSPECTION_CHECKED},
    "model_sha256": _length(ModelVersion.__table__.c.sha256),
    "class_name": _length(Defect.__table__.c.class_name),
    "symbology": _length(Code.__table__.c.symbology),
    "shadow_model_id": _length(ShadowVerdict.__table__.c.model_id),
    "shadow_model_version": _length(ShadowVerdict.__table__.c.model_version),
}


# The wire carries float32: keep its 7 significant digits, not the binary noise after them
# (a score of 0.9 stays 0.9 in the MES, not 0.8999999761581421). Mapped over a whole row's values at once: a
# function call a value was a third of decision_rows' time (some 50 values an inspection, benchmarks/results.py).
_G7 = "{:.7g}".format


def _f32s(values: Iterable[float]) -> list[float]:
    return list(map(float, map(_G7, values)))


def _finite(problems: list[str], name: str, values: dict[str, float]) -> dict[str, float]:
    numbers = values.values()
    if not all(map(math.isfinite, numbers)):
        bad = [k for k, v in values.items() if not math.isfinite(v)]
        problems.append(f"{name}: {', '.join(bad)} not finite")
    return dict(zip(values, _f32s(numbers), strict=True))


def _box(box: Box) -> dict[str, float]:
    return {"x1": box.x1, "y1": box.y1, "x2": box.x2, "y2": box.y2}


def _polygon(problems: list[str], name: str, polygon: Polygon) -> list[list[float]] | None:
    # The points read off the message once: each protobuf access costs more than the check itself (the writer's
    # budget at thousands of inspections a second, benchmarks/results.py).
    flat = [v for p in polygon.points for v in (p.x, p.y)]
    if not flat:
        return None
    if not all(map(math.isfinite, flat)):
        problems.append(f"{name}: a point is not finite")
        return None
    rounded = _f32s(flat)
    return [rounded[i : i + 2] for i in range(0, len(rounded), 2)]


def _defect(problems: list[str], i: int, detection: Any) -> dict[str, Any]:
    name = f"inference.detections[{i}]"
    _required(problems, f"{name}.class_name", detection.class_name, _LENGTHS["class_name"])
    if detection.class_id > _INT32_MAX:
        problems.append(f"{name}.class_id: {detection.class_id} is beyond the column's {_INT32_MAX}")
    numbers = _finite(
        problems,
        name,
        {"score": detection.score, **_box(detection.box), "area_px": detection.area_px, "area_mm2": detection.area_mm2},
    )
    return {
        "class_name": detection.class_name,
        "class_id": detection.class_id,
        **numbers,
        # 0 is how the wire says "uncalibrated"; NULL says it in SQL.
        "area_mm2": numbers["area_mm2"] or None,
        "mask": _polygon(problems, f"{name}.mask", detection.mask),
    }


def _finding(problems: list[str], i: int, finding: Any) -> dict[str, Any]:
    """One rule that fired, as docs/mes-schema.md's `explanation` has it: reason, verdict and text always, the
    figures where the rule has them."""
    name = f"explanation[{i}]"
    verdict = _verdict(problems, f"{name}.verdict", finding.verdict)
    if verdict == "PASS":
        problems.append(f"{name}.verdict: PASS is no rule firing")
    if not finding.reason or not finding.text:
        problems.append(f"{name}: needs a reason and a text")
    row: dict[str, Any] = {"reason": finding.reason, "verdict": verdict, "text": finding.text, "rule": finding.rule}
    for key in ("class_name", "zone", "area_unit"):
        if getattr(finding, key):
            row[key] = getattr(finding, key)
    if finding.detections:
        row["detections"] = list(finding.detections)
    # Score and area are 0 on the wire where the rule has none; only a rule about defects crosses a threshold.
    numbers = {key: getattr(finding, key) for key in ("score", "area") if getattr(finding, key)}
    if finding.detections:
        numbers["threshold"] = finding.threshold
    if finding.HasField("at"):
        numbers |= {"x": finding.at.x, "y": finding.at.y}
    row |= _finite(problems, name, numbers)
    if finding.count:
        row["count"] = finding.count
    return row


def _code(problems: list[str], i: int, code: Any) -> dict[str, Any]:
    name = f"ocr.codes[{i}]"
    _required(problems, f"{name}.symbology", code.symbology, _LENGTHS["symbology"])
    return {
        "symbology": code.symbology,
        "text": code.text,
        **_finite(problems, f"{name}.box", _box(code.box)),
        "outline": _polygon(problems, f"{name}.outline", code.outline),
        **_grades(problems, name, code),
    }


def _grades(problems: list[str], name: str, code: Any) -> dict[str, Any]:
    """codes.grade, quality and quality_grades: the code's print quality as the OCR result carries it; NULL for
    a code without a module grid (a 1D code has no grade, and the wire's empty maps say so)."""
    # Each field read off the message once (see _polygon): this runs for every code the writer stores.
    grade, letters, values = code.grade, dict(code.quality_grades), dict(code.quality)
    if not (grade or letters or values):
        return _UNGRADED
    if grade and grade not in _LETTER_SET:
        problems.append(f"{name}.grade: {grade[:8]!r} is not one of the letters {', '.join(GRADE_LETTERS)}")
    elif not grade:
        # The overall letter is what an MES query filters on: parameters without it would hide a bad print.
        problems.append(f"{name}.grade: missing although the code has print-quality parameters")
    if not _LETTER_SET.issuperset(letters.values()):
        bad = sorted(k for k, v in letters.items() if v not in _LETTER_SET)
        problems.append(f"{name}.quality_grades: {', '.join(bad)[:200]} not one of {', '.join(GRADE_LETTERS)}")
    return {
        "grade": grade or None,
        "quality": _finite(problems, f"{name}.quality", values) or None,
        "quality_grades": letters or None,
    }


_UNGRADED: dict[str, Any] = {"grade": None, "quality": None, "quality_grades": None}


def shadow_verdict_row(decision: Decision) -> dict[str, Any]:
    """The shadow_verdicts row of a candidate's would-be decision (lg.shadow_verdict), or InvalidRecord."""
    problems: list[str] = []
    inspection_id = _inspection_id(decision.part.inspection_id, problems)
    verdict = _verdict(problems, "verdict", decision.verdict)
    for name in ("model_id", "model_version"):
        _required(problems, name, getattr(decision, name), _LENGTHS[f"shadow_{name}"])
    if decision.decided_unix_ns <= 0:
        problems.append("decided_unix_ns: missing (must be > 0)")
    detections = [_defect(problems, i, d) for i, d in enumerate(decision.inference.detections)]
    infer_ms = [t.ms for t in decision.inference.timings if t.stage == "infer" and math.isfinite(t.ms)]
    if problems:
        raise InvalidRecord(
            f"invalid shadow verdict {decision.part.inspection_id or '<no id>'}: " + "; ".join(problems)
        )
    return {
        "inspection_id": inspection_id,
        "model_id": decision.model_id,
        "model_version": decision.model_version,
        "verdict": verdict,
        "reason_codes": REASON_SEPARATOR.join(decision.reason_codes),
        "detections": detections,
        "inference_ms": infer_ms[0] if infer_ms else None,
        "decided_at": from_unix_ns(decision.decided_unix_ns),
    }


def _image_quality(decision: Decision) -> dict[str, float] | None:
    """inspections.image_quality: NULL when the frame was not measured."""
    return stored_figures(decision.inference.image_quality) if decision.inference.HasField("image_quality") else None
