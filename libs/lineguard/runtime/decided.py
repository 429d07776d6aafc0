"""The parts the line has already decided, as the frame services (inference, OCR) hear of them.

A part is decided once the decision service has published its verdict; what the other frame service would still
work out for it changes nothing (a FAIL / OVERLOAD or a TIMEOUT stands). Under overload that is most of the waste:
a part the model refused was still read by OCR, at 20-60 ms of CPU, taken from the model on a 2-core box. Each
frame service therefore follows the line's decisions on a plain subscription (`lg.decision.<line>.*`, in its
permissions) and skips, unread, a frame whose part is decided by the time its turn comes. The subscription is only
ever a shortcut: a decision missed (the bus reconnecting) means the frame is worked on as before.

It also tells whether the line is refusing parts (an OVERLOAD decided within the last REFUSING_S): then the model
is behind, and OCR, off the part's critical path, waits a moment before a frame so that its refusal can come back
first (services/ocr/service.py)."""

from __future__ import annotations

import math
import time
from collections import deque
from typing import Any

from prometheus_client import Counter

from lineguard.bus.side import side_handler, unsubscribe
from lineguard.contracts import line_subjects
from lineguard.reasons import OVERLOAD
from lineguard.v1.decision_pb2 import Decision

SKIPPED = Counter(
    "lineguard_frames_skipped_decided_total",
    "Frames not worked on because their part was already decided (e.g. FAIL / OVERLOAD from the other frame service)",
    ["service"],
)


class AlreadyDecided(Exception):
    """The part was decided while this service was working on it: the rest of the work is dropped, nothing sent."""


# How long after an OVERLOAD decision the line counts as refusing parts.
REFUSING_S = 2.0

# How many decided parts are remembered: a frame waits in a service's queue for at most its part's deadline, and
# a line decides a few hundred parts in that time.
REMEMBERED = 4096


class DecidedParts:
    """`await parts.follow(nc, line)`, then `inspection_id in parts`; `await parts.stop()` at the end."""

    def __init__(self, remembered: int = REMEMBERED):
        self._order: deque[str] = deque()
        self._ids: set[str] = set()
        self._remembered = remembered
        self._sub: Any = None
        self._overload_at = -math.inf

    def __contains__(self, inspection_id: object) -> bool:
        return inspection_id in self._ids

    def check(self, inspection_id: str) -> None:
        """AlreadyDecided when the part is decided: for a long piece of work to look between its steps (a set
        lookup, safe from the worker thread the work runs in)."""
        if inspection_id in self:
            raise AlreadyDecided(f"part {inspection_id} was decided while it was being worked on")

    def refusing(self) -> bool:
        """An OVERLOAD was decided within the last REFUSING_S."""
        return time.monotonic() - self._overload_at <= REFUSING_S

    def add(self, inspection_id: str) -> None:
        if not inspection_id or inspection_id in self._ids:
            return
        self._ids.add(inspection_id)
        self._order.append(inspection_id)
        if len(self._order) > self._remembered:
            self._ids.discard(self._order.popleft())

    async def follow(self, nc: Any, line: str) -> None:
        def on_decision(decision: Decision) -> None:
            self.add(decision.part.inspection_id)
            if OVERLOAD in decision.reason_codes:
                self._overload_at = time.monotonic()

        self._sub = await nc.subscribe(line_subjects("decision", line), cb=side_handler(Decision, on_decision))

    async def stop(self) -> None:
        if self._sub is not None:
            sub, self._sub = self._sub, None
            await unsubscribe([sub])
