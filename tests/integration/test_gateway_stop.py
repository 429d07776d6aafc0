"""A gateway asked to stop answers the parts in flight first, on a real nats-server and real OPC UA.

Its own gateway and nats-server (the stop is the test), one endpoint with two stations:
s1 waits for a decision (10 s deadline), s2 times out quickly (FAIL / TIMEOUT)."""

from __future__ import annotations

import asyncio
import time
import urllib.error
import urllib.request

import pytest
from asyncua import ua

from lineguard.natsserver import free_port
from lineguard.sim.plc import SimulatedPlc
from lineguard.testing.gateway import find, publish_decision
from lineguard.v1.decision_pb2 import Verdict
from lineguard.v1.plc_pb2 import PlcAck
from lineguard.v1.trigger_pb2 import Trigger

QUICK_TIMEOUT_S = 1.0 + 0.1  # s2: recipe deadline + gateway grace


def readiness(port: int, timeout_s: float = 5.0) -> tuple[int, str]:
    """/readyz once it says "not ready" (or as it is at the timeout)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as reply:
                status, body = reply.status, reply.read().decode().strip()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode().strip()
        if time.monotonic() > deadline:
            return status, body
        time.sleep(0.01)


async def test_a_stopping_gateway_refuses_new_triggers_and_answers_every_part_in_flight(
    tmp_path, started_gateway
) -> None:
    health_port = free_port()
    async with started_gateway(
        tmp_path, quick_deadline_ms=1000, services={"gateway": {"http_port": health_port}}
    ) as gateway:
        bus, service = gateway.bus, gateway.service
        async with SimulatedPlc(gateway.endpoint, "s1") as plc1, SimulatedPlc(gateway.endpoint, "s2") as plc2:
            waiting_id = await plc1.trigger(11, "tray-1")
            timing_out_id = await plc2.trigger(21)
            asked = time.monotonic()
            gateway.stopping.set()
            # Not ready (Kubernetes routes no more to it), and from then on refusing.
            assert await asyncio.to_thread(readiness, health_port) == (503, "not ready: stopping")
            # A new part is refused at once; the PLC's retry of a part in flight still gets its inspection.
            with pytest.raises(ua.UaStatusCodeError) as refused:
                await plc1.trigger(12)
            assert refused.value.code == ua.StatusCodes.BadResourceUnavailable
            assert await plc1.trigger(11, "tray-1") == waiting_id
            assert not service.done()
            # The decision comes while the gateway is stopping: the PLC still gets it.
            [trigger] = await find(bus, "trigger", Trigger, lambda t: t.part.inspection_id == waiting_id)
            await publish_decision(bus, trigger.part, Verdict.VERDICT_REWORK, "DEFECT_SPUR")
            await asyncio.wait_for(service, timeout=QUICK_TIMEOUT_S + 10)
            stopped_after = time.monotonic() - asked
            got1 = [(r.inspection_id, r.verdict, r.reasons) for r in plc1.received]
            got2 = [(r.inspection_id, r.verdict, r.reasons) for r in plc2.received]
        assert got1 == [(waiting_id, "REWORK", ["DEFECT_SPUR"])]
        assert got2 == [(timing_out_id, "FAIL", ["TIMEOUT"])]  # fail safe, not left hanging
        # It waited for the slowest part in flight (s2's timeout), not for s1's 10 s deadline.
        assert QUICK_TIMEOUT_S - 0.2 <= stopped_after < QUICK_TIMEOUT_S + 3
        acks = await find(bus, "ack", PlcAck, lambda a: a.part.inspection_id in (waiting_id, timing_out_id))
        assert sorted((a.part.station, a.verdict, a.delivered, a.gateway_timeout) for a in acks) == [
            ("s1", Verdict.VERDICT_REWORK, True, False),
            ("s2", Verdict.VERDICT_FAIL, True, True),
        ]
        refused_triggers = await find(bus, "trigger", Trigger, lambda t: t.part.sequence == 12, timeout=0.5)
        assert refused_triggers == []
