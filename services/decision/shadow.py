"""The verdict a shadow candidate would have given, judged by the live part's recipe and OCR.

The candidate's results (`lg.shadow`) come after the live ones: the inference service runs the candidate
once the live batch is handed over. Each is judged with the same rules (`rules.judge`) and the live part's
OCR result, once the live part is decided, and goes out on `lg.shadow_verdict`: only the results service reads
that, never the gateway, so a candidate's verdict never reaches the PLC. The live verdict never waits for it.

A candidate's result whose live part is still being judged is held until the verdict is out; one whose live
part this service does not know (not seen yet, or decided before a restart) is retried with a delay and, after
max_deliver, dead-lettered with that reason: nothing is judged without the live part's OCR and recipe."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

import structlog
from prometheus_client import Counter

from lineguard.bus import BadMessage, Delivery, Retry
from lineguard.config import RecipeSettings
from lineguard.contracts import now_ns
from lineguard.runtime.service import ServiceContext
from lineguard.services.decision.join import mismatch
from lineguard.services.decision.record import build_decision
from lineguard.services.decision.rules import judge
from lineguard.v1.common_pb2 import Part
from lineguard.v1.decision_pb2 import Decision, Verdict
from lineguard.v1.inference_pb2 import InferenceResult
from lineguard.v1.ocr_pb2 import OcrResult

log = structlog.get_logger("lineguard.decision")

SHADOW_VERDICTS = Counter(
    "lineguard_shadow_verdicts_total",
    "Verdicts a shadow candidate would have given, by whether they agree with the live verdict",
    ["service", "agreement"],
)


@dataclass(frozen=True)
class Decided:
    """What a live part was judged with: the candidate's results are judged with the same."""

    part: Part
    recipe: RecipeSettings
    ocr: OcrResult | None
    verdict: Verdict


def shadow_decision(decided: Decided, candidate: InferenceResult) -> Decision:
    """The candidate's would-be Decision on a decided live part (its model named, its detections carried)."""
    judgement = judge(decided.recipe, candidate, decided.ocr)
    return build_decision(decided.part, decided.recipe, judgement, now_ns(), candidate, decided.ocr)


@dataclass
class ShadowJudge:
    ctx: ServiceContext
    # Live parts kept for their candidate's result, with their OCR results (~13 KB each, measured by the soak). The
    # candidate runs within a backlog of 8 frames of its live part, so 1,000 parts (100 s at 10 parts/s) is ample;
    # 10,000 held 130 MB whether a shadow run was on or not.
    remember: int = 1_000
    recent: OrderedDict[str, Decided] = field(default_factory=OrderedDict)
    waiting: dict[str, list[Delivery[InferenceResult]]] = field(default_factory=dict)

    async def on_shadow(self, delivery: Delivery[InferenceResult], live_pending: bool) -> None:
        """A candidate's result: judged now if its live part is decided, held if it is being judged."""
        inspection_id = delivery.message.part.inspection_id
        decided = self.recent.get(inspection_id)
        if decided is not None:
            await self._publish(decided, delivery.message)
            return  # acked by the worker
        if live_pending:
            self.waiting.setdefault(inspection_id, []).append(delivery)
            delivery.defer()
            return
        raise Retry(
            f"shadow result of inspection {inspection_id}: its live part is unknown to this decision service (not "
            "seen yet, or decided before a restart), so there is no OCR result and recipe to judge it with"
        )

    async def decided(self, part: Part, recipe: RecipeSettings, ocr: OcrResult | None, verdict: Verdict) -> None:
        """The live part is decided (its verdict published): remember it, judge the candidate's results held for it."""
        decided = Decided(part, recipe, ocr, verdict)
        self.recent[part.inspection_id] = decided
        while len(self.recent) > self.remember:
            self.recent.popitem(last=False)
        for delivery in self.waiting.pop(part.inspection_id, []):
            try:
                await self._publish(decided, delivery.message)
            except Exception as exc:  # noqa: BLE001 - deferred, so settled here by the bus's one failure policy
                await delivery.fail(exc)
            else:
                await delivery.ack()

    async def dropped(self, inspection_id: str) -> None:
        """The live part was never triggered, so never judged: its candidate's results are dead-lettered too."""
        for delivery in self.waiting.pop(inspection_id, []):
            await delivery.fail(
                BadMessage(f"shadow result of inspection {inspection_id}: its live part was never triggered")
            )

    async def _publish(self, decided: Decided, candidate: InferenceResult) -> None:
        wrong = mismatch(decided.part, candidate.part)
        if wrong is not None:
            raise BadMessage(f"shadow result disagrees with its live part: {wrong}")
        decision = shadow_decision(decided, candidate)
        await self.ctx.publish(
            "shadow_verdict", decision, stage=f"shadow_verdict:{candidate.model_id}:{candidate.model_version}"
        )
        agree = "agree" if decision.verdict == decided.verdict else "disagree"
        SHADOW_VERDICTS.labels(self.ctx.name, agree).inc()
        log.info(
            "shadow verdict",
            inspection_id=decided.part.inspection_id,
            candidate=f"{candidate.model_id} {candidate.model_version}",
            verdict=Verdict.Name(decision.verdict),
            live=Verdict.Name(decided.verdict),
        )
