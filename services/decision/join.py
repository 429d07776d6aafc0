"""Joining one inspection's results under its deadline.

Everything about one part arrives on separate subjects (trigger, inference,
ocr) in any order; the joiner holds them until both results are in or the
recipe's deadline passes, whichever comes first, and remembers what it decided
so a redelivered or late result is not judged twice. The deadlines are kept in
a `Deadlines` heap that the decision service's loop sleeps on.

Only a part whose trigger was seen is judged: results may come before their trigger,
so they wait for it, but no longer than the recipe's deadline counted from when they
came (a result's own trigger time is only what its sender claims)."""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from lineguard.runtime.deadlines import Deadlines
from lineguard.v1.common_pb2 import Part
from lineguard.v1.inference_pb2 import InferenceResult
from lineguard.v1.ocr_pb2 import OcrResult


@dataclass
class Pending:
    part: Part
    deadline_ns: int
    inference: InferenceResult | None = None
    ocr: OcrResult | None = None
    # The part as its trigger gave it; until the trigger comes, `part` is what the first result claimed.
    triggered: bool = False
    # The bus deliveries that brought these results; acked once the decision is out.
    held: list[Any] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """Both results are in, or one of them refused the frame (OVERLOAD): the part fails whatever the other finds,
        at once."""
        if (self.inference is not None and self.inference.refused) or (self.ocr is not None and self.ocr.refused):
            return True
        return self.inference is not None and self.ocr is not None


class Joiner:
    def __init__(self, remember: int = 50_000):
        self.pending: dict[str, Pending] = {}
        # Decided, its verdict being published: inputs redelivered meanwhile are held with it until the publish settles.
        self.publishing: dict[str, Pending] = {}
        # By inspection id, in wall-clock ns like the trigger time they count from (stamped by the gateway).
        self.deadlines: Deadlines[str] = Deadlines(clock=time.time_ns, per_second=1_000_000_000)
        self._decided: OrderedDict[str, None] = OrderedDict()
        self._remember = remember

    def already_decided(self, inspection_id: str) -> bool:
        return inspection_id in self._decided

    def open(self, part: Part, deadline_ms: int, *, trigger: bool) -> Pending:
        """The entry for this part, created at the first message that names it; `trigger`: that message is its
        trigger.

        The deadline counts from the trigger time every message carries, so it is the same whichever message
        arrives first; an entry opened by a result waits for its trigger no longer than `deadline_ms` from now."""
        deadline_ns = part.triggered_unix_ns + deadline_ms * 1_000_000
        entry = self.pending.get(part.inspection_id)
        if entry is None:
            if not trigger:
                deadline_ns = min(deadline_ns, time.time_ns() + deadline_ms * 1_000_000)
            entry = Pending(part=part, deadline_ns=deadline_ns)
            self.pending[part.inspection_id] = entry
            self.deadlines.add(part.inspection_id, entry.deadline_ns)
        if trigger and not entry.triggered:
            entry.part, entry.triggered, entry.deadline_ns = part, True, deadline_ns
            self.deadlines.add(part.inspection_id, deadline_ns)
        return entry

    def drop(self, inspection_id: str) -> Pending | None:
        """Forget a pending part without deciding it (it was never triggered): a trigger that comes later opens it
        anew."""
        self.deadlines.cancel(inspection_id)
        return self.pending.pop(inspection_id, None)

    def entries(self, inspection_ids: list[str]) -> list[Pending]:
        """The entries of those parts still pending (the deadline loop hands over ids)."""
        return [entry for i in inspection_ids if (entry := self.pending.get(i)) is not None]

    def expired(self, now_ns: int) -> list[Pending]:
        """Take the pending parts whose deadline is `now_ns` or earlier, each once."""
        return self.entries(self.deadlines.due(now_ns))

    def publish(self, inspection_id: str) -> Pending | None:
        """The part is decided and its verdict about to be published: no longer pending, not yet closed."""
        self.deadlines.cancel(inspection_id)
        entry = self.pending.pop(inspection_id, None)
        if entry is not None:
            self.publishing[inspection_id] = entry
        return entry

    def close(self, inspection_id: str) -> Pending | None:
        """Forget the entry (pending or publishing) and remember the part as decided."""
        self.deadlines.cancel(inspection_id)
        self._decided[inspection_id] = None
        while len(self._decided) > self._remember:
            self._decided.popitem(last=False)
        publishing = self.publishing.pop(inspection_id, None)
        return self.pending.pop(inspection_id, None) or publishing

    def forget(self, inspection_id: str) -> None:
        """The verdict could not be published: drop the part, so that its inputs, redelivered, judge it again."""
        self.publishing.pop(inspection_id, None)
        self._decided.pop(inspection_id, None)


def mismatch(trigger: Part, result: Part) -> str | None:
    """What a result says of its part that its trigger does not (None: they agree)."""
    for name in ("line", "station", "recipe_id", "sequence", "triggered_unix_ns"):
        if getattr(trigger, name) != getattr(result, name):
            return f"part.{name} is {getattr(result, name)!r}, its trigger's {getattr(trigger, name)!r}"
    return None
