"""The chaos harness's PLC (lineguard.testing.chaos.ReconnectingPlc) counts what a PLC gets, across the sessions it
gives up and opens again.

Why (issue 13): an exploratory chaos run showed 16 parts with two results at the PLC, all in flight when the gateway
was SIGTERMed. The gateway hands each result over once (its handshake closes an inspection once), but the harness's
PLC gives a session up when its client reports the connection lost, and asyncua's client reports that when a
keep-alive probe goes unanswered for 1 s, which on a loaded machine happens while the connection is still open; the
session given up is closed in the background while the new one subscribes, so one result event could reach both,
and the harness counted both (the same verdict twice: a miscount, not a second verdict at the PLC). The other side
of the same race: a result handed to the session being given up reaches neither, and the part looked unanswered.
Now a session given up is no longer listened to, and the parts triggered on it are read back (GetResult) on the new
one; two different results for one trigger are a `conflict`, told apart from the same one twice."""

from __future__ import annotations

import asyncio
import time

from lineguard.sim.plc import PlcResult, SimulatedPlc
from lineguard.testing.chaos import ReconnectingPlc, Run, plc_outcome
from lineguard.testing.gateway import publish_decision
from lineguard.testing.waiting import wait_for
from lineguard.v1.common_pb2 import Part
from lineguard.v1.decision_pb2 import Verdict

INSPECTION = "01a2317d-c7a8-7606-b88f-e5afea3ee7d1"


def result(verdict: str = "FAIL", *reasons: str, read_back: bool = False) -> PlcResult:
    return PlcResult(7, INSPECTION, verdict, list(reasons or ("SHORT",)), 0.1, read_back=read_back)


def test_a_result_on_a_session_after_the_plc_gave_it_up_is_not_counted() -> None:
    run = Run(parts=1, rate_hz=1.0, deadline_ms=3000)
    plc = ReconnectingPlc(run, "opc.tcp://127.0.0.1:1/")
    old, new = SimulatedPlc(plc.endpoint), SimulatedPlc(plc.endpoint)
    plc.sessions = [old, new]
    now = time.perf_counter()
    plc.given_up_at[0] = now
    # One event of the gateway's reaching both sessions just after the old one was given up.
    old._received.append((now + 0.05, result()))
    new._received.append((now + 0.05, result()))
    plc.collect()
    assert [r for _, r in run.results[INSPECTION]] == [result()]
    assert run.result_sessions[INSPECTION] == [1]
    # Before it was given up, the old session's results are the PLC's.
    old._received.insert(0, (now - 0.5, result("PASS", "")))
    plc.collect()
    assert run.result_sessions[INSPECTION] == [0, 1]


def test_two_different_results_for_one_trigger_are_a_conflict_and_the_same_one_twice_a_duplicate() -> None:
    assert plc_outcome([result()]) is None
    assert plc_outcome([result(), result(read_back=True)]) is None  # an event and its read-back: one result
    assert plc_outcome([result(), result()]) == "duplicate"
    assert plc_outcome([result(), result("FAIL", "TIMEOUT")]) == "conflict"
    assert plc_outcome([result("PASS", ""), result("FAIL", "TIMEOUT", read_back=True)]) == "conflict"


async def test_a_result_handed_over_while_the_plc_switched_sessions_is_read_back_once(
    tmp_path, started_gateway
) -> None:
    async with started_gateway(tmp_path, quick_deadline_ms=1000) as gateway:
        run = Run(parts=1, rate_hz=1.0, deadline_ms=10_000)
        plc = ReconnectingPlc(run, gateway.endpoint)
        await plc.connect()
        try:
            sent = await plc.trigger(7, timeout_s=5.0)
            run.sent.append(sent)
            assert sent.inspection_id and sent.session == 0
            # The client reports its connection lost (what asyncua does on an unanswered keep-alive probe): the PLC
            # gives the session up at its next look and connects again.
            assert plc.plc is not None
            plc.plc.connection_losses.append("TimeoutError() (keep-alive probe)")
            assert not plc.connected()
            await asyncio.gather(*plc._closing)  # the old session closed: no one listens while the decision comes
            part = Part(inspection_id=sent.inspection_id, line="l1", station="s1", sequence=7)
            await publish_decision(gateway.bus, part, Verdict.VERDICT_FAIL, "SHORT")
            assert plc._connecting is not None
            await plc._connecting  # session 1 connected and subscribed, after the result was handed over

            async def read() -> bool:
                await plc.read_back(run.sent)
                plc.collect()
                return sent.inspection_id in run.results

            await wait_for(read, timeout=10)
            got = [r for _, r in run.results[sent.inspection_id]]
            assert [(r.verdict, r.reasons, r.read_back) for r in got] == [("FAIL", ["SHORT"], True)]
            assert run.result_sessions[sent.inspection_id] == [1]
            # Read back once: a later pass leaves a part that has its result alone.
            await plc.read_back(run.sent)
            plc.collect()
            assert len(run.results[sent.inspection_id]) == 1
        finally:
            await plc.close()
