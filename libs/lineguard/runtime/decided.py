"""The parts the line has already decided, as the frame services (inference, OCR) hear of them.

A part is decided once the decision service has published its verdict; what the other frame service would still
work out for it changes nothing (a FAIL / OVERLOAD or a TIMEOUT stands). Under overload that is most of the waste:
a part the model refused was still read by OCR, at 20-60 ms of CPU, taken from the model on a 2-core box. Each
frame service therefore follows the line's decisions on a plain subscription (`lg.decision.<line>.*`, in its
permissions) and skips, unread, a frame whose part is decided by the time its turn comes.

A part the other frame service refused (its result's `refused`, e.g. OVERLOAD) is decided too: the decision
service fails it at once with that code, whatever this one finds. Each frame service also follows the other's
results for their refusals, one hop before the decision they bring: both get the frame at the same moment, and the
refusal (made as the frame arrives) comes while the other is still decoding it, where the decision came after
OCR had read most of the codes (benchmarks/line.py at 2x: OCR's CPU for a part the model refused ~13 -> ~3 ms).

The subscriptions are only ever a shortcut: a message missed (the bus reconnecting) means the frame is worked on
as before."""

from __future__ import annotations

from collections import deque
from typing import Any

from prometheus_client import Counter

from lineguard.bus.side import side_handler, unsubscribe
from lineguard.contracts import line_subjects
from lineguard.v1.decision_pb2 import Decision
from lineguard.v1.inference_pb2 import InferenceResult
from lineguard.v1.ocr_pb2 import OcrResult

SKIPPED = Counter(
    "lineguard_frames_skipped_decided_total",
    "Frames not worked on because their part was already decided (e.g. FAIL / OVERLOAD from the other frame service)",
    ["service"],
)


class AlreadyDecided(Exception):
    """The part was decided while this service was working on it: the rest of the work is dropped, nothing sent."""


# The frame services, by the kind of their results, which carry `refused` when they refused the part's frame.
REFUSING_RESULTS: dict[str, type[InferenceResult] | type[OcrResult]] = {"inference": InferenceResult, "ocr": OcrResult}
# Each frame service follows the other's refusals.
OTHER_FRAME_SERVICE = {"inference": "ocr", "ocr": "inference"}

# How many decided parts are remembered: a frame waits in a service's queue for at most its part's deadline, and
# a line decides a few hundred parts in that time.
REMEMBERED = 4096


class DecidedParts:
    """`await parts.follow(nc, line)`, then `inspection_id in parts`; `await parts.stop()` at the end."""

    def __init__(self, remembered: int = REMEMBERED):
        self._order: deque[str] = deque()
        self._ids: set[str] = set()
        self._remembered = remembered
        self._subs: list[Any] = []

    def __contains__(self, inspection_id: object) -> bool:
        return inspection_id in self._ids

    def check(self, inspection_id: str) -> None:
        """AlreadyDecided when the part is decided: for a long piece of work to look between its steps (a set
        lookup, safe from the worker thread the work runs in)."""
        if inspection_id in self:
            raise AlreadyDecided(f"part {inspection_id} was decided while it was being worked on")

    def add(self, inspection_id: str) -> None:
        if not inspection_id or inspection_id in self._ids:
            return
        self._ids.add(inspection_id)
        self._order.append(inspection_id)
        if len(self._order) > self._remembered:
            self._ids.discard(self._order.popleft())

    async def follow(self, nc: Any, line: str, *, refusals_of: str | None = None) -> None:
        """The line's decisions, and with `refusals_of` ("inference" or "ocr") that service's refused results."""

        def on_decision(decision: Decision) -> None:
            self.add(decision.part.inspection_id)

        def on_result(result: InferenceResult | OcrResult) -> None:
            if result.refused:
                self.add(result.part.inspection_id)

        self._subs = [await nc.subscribe(line_subjects("decision", line), cb=side_handler(Decision, on_decision))]
        if refusals_of is not None:
            kind = REFUSING_RESULTS[refusals_of]
            self._subs.append(await nc.subscribe(line_subjects(refusals_of, line), cb=side_handler(kind, on_result)))

    async def stop(self) -> None:
        subs, self._subs = self._subs, []
        await unsubscribe(subs)
