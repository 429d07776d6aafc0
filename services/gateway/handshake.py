"""One station's trigger / result handshake: exactly one result per trigger, FAIL when late.

Plain bookkeeping, no I/O: the gateway asks it what to do and does it. Times
are `time.monotonic()` seconds, passed in so tests can drive the clock.

- `trigger()` opens an inspection; the same PLC sequence while it is still in
  flight returns the same inspection (the PLC retried its call).
- `expire()` closes every inspection past its deadline with FAIL / TIMEOUT.
- `resolve()` closes an inspection with its decision, unless it was closed
  already (then the decision is late or a duplicate and not delivered again).
  A decision for an inspection this gateway never opened (it restarted since)
  is delivered once.
- `result_of()` is the latest result given for a PLC sequence, kept for the last
  REMEMBERED_RESULTS inspections, so a PLC that missed one can read it back.
"""

from __future__ import annotations

import enum
import time
from collections import OrderedDict
from dataclasses import dataclass

from lineguard.contracts import new_inspection_id, now_ns
from lineguard.contracts.opcua import RESULTS_KEPT
from lineguard.v1.common_pb2 import Part
from lineguard.v1.decision_pb2 import Decision, Verdict

TIMEOUT_REASON = "TIMEOUT"
# Closed inspections remembered to recognise late and repeated decisions; at 10
# parts/s this covers the last ~7 minutes, far beyond any deadline.
REMEMBERED_RESULTS = RESULTS_KEPT


@dataclass(frozen=True)
class Result:
    """What the PLC is given for one inspection."""

    part: Part
    verdict: Verdict
    reasons: tuple[str, ...]
    gateway_timeout: bool
    closed_unix_ns: int  # when the handshake closed the inspection: the PLC gets it right after

    @property
    def inspection_id(self) -> str:
        return self.part.inspection_id

    @property
    def sequence(self) -> int:
        return self.part.sequence


@dataclass(frozen=True)
class Triggered:
    part: Part
    part_id: str
    repeated: bool  # the PLC called again with a sequence still in flight
    deadline: float  # monotonic: when the inspection gets FAIL / TIMEOUT without a decision


@dataclass
class InFlight:
    part: Part
    part_id: str
    deadline: float


class Outcome(enum.Enum):
    ON_TIME = "on_time"  # the decision for an open inspection: deliver it
    # Never opened here (the gateway restarted, or a consumer replayed old decisions): not delivered. The PLC
    # did not ask this gateway for it, and an old verdict under a reused sequence number would answer the
    # wrong part; the PLC's own watchdog covers the parts in flight across a restart.
    UNTRACKED = "untracked"
    LATE = "late"  # the inspection already got FAIL / TIMEOUT: do not deliver
    DUPLICATE = "duplicate"  # this decision was delivered already: do not deliver again


@dataclass(frozen=True)
class Resolution:
    outcome: Outcome
    result: Result  # the result delivered for this inspection, now or before

    @property
    def deliver(self) -> bool:
        return self.outcome is Outcome.ON_TIME


class Handshake:
    """The in-flight table of one station."""

    def __init__(
        self, *, line: str, station: str, recipe_id: str, timeout_s: float, remember: int = REMEMBERED_RESULTS
    ):
        if timeout_s <= 0:
            raise ValueError(f"the result timeout must be positive, got {timeout_s}")
        self.line = line
        self.station = station
        self.recipe_id = recipe_id
        # The version of recipe_id the station runs, its sha256 and deadline (lineguard.recipes): stamped on every
        # part.
        self.recipe_version = ""
        self.recipe_sha256 = ""
        self.deadline_ms = 0
        self.timeout_s = timeout_s
        self._remember = remember
        self._in_flight: dict[str, InFlight] = {}  # by inspection id, in trigger order
        self._by_sequence: dict[int, str] = {}
        self._closed: OrderedDict[str, Result] = OrderedDict()
        self._answered: dict[int, str] = {}  # sequence -> the latest inspection opened here and closed under it

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    @property
    def busy(self) -> bool:
        return bool(self._in_flight)

    def in_flight_id(self, inspection_id: str) -> bool:
        """The inspection was opened here and has no result yet."""
        return inspection_id in self._in_flight

    def is_open(self, sequence: int) -> bool:
        """The PLC's trigger `sequence` is in flight (a call with it again is a retry)."""
        return sequence in self._by_sequence

    def trigger(self, sequence: int, part_id: str = "", *, lot: str = "", now: float | None = None) -> Triggered:
        """Open an inspection for the PLC's `sequence`; its Part carries the PLC's part id and lot into every message
        and the record."""
        if not 0 <= sequence <= 0xFFFFFFFF:
            raise ValueError(f"a trigger sequence is a UInt32, got {sequence}")
        open_id = self._by_sequence.get(sequence)
        if open_id is not None:
            entry = self._in_flight[open_id]
            return Triggered(entry.part, entry.part_id, repeated=True, deadline=entry.deadline)
        now = time.monotonic() if now is None else now
        part = Part(
            inspection_id=new_inspection_id(),
            line=self.line,
            station=self.station,
            recipe_id=self.recipe_id,
            recipe_version=self.recipe_version,
            recipe_sha256=self.recipe_sha256,
            deadline_ms=self.deadline_ms,
            sequence=sequence,
            triggered_unix_ns=now_ns(),
            part_id=part_id,
            lot=lot,
        )
        # A sequence used again (the PLC's counter restarted or wrapped) no longer reads the older part's result.
        self._answered.pop(sequence, None)
        entry = InFlight(part, part_id, now + self.timeout_s)
        self._in_flight[part.inspection_id] = entry
        self._by_sequence[sequence] = part.inspection_id
        return Triggered(part, part_id, repeated=False, deadline=entry.deadline)

    def next_deadline(self) -> float | None:
        # Every station inspection has the same timeout, so trigger order is deadline order.
        first = next(iter(self._in_flight.values()), None)
        return None if first is None else first.deadline

    def expire(self, *, now: float | None = None) -> list[Result]:
        """Close every inspection past its deadline: FAIL, TIMEOUT (fail safe, never a pass)."""
        now = time.monotonic() if now is None else now
        expired = [e for e in self._in_flight.values() if e.deadline <= now]
        return [
            self._close(e.part, Result(e.part, Verdict.VERDICT_FAIL, (TIMEOUT_REASON,), True, now_ns()))
            for e in expired
        ]

    def resolve(self, decision: Decision) -> Resolution:
        """What to do with a decision. Call `expire()` first: a deadline passed is a timeout."""
        inspection_id = decision.part.inspection_id
        reasons = tuple(decision.reason_codes)
        entry = self._in_flight.get(inspection_id)
        if entry is not None:
            result = self._close(entry.part, Result(entry.part, decision.verdict, reasons, False, now_ns()))
            return Resolution(Outcome.ON_TIME, result)
        delivered = self._closed.get(inspection_id)
        if delivered is not None:
            return Resolution(Outcome.LATE if delivered.gateway_timeout else Outcome.DUPLICATE, delivered)
        part = Part()
        part.CopyFrom(decision.part)
        return Resolution(
            Outcome.UNTRACKED, self._close(part, Result(part, decision.verdict, reasons, False, now_ns()))
        )

    def result_of(self, sequence: int) -> Result | None:
        """The result given for the PLC's `sequence`; None while it is in flight, or when it is not remembered.

        Only inspections opened here: a decision this gateway never triggered was never given to the PLC."""
        inspection_id = self._answered.get(sequence)
        return None if inspection_id is None else self._closed.get(inspection_id)

    def _close(self, part: Part, result: Result) -> Result:
        opened = self._in_flight.pop(part.inspection_id, None) is not None
        if opened and self._by_sequence.get(part.sequence) == part.inspection_id:
            del self._by_sequence[part.sequence]
        if opened and part.sequence not in self._by_sequence:
            self._answered[part.sequence] = part.inspection_id
        self._closed[part.inspection_id] = result
        while len(self._closed) > self._remember:
            old_id, old = self._closed.popitem(last=False)
            if self._answered.get(old.sequence) == old_id:
                del self._answered[old.sequence]
        return result
