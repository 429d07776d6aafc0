"""A recipe's rules applied to one part's results: the verdict and why.

Plain functions over the protobuf results, so the tests can call them directly
and a reader finds every rule in this one file."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from lineguard.config import ClassRule, RecipeSettings
from lineguard.reasons import defect_reason
from lineguard.v1.decision_pb2 import Verdict
from lineguard.v1.inference_pb2 import InferenceResult
from lineguard.v1.ocr_pb2 import OcrResult

# Reason codes the PLC, the MES rows and the docs use.
TIMEOUT = "TIMEOUT"
NO_INFERENCE = "NO_INFERENCE"
NO_OCR = "NO_OCR"
CODE_MISSING = "CODE_MISSING"
CODE_INVALID = "CODE_INVALID"
UNKNOWN_RECIPE = "UNKNOWN_RECIPE"
INVALID_RESULT = "INVALID_RESULT"

# Worse verdicts win: one failing defect fails the part whatever else is found.
_SEVERITY = {Verdict.VERDICT_PASS: 0, Verdict.VERDICT_REWORK: 1, Verdict.VERDICT_FAIL: 2, Verdict.VERDICT_ERROR: 3}
_RULE_VERDICT = {"fail": Verdict.VERDICT_FAIL, "rework": Verdict.VERDICT_REWORK}


@dataclass
class Judgement:
    verdict: Verdict = Verdict.VERDICT_PASS
    reasons: list[str] = field(default_factory=list)
    serial: str = ""

    def worsen(self, verdict: Verdict, reason: str) -> None:
        if _SEVERITY[verdict] > _SEVERITY[self.verdict]:
            self.verdict = verdict
        if reason not in self.reasons:
            self.reasons.append(reason)


def judge(recipe: RecipeSettings, inference: InferenceResult | None, ocr: OcrResult | None) -> Judgement:
    """The verdict on one part. A missing input is a FAIL (TIMEOUT), never a pass."""
    judgement = Judgement()
    if inference is None or ocr is None:
        judgement.worsen(Verdict.VERDICT_FAIL, TIMEOUT)
        if inference is None:
            judgement.worsen(Verdict.VERDICT_FAIL, NO_INFERENCE)
        if ocr is None:
            judgement.worsen(Verdict.VERDICT_FAIL, NO_OCR)
    if inference is not None:
        _judge_defects(recipe, inference, judgement)
    if ocr is not None:
        _judge_codes(recipe, ocr, judgement)
    return judgement


def _judge_defects(recipe: RecipeSettings, inference: InferenceResult, judgement: Judgement) -> None:
    for det in inference.detections:
        if not math.isfinite(det.score):
            # A broken model output (NaN) compares False with every threshold: it must not read as "no defect".
            judgement.worsen(Verdict.VERDICT_ERROR, INVALID_RESULT)
            continue
        rule = recipe.classes.get(det.class_name, ClassRule())
        if rule.verdict == "ignore":
            continue
        min_score = rule.min_score if rule.min_score is not None else recipe.min_score
        if det.score >= min_score:
            judgement.worsen(_RULE_VERDICT[rule.verdict], defect_reason(det.class_name))


def _judge_codes(recipe: RecipeSettings, ocr: OcrResult, judgement: Judgement) -> None:
    texts = [code.text for code in ocr.codes if code.text]
    if recipe.code_pattern is not None:
        pattern = re.compile(recipe.code_pattern)
        matching = [t for t in texts if pattern.fullmatch(t)]
        judgement.serial = matching[0] if matching else ""
        if texts and not matching:
            judgement.worsen(Verdict.VERDICT_FAIL, CODE_INVALID)
    elif texts:
        judgement.serial = texts[0]
    if recipe.require_code and not texts:
        judgement.worsen(Verdict.VERDICT_FAIL, CODE_MISSING)
    # The recipe's identity fields, checked by the OCR service (lineguard.ocr.fields): each failure is its
    # reason; the serial is the `serial` field's value, which is set only when it validated.
    for read in ocr.fields:
        if read.reason:
            judgement.worsen(Verdict.VERDICT_FAIL, read.reason)
        if read.name == "serial":
            judgement.serial = read.value
