"""A recipe's rules applied to one part's results: the verdict, its reasons and why.

`judge(recipe, inference, ocr)` is a plain function of what it is given, so the tests, the
benchmark and a shadow verdict call it directly, and a reader finds every rule in this one file but
one: which rule a class gets where a defect lies is lineguard.config.rules.resolve_rule, shared with the
tools that must say what a recipe does (`lineguard recipe diff`, `recipe tune`).
Each rule that fires is a `Finding` with the figures it compared and a line a person reads; the
verdict is the worst finding's, the reasons are the findings' reason codes, worst first and then
by name, each once. docs/decisions.md is the rule language."""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from lineguard.config import RecipeSettings
from lineguard.config.rules import MM2, PX2, ResolvedRule, Zone, polygon_contains, resolve_rule
from lineguard.contracts import VERDICT_NAMES
from lineguard.reasons import defect_reason
from lineguard.v1.decision_pb2 import Verdict
from lineguard.v1.inference_pb2 import Detection, InferenceResult
from lineguard.v1.ocr_pb2 import OcrResult

# Reason codes the PLC, the MES rows and the docs use.
TIMEOUT = "TIMEOUT"
NO_INFERENCE = "NO_INFERENCE"
OVERLOAD = "OVERLOAD"  # the inference service refused the frame: the model could not judge it by the deadline
NO_OCR = "NO_OCR"
CODE_MISSING = "CODE_MISSING"
CODE_INVALID = "CODE_INVALID"
UNKNOWN_RECIPE = "UNKNOWN_RECIPE"
INVALID_RESULT = "INVALID_RESULT"
IMAGE_SIZE_MISMATCH = "IMAGE_SIZE_MISMATCH"
TOTAL_DEFECT_AREA = "TOTAL_DEFECT_AREA"

_UNIT_TEXT = {MM2: "mm²", PX2: "px²"}

# Worse verdicts win: one failing defect fails the part whatever else is found.
SEVERITY = {Verdict.VERDICT_PASS: 0, Verdict.VERDICT_REWORK: 1, Verdict.VERDICT_FAIL: 2, Verdict.VERDICT_ERROR: 3}
_RULE_VERDICT = {"fail": Verdict.VERDICT_FAIL, "rework": Verdict.VERDICT_REWORK}
# A part names the same few classes again and again; each name's reason is worked out once.
_defect_reason = functools.lru_cache(maxsize=1024)(defect_reason)
_OUTSIDE: tuple[tuple[str, Zone | None]] = (("", None),)


@dataclass(frozen=True)
class Finding:
    """One rule that fired: the verdict it gives on its own, its reason code and the line a person reads, with the
    figures behind it (the wire's lineguard.v1.Finding)."""

    verdict: Verdict
    reason: str
    rule: str
    text: str
    class_name: str = ""
    zone: str = ""
    detections: tuple[int, ...] = ()
    score: float = 0.0
    threshold: float = 0.0
    at: tuple[float, float] | None = None
    area: float = 0.0
    area_unit: str = ""
    count: int = 0


@dataclass
class Judgement:
    verdict: Verdict = Verdict.VERDICT_PASS
    reasons: list[str] = field(default_factory=list)
    serial: str = ""
    explanation: list[Finding] = field(default_factory=list)

    @classmethod
    def of(cls, findings: Iterable[Finding], serial: str = "") -> Judgement:
        """The judgement these findings make: the worst verdict; findings and reasons worst first, then by reason
        (a stable sort: one reason's findings keep the detections' order)."""
        ordered = sorted(findings, key=lambda f: (-SEVERITY[f.verdict], f.reason))
        verdict = ordered[0].verdict if ordered else Verdict.VERDICT_PASS
        return cls(verdict, list(dict.fromkeys(f.reason for f in ordered)), serial, ordered)


def judge(recipe: RecipeSettings, inference: InferenceResult | None, ocr: OcrResult | None) -> Judgement:
    """The verdict on one part. A missing input is a FAIL (TIMEOUT), a frame refused by the inference or OCR
    service a FAIL with its reason (OVERLOAD), never a pass."""
    findings: list[Finding] = []
    refusals = [
        (service, what, result.refused)
        for service, what, result in (("inference", "the model", inference), ("OCR", "the code reader", ocr))
        if result is not None and result.refused
    ]
    for service, what, reason in refusals:
        # The part was not judged and cannot pass: it fails with the refusal's own reason, not as a TIMEOUT.
        text = (
            f"the {service} service refused the frame ({reason}): {what} could not judge it by the recipe's "
            f"{recipe.deadline_ms} ms deadline"
        )
        findings.append(_plain(Verdict.VERDICT_FAIL, reason, "input", text))
    refused = bool(refusals)
    if not refused and (inference is None or ocr is None):
        missing = " and ".join(name for name, r in (("inference", inference), ("OCR", ocr)) if r is None)
        text = f"no {missing} result by the recipe's {recipe.deadline_ms} ms deadline"
        findings.append(_plain(Verdict.VERDICT_FAIL, TIMEOUT, "input", text))
        if inference is None:
            findings.append(_plain(Verdict.VERDICT_FAIL, NO_INFERENCE, "input", "the defect model's result is missing"))
        if ocr is None:
            findings.append(_plain(Verdict.VERDICT_FAIL, NO_OCR, "input", "the code reader's result is missing"))
    if inference is not None and not inference.refused:
        findings += judge_defects(recipe, inference)
    serial = ""
    if ocr is not None and not ocr.refused:
        serial = _judge_codes(recipe, ocr, findings)
    return Judgement.of(findings, serial)


def unknown_recipe(recipe_id: str, known: Iterable[str]) -> Judgement:
    """ERROR for a part whose recipe is not configured: it cannot be judged, and is never a pass."""
    text = f"recipe {recipe_id!r} is not configured (known: {', '.join(sorted(known))})"
    return Judgement.of([_plain(Verdict.VERDICT_ERROR, UNKNOWN_RECIPE, "recipe", text)])


# -- defects -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Defect:
    index: int
    class_name: str
    score: float
    x: float
    y: float
    area: float
    unit: str


def judge_defects(recipe: RecipeSettings, inference: InferenceResult) -> list[Finding]:
    """The findings on the defects: per class and zone, and on the part's total defect area."""
    findings: list[Finding] = []
    zones = recipe.zones
    size = recipe.image_size
    image = (inference.image_width, inference.image_height)
    if zones and size is not None and all(image) and image != (size.width, size.height):
        text = (
            f"the image is {inference.image_width} x {inference.image_height}, the recipe's zones are drawn on "
            f"{size.width} x {size.height}: they would be in the wrong place"
        )
        findings.append(_plain(Verdict.VERDICT_ERROR, IMAGE_SIZE_MISMATCH, "recipe", text))
        zones = {}  # the defects are still judged and explained, by the recipe's class rules alone
    places = [_Place(name, zone, zone.kind, zone.polygon, *zone.bounds()) for name, zone in zones.items()]
    rules: dict[tuple[str, str], ResolvedRule] = {}
    counted: dict[tuple[str, str], list[_Defect]] = {}
    for index, detection in enumerate(inference.detections):
        defect = _defect(index, detection)
        if defect is None:
            findings.append(_invalid(index, detection))
            continue
        for name, zone in _judging_zones(places, defect):
            key = (name, defect.class_name)
            rule = rules.get(key)
            if rule is None:
                rule = rules[key] = resolve_rule(recipe, defect.class_name, name, zone)
            if rule.verdict == "ignore" or defect.score < rule.min_score:
                continue
            min_area = rule.min_area(defect.unit)
            if min_area is not None and defect.area < min_area:
                continue
            counted.setdefault(key, []).append(defect)
    for key, defects in counted.items():
        rule = rules[key]
        if len(defects) <= rule.max_count:
            continue
        if rule.max_count == 0:
            findings += [_defect_finding(d, rule) for d in defects]
        else:
            findings.append(_count_finding(defects, rule))
    if recipe.total_area is not None:
        findings += _total_area(recipe, counted.values())
    return findings


def _defect(index: int, d: Detection) -> _Defect | None:
    """The defect as the rules see it: its place is its box's centre; None when a figure is not a number."""
    b = d.box
    # One sum for all seven: a NaN or an infinity in any makes it non-finite, and float32 figures cannot overflow it.
    if not math.isfinite(d.score + b.x1 + b.y1 + b.x2 + b.y2 + d.area_px + d.area_mm2):
        return None
    # A calibrated station gives every defect an area in mm² (lineguard.services.inference.detect.to_proto).
    unit, area = (MM2, d.area_mm2) if d.area_mm2 > 0 else (PX2, d.area_px)
    return _Defect(index, d.class_name, d.score, (b.x1 + b.x2) / 2, (b.y1 + b.y2) / 2, area, unit)


@dataclass(frozen=True)
class _Place:
    """A zone as one judgement reads it, its bounding box first: most defects lie outside most zones."""

    name: str
    zone: Zone
    kind: str
    polygon: list[tuple[float, float]]
    x0: float
    y0: float
    x1: float
    y1: float


def _judging_zones(places: list[_Place], defect: _Defect) -> Sequence[tuple[str, Zone | None]]:
    """The zones that judge a defect: every critical or tolerant zone it lies in; none of those and an ignored one:
    nothing; in no zone at all: the recipe's class rules ("" and None)."""
    x, y = defect.x, defect.y
    inside = [p for p in places if p.x0 <= x <= p.x1 and p.y0 <= y <= p.y1 and polygon_contains(p.polygon, x, y)]
    if not inside:
        return _OUTSIDE
    return [(p.name, p.zone) for p in inside if p.kind != "ignored"]


def _where(rule: ResolvedRule) -> str:
    if not rule.zone:
        return ""
    return f" in {'critical ' if rule.critical else ''}zone {rule.zone!r}"


def _area_text(area: float, unit: str) -> str:
    figure = f"{area:.0f}" if area >= 100 else f"{area:.3g}"
    return f"{figure} {_UNIT_TEXT[unit]}"


def _one(d: _Defect) -> str:
    return f"{d.score:.2f} at ({d.x:.0f}, {d.y:.0f}), {_area_text(d.area, d.unit)}"


def _defect_finding(d: _Defect, rule: ResolvedRule) -> Finding:
    verdict = _RULE_VERDICT[rule.verdict]
    text = (
        f"{d.class_name} {d.score:.2f} ≥ {rule.min_score:.2f} at ({d.x:.0f}, {d.y:.0f}), {_area_text(d.area, d.unit)}"
    )
    min_area = rule.min_area(d.unit)
    if min_area is not None:
        text += f" ≥ {_area_text(min_area, d.unit)}"
    return Finding(
        verdict,
        _defect_reason(d.class_name),
        "critical_zone" if rule.critical else "score",
        f"{VERDICT_NAMES[verdict]}: {text}{_where(rule)}",
        class_name=d.class_name,
        zone=rule.zone,
        detections=(d.index,),
        score=d.score,
        threshold=rule.min_score,
        at=(d.x, d.y),
        area=d.area,
        area_unit=d.unit,
    )


def _count_finding(defects: list[_Defect], rule: ResolvedRule) -> Finding:
    verdict = _RULE_VERDICT[rule.verdict]
    name = defects[0].class_name
    each = "; ".join(_one(d) for d in defects)
    text = f"{VERDICT_NAMES[verdict]}: {len(defects)} {name} > {rule.max_count} allowed{_where(rule)} ({each})"
    return Finding(
        verdict,
        _defect_reason(name),
        "count",
        text,
        class_name=name,
        zone=rule.zone,
        detections=tuple(d.index for d in defects),
        threshold=rule.max_count,
        count=len(defects),
    )


def _total_area(recipe: RecipeSettings, counted: Iterable[list[_Defect]]) -> list[Finding]:
    rule = recipe.total_area
    assert rule is not None
    # A defect judged in two zones counts once.
    defects = {d.index: d for group in counted for d in group}
    findings = []
    for unit, limit in ((MM2, rule.max_mm2), (PX2, rule.max_px)):
        these = sorted(i for i, d in defects.items() if d.unit == unit)
        if limit is None or not these:
            continue
        total = sum(defects[i].area for i in these)
        if total > limit:
            verdict = _RULE_VERDICT[rule.verdict]
            text = (
                f"{VERDICT_NAMES[verdict]}: total defect area {_area_text(total, unit)} > {_area_text(limit, unit)} "
                f"over {len(these)} defect{'s' * (len(these) != 1)}"
            )
            findings.append(
                Finding(
                    verdict,
                    TOTAL_DEFECT_AREA,
                    "total_area",
                    text,
                    detections=tuple(these),
                    threshold=limit,
                    area=total,
                    area_unit=unit,
                    count=len(these),
                )
            )
    return findings


def _invalid(index: int, d: Detection) -> Finding:
    # A broken model output (NaN) compares False with every threshold: it must not read as "no defect".
    text = (
        f"ERROR: detection {index} ({d.class_name}) has a score, box or area that is not a number: the model's output "
        "cannot be judged"
    )
    return Finding(Verdict.VERDICT_ERROR, INVALID_RESULT, "invalid", text, class_name=d.class_name, detections=(index,))


# -- codes ---------------------------------------------------------------------------------------------------------


def _judge_codes(recipe: RecipeSettings, ocr: OcrResult, findings: list[Finding]) -> str:
    """The part's serial; the code rules' findings appended to `findings`."""
    serial = ""
    texts = [code.text for code in ocr.codes if code.text]
    if recipe.code_pattern is not None:
        pattern = re.compile(recipe.code_pattern)
        matching = [t for t in texts if pattern.fullmatch(t)]
        serial = matching[0] if matching else ""
        if texts and not matching:
            seen = ", ".join(repr(t) for t in texts)
            text = f"no code matches {recipe.code_pattern} (read: {seen})"
            findings.append(_plain(Verdict.VERDICT_FAIL, CODE_INVALID, "code", text))
    elif texts:
        serial = texts[0]
    if recipe.require_code and not texts:
        findings.append(
            _plain(Verdict.VERDICT_FAIL, CODE_MISSING, "code", "no readable code, and the recipe needs one")
        )
    # The recipe's identity fields, checked by the OCR service (lineguard.ocr.fields): each failure is its
    # reason; the serial is the `serial` field's value, which is set only when it validated.
    for read in ocr.fields:
        if read.reason:
            said = f"field {read.name!r}: {read.reason}" + (f" ({read.detail})" if read.detail else "")
            findings.append(_plain(Verdict.VERDICT_FAIL, read.reason, "field", said))
        if read.name == "serial":
            serial = read.value
    return serial


def _plain(verdict: Verdict, reason: str, rule: str, text: str) -> Finding:
    return Finding(verdict, reason, rule, f"{VERDICT_NAMES[verdict]}: {text}")
