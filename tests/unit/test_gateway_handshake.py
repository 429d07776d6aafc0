"""The gateway's handshake: exactly one result per trigger, FAIL / TIMEOUT when late."""

from __future__ import annotations

import uuid

import pytest

from lineguard.services.gateway.handshake import TIMEOUT_REASON, Handshake, Outcome
from lineguard.v1.common_pb2 import Part
from lineguard.v1.decision_pb2 import Decision, Verdict

TIMEOUT_S = 2.5


def handshake(**kw) -> Handshake:
    return Handshake(line="l1", station="s1", recipe_id="pcb-a", timeout_s=TIMEOUT_S, **kw)


def decision(part: Part, verdict: int = Verdict.VERDICT_PASS, *reasons: str) -> Decision:
    d = Decision(verdict=verdict, reason_codes=list(reasons))
    d.part.CopyFrom(part)
    return d


def test_trigger_opens_an_inspection_with_the_stations_part() -> None:
    hs = handshake()
    t = hs.trigger(7, "tray-3", now=100.0)
    assert not t.repeated and t.part_id == "tray-3"
    p = t.part
    assert (p.line, p.station, p.recipe_id, p.sequence) == ("l1", "s1", "pcb-a", 7)
    assert uuid.UUID(p.inspection_id).version == 7
    assert p.triggered_unix_ns > 0
    assert hs.busy and hs.in_flight == 1
    assert hs.next_deadline() == pytest.approx(100.0 + TIMEOUT_S)


def test_the_part_carries_the_plcs_part_id_and_lot_to_every_message_and_the_record() -> None:
    part = handshake().trigger(8, "tray-4", lot="LOT-7", now=0.0).part
    assert (part.part_id, part.lot) == ("tray-4", "LOT-7")
    assert (handshake().trigger(9, now=0.0).part.lot, handshake().trigger(9, now=0.0).part.part_id) == ("", "")


def test_repeated_sequence_in_flight_returns_the_same_inspection() -> None:
    hs = handshake()
    first = hs.trigger(5, now=0.0)
    again = hs.trigger(5, now=0.5)
    assert again.repeated and again.part.inspection_id == first.part.inspection_id
    assert hs.in_flight == 1
    # The deadline stays the first call's: a PLC retrying does not buy more time.
    assert hs.next_deadline() == pytest.approx(TIMEOUT_S)


def test_same_sequence_after_its_result_is_a_new_inspection() -> None:
    hs = handshake()
    first = hs.trigger(5, now=0.0)
    hs.resolve(decision(first.part))
    second = hs.trigger(5, now=1.0)  # the PLC's counter came round again
    assert not second.repeated and second.part.inspection_id != first.part.inspection_id


def test_timeout_gives_fail_timeout_once() -> None:
    hs = handshake()
    t = hs.trigger(1, now=10.0)
    assert hs.expire(now=10.0 + TIMEOUT_S - 0.001) == []
    expired = hs.expire(now=10.0 + TIMEOUT_S)
    assert len(expired) == 1
    result = expired[0]
    assert result.inspection_id == t.part.inspection_id and result.sequence == 1
    assert result.verdict == Verdict.VERDICT_FAIL and result.reasons == (TIMEOUT_REASON,)
    assert result.gateway_timeout
    assert hs.expire(now=10.0 + 10 * TIMEOUT_S) == []
    assert not hs.busy and hs.next_deadline() is None


def test_late_decision_is_not_delivered() -> None:
    hs = handshake()
    t = hs.trigger(1, now=0.0)
    [timeout] = hs.expire(now=TIMEOUT_S + 0.1)
    late = hs.resolve(decision(t.part, Verdict.VERDICT_PASS))
    assert late.outcome is Outcome.LATE and not late.deliver
    assert late.result == timeout  # what the PLC got stays the FAIL, never the late PASS
    assert late.result.verdict == Verdict.VERDICT_FAIL


def test_decision_is_delivered_once_and_then_no_timeout() -> None:
    hs = handshake()
    t = hs.trigger(1, now=0.0)
    first = hs.resolve(decision(t.part, Verdict.VERDICT_REWORK, "DEFECT_SPUR"))
    assert first.outcome is Outcome.ON_TIME and first.deliver
    assert first.result.verdict == Verdict.VERDICT_REWORK and first.result.reasons == ("DEFECT_SPUR",)
    assert not first.result.gateway_timeout
    again = hs.resolve(decision(t.part, Verdict.VERDICT_REWORK, "DEFECT_SPUR"))
    assert again.outcome is Outcome.DUPLICATE and not again.deliver
    assert again.result == first.result
    assert hs.expire(now=100.0) == []


def test_result_carries_the_gateways_part_not_the_decisions() -> None:
    hs = handshake()
    t = hs.trigger(9, now=0.0)
    d = decision(t.part)
    d.part.sequence = 12345  # a decision service that mangled the part cannot misroute the PLC result
    assert hs.resolve(d).result.sequence == 9


def test_decision_never_triggered_here_is_not_delivered() -> None:
    hs = handshake()
    part = Part(inspection_id="0190-restart", line="l1", station="s1", recipe_id="pcb-a", sequence=41)
    first = hs.resolve(decision(part, Verdict.VERDICT_PASS))
    assert first.outcome is Outcome.UNTRACKED and not first.deliver
    assert first.result.sequence == 41
    assert hs.resolve(decision(part, Verdict.VERDICT_PASS)).outcome is Outcome.DUPLICATE


def test_expire_closes_only_those_past_their_deadline_in_trigger_order() -> None:
    hs = handshake()
    a = hs.trigger(1, now=0.0)
    b = hs.trigger(2, now=1.0)
    hs.trigger(3, now=2.0)
    expired = hs.expire(now=1.0 + TIMEOUT_S)
    assert [r.inspection_id for r in expired] == [a.part.inspection_id, b.part.inspection_id]
    assert hs.in_flight == 1 and hs.next_deadline() == pytest.approx(2.0 + TIMEOUT_S)


def test_closed_results_are_remembered_up_to_the_limit() -> None:
    hs = handshake(remember=2)
    parts = [hs.trigger(i, now=0.0).part for i in range(3)]
    for p in parts:
        hs.resolve(decision(p))
    # The oldest is forgotten: its repeat would be delivered again, the newer ones are not.
    assert hs.resolve(decision(parts[0])).outcome is Outcome.UNTRACKED
    assert hs.resolve(decision(parts[2])).outcome is Outcome.DUPLICATE


@pytest.mark.parametrize("sequence", [-1, 2**32])
def test_sequence_must_be_a_uint32(sequence: int) -> None:
    with pytest.raises(ValueError, match="UInt32"):
        handshake().trigger(sequence)


def test_timeout_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        Handshake(line="l1", station="s1", recipe_id="r", timeout_s=0)
