"""The Decision message: the verdict plus everything that was judged to reach it."""

from __future__ import annotations

from lineguard.config import RecipeSettings
from lineguard.contracts import copy_part
from lineguard.services.decision.rules import Finding, Judgement
from lineguard.v1.common_pb2 import Part, Point, StageTiming
from lineguard.v1.decision_pb2 import Decision
from lineguard.v1.decision_pb2 import Finding as FindingMessage
from lineguard.v1.inference_pb2 import InferenceResult
from lineguard.v1.ocr_pb2 import OcrResult


def build_decision(
    part: Part,
    recipe: RecipeSettings | None,
    judgement: Judgement,
    decided_ns: int,
    inference: InferenceResult | None = None,
    ocr: OcrResult | None = None,
) -> Decision:
    decision = Decision(
        part=copy_part(part),
        verdict=judgement.verdict,
        reason_codes=judgement.reasons,
        recipe_version=recipe.version if recipe else "",
        serial=judgement.serial,
        decided_unix_ns=decided_ns,
        explanation=[finding_message(f) for f in judgement.explanation],
    )
    if inference is not None:
        decision.inference.CopyFrom(inference)
        decision.model_id = inference.model_id
        decision.model_version = inference.model_version
    if ocr is not None:
        decision.ocr.CopyFrom(ocr)
    decision.timings.extend(_timings(part.triggered_unix_ns, decided_ns, inference, ocr))
    return decision


def finding_message(finding: Finding) -> FindingMessage:
    message = FindingMessage(
        verdict=finding.verdict,
        reason=finding.reason,
        rule=finding.rule,
        text=finding.text,
        class_name=finding.class_name,
        zone=finding.zone,
        detections=finding.detections,
        score=finding.score,
        threshold=finding.threshold,
        area=finding.area,
        area_unit=finding.area_unit,
        count=finding.count,
    )
    if finding.at is not None:
        message.at.CopyFrom(Point(x=finding.at[0], y=finding.at[1]))
    return message


def _timings(
    triggered_ns: int, decided_ns: int, inference: InferenceResult | None, ocr: OcrResult | None
) -> list[StageTiming]:
    """Milliseconds from the trigger to each result, and to the verdict."""
    out = []
    last = triggered_ns
    for stage, result in (("inference", inference), ("ocr", ocr)):
        if result is not None and result.completed_unix_ns:
            out.append(StageTiming(stage=f"trigger_to_{stage}", ms=(result.completed_unix_ns - triggered_ns) / 1e6))
            last = max(last, result.completed_unix_ns)
    out.append(StageTiming(stage="decision", ms=(decided_ns - last) / 1e6))
    out.append(StageTiming(stage="total", ms=(decided_ns - triggered_ns) / 1e6))
    return out
