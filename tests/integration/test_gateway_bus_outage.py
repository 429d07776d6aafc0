"""The gateway while its nats-server is stopped and restarted, on real OPC UA: the PLC never waits on the bus.

Its own gateway and nats-server (the outage is the test), one endpoint with two stations: s2 gives FAIL / TIMEOUT
quickly. The PLC is the simulated one over a real asyncua connection. The stations serve the demo's profiles (simple
and machine-vision): every result is also written into the OPC 40100 Results folder, on the same event loop."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time

import pytest

from lineguard.sim.plc import SimulatedPlc
from lineguard.testing.gateway import Gateway, find
from lineguard.v1.plc_pb2 import PlcAck
from lineguard.v1.trigger_pb2 import Trigger

QUICK_DEADLINE_MS = 1000
QUICK_TIMEOUT_S = (QUICK_DEADLINE_MS + 100) / 1000  # s2: recipe deadline + gateway grace
TRIGGER_BOUND_S = 0.1  # what the PLC may rely on: a Trigger answers within this, bus or no bus


async def bus_away(gateway: Gateway, how: str) -> None:
    """ "stopped": the server goes (the clients see it at once, publishes fail fast); "frozen": it stops answering on
    open connections (SIGSTOP: a hung or partitioned server, each publish waits its timeout)."""
    assert gateway.nats is not None and gateway.nats.process is not None
    if how == "frozen":
        os.kill(gateway.nats.process.pid, signal.SIGSTOP)
    else:
        await asyncio.to_thread(gateway.nats.stop)  # the gateway runs on this loop: never block it


async def bus_back(gateway: Gateway, how: str) -> None:
    assert gateway.nats is not None and gateway.nats.process is not None
    if how == "frozen":
        os.kill(gateway.nats.process.pid, signal.SIGCONT)
    else:
        await asyncio.to_thread(gateway.nats.start)


async def on_the_bus(gateway: Gateway, kind: str, message_type: type, ids: set[str], timeout_s: float = 30) -> list:
    """The stored `kind` messages of those inspections, once all are there (or what there is at the timeout)."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = await find(gateway.bus, kind, message_type, lambda m: m.part.inspection_id in ids, timeout=2)
        if {m.part.inspection_id for m in found} >= ids or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.2)


async def results_in(plc: SimulatedPlc, count: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while len(plc.received) < count and time.monotonic() < deadline:
        await asyncio.sleep(0.02)


@pytest.mark.parametrize("how", ["stopped", "frozen"])
async def test_while_nats_is_away_trigger_answers_at_once_and_every_fail_timeout_is_on_time(
    tmp_path, started_gateway, how: str
) -> None:
    async with (
        started_gateway(tmp_path, quick_deadline_ms=QUICK_DEADLINE_MS) as gateway,
        SimulatedPlc(gateway.endpoint, "s2") as plc,
    ):
        # Two parts in flight when the bus goes: their FAIL / TIMEOUT's acks are the first to find it away.
        ids = [await plc.trigger(1), await plc.trigger(2)]
        await bus_away(gateway, how)
        answered_s = []
        for sequence in range(3, 9):  # six more at 5 parts/s with the bus away
            called = time.perf_counter()
            ids.append(await plc.trigger(sequence))
            answered_s.append(time.perf_counter() - called)
            await asyncio.sleep(0.2)
        await results_in(plc, len(ids), timeout_s=QUICK_TIMEOUT_S + 2)
        received = list(plc.received)
        await bus_back(gateway, how)
        # Everything the gateway owed the bus reaches it once it is back.
        triggers = await on_the_bus(gateway, "trigger", Trigger, set(ids))
        acks = await on_the_bus(gateway, "ack", PlcAck, set(ids))
        losses = list(plc.connection_losses)
        read_after = await plc.read_result(1)  # the same session still serves calls
    assert max(answered_s) < TRIGGER_BOUND_S, answered_s
    assert [(r.inspection_id, r.verdict, r.reasons) for r in received] == [(i, "FAIL", ["TIMEOUT"]) for i in ids]
    late = [(r.sequence, round(r.latency_s, 3)) for r in received if r.latency_s > QUICK_TIMEOUT_S + 0.1]
    assert late == [], f"FAIL/TIMEOUT later than deadline + grace + 100 ms: {late}"
    assert losses == [], "the PLC's session must survive the bus outage"
    assert read_after is not None and read_after.inspection_id == ids[0]
    assert sorted(t.part.inspection_id for t in triggers) == sorted(ids)  # each stored once
    assert sorted(a.part.inspection_id for a in acks) == sorted(ids)
    assert all(a.delivered and a.gateway_timeout for a in acks), [
        (a.part.sequence, a.delivered, a.gateway_timeout) for a in acks
    ]


async def test_a_result_missed_while_disconnected_is_recorded_undelivered_and_read_back_by_sequence(
    tmp_path, started_gateway
) -> None:
    async with started_gateway(tmp_path, quick_deadline_ms=300) as gateway:
        plc = SimulatedPlc(gateway.endpoint, "s2")
        await plc.__aenter__()
        missed_id = await plc.trigger(41)
        plc.drop_connection()  # the session and its subscription stay on the server: nobody receives on them
        await asyncio.sleep(0.3 + 0.1 + 0.3)
        with contextlib.suppress(Exception):  # its connection is gone already
            await plc.__aexit__(None, None, None)
        [first] = await find(gateway.bus, "ack", PlcAck, lambda a: a.part.inspection_id == missed_id)
        async with SimulatedPlc(gateway.endpoint, "s2") as again:
            read = await again.read_result(41)
            unknown = await again.read_result(4242)
        [read_ack] = await find(
            gateway.bus, "ack", PlcAck, lambda a: a.part.inspection_id == missed_id and a.delivered, timeout=10
        )
    assert not first.delivered and first.gateway_timeout, "a result no live session listened for is not delivered"
    assert read is not None and read.read_back
    assert (read.inspection_id, read.sequence, read.verdict, read.reasons) == (missed_id, 41, "FAIL", ["TIMEOUT"])
    assert unknown is None
    assert read_ack.delivered_unix_ns > first.delivered_unix_ns
