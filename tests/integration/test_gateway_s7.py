"""The gateway speaking S7, on a real nats-server, against snap7's own server on loopback.

Each station's PLC is a SimulatedS7Plc (snap7.server.Server with the station's DB, lineguard.sim.s7); the
gateway is the S7 client. s1 waits 10 s for a decision; s2 (recipe "quick", its own PLC) gives FAIL /
TIMEOUT after 0.3 s + 0.1 s grace."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from lineguard.bus import Bus
from lineguard.config import LineConfig
from lineguard.contracts.registers import NO_RESULT, Error
from lineguard.natsserver import EmbeddedNats, free_port
from lineguard.services.gateway.service import setup
from lineguard.sim.s7 import SimulatedS7Plc
from lineguard.testing import running_service
from lineguard.testing.gateway import find, publish_decision
from lineguard.v1.decision_pb2 import Verdict
from lineguard.v1.plc_pb2 import PlcAck
from lineguard.v1.trigger_pb2 import Trigger

HEARTBEAT_TIMEOUT_MS = 600
LineDict = Callable[..., dict[str, Any]]


@dataclass
class Line:
    bus: Bus
    ports: dict[str, int]


@pytest.fixture
async def line(line_config_dict: LineDict, fresh_nats: EmbeddedNats) -> AsyncIterator[Line]:
    ports = {"s1": free_port(), "s2": free_port()}
    raw = line_config_dict(nats_url=fresh_nats.url, deadline_ms=10_000, gateway={"result_grace_ms": 100})
    # The PLC selects them by number in the `recipe` field (2: pcb-a, 7: quick).
    raw["recipes"]["quick"] = {**raw["recipes"]["pcb-a"], "deadline_ms": 300, "plc_recipe_number": 7}
    raw["recipes"]["pcb-a"]["plc_recipe_number"] = 2
    plc = {
        "protocol": "s7",
        "db": 100,
        "heartbeat_ms": 50,
        "poll_ms": 5,
        "plc_heartbeat_timeout_ms": HEARTBEAT_TIMEOUT_MS,
        "reconnect_ms": 50,
        "reconnect_max_ms": 200,
    }
    raw["stations"][0]["plc"] = {**plc, "port": ports["s1"]}
    raw["stations"].append({**raw["stations"][0], "id": "s2", "recipe": "quick", "plc": {**plc, "port": ports["s2"]}})
    config = LineConfig(**raw)
    bus = await Bus.connect(config.nats, "s7-test")
    try:
        async with running_service("gateway", config, setup):
            yield Line(bus, ports)
    finally:
        await bus.close()


def logged(capfd: pytest.CaptureFixture[str]) -> str:
    out = capfd.readouterr()
    return out.out + out.err


async def trigger_on_bus(bus: Bus, station: str, sequence: int) -> Trigger:
    [trigger] = await find(bus, "trigger", Trigger, lambda t: t.part.station == station and t.part.sequence == sequence)
    return trigger


async def test_round_trip_and_timeout(line: Line) -> None:
    async with SimulatedS7Plc(line.ports["s1"]) as plc:
        assert (await plc.trigger(5, part_id="pallet-12", recipe=2)).busy
        trigger = await trigger_on_bus(line.bus, "s1", 5)
        assert (trigger.part_id, trigger.source) == ("pallet-12", "s7")
        await publish_decision(line.bus, trigger.part, Verdict.VERDICT_FAIL, "DEFECT_SHORT", "CODE_MISSING")
        result = await plc.result(5)
        assert (result.verdict, result.reasons) == ("FAIL", ["CODE_MISSING", "DEFECT_SHORT"])
        await plc.wait_for(lambda g: not g.done)
        [ack] = await find(line.bus, "ack", PlcAck, lambda a: a.part.inspection_id == trigger.part.inspection_id)
        assert (ack.delivered, ack.protocol) == (True, "s7")
    async with SimulatedS7Plc(line.ports["s2"]) as plc2:
        report = await plc2.run(2, rate_hz=20, result_timeout_s=5)
    assert report.ok, report
    assert {(r.verdict, tuple(r.reasons)) for r in report.results} == {("FAIL", ("TIMEOUT",))}


async def test_plc_recipe_number_changes_the_product_and_an_unknown_one_is_refused(line: Line) -> None:
    async with SimulatedS7Plc(line.ports["s1"]) as plc:
        assert (await plc.trigger(1, recipe=7)).busy
        assert (await trigger_on_bus(line.bus, "s1", 1)).part.recipe_id == "quick"
        assert (await plc.result(1)).reasons == ["TIMEOUT"]  # quick's deadline (300 ms), not pcb-a's 10 s
        await plc.wait_for(lambda g: not g.done)
        refused = await plc.trigger(2, recipe=300)
        assert (refused.error, refused.busy) == (Error.UNKNOWN_RECIPE, False)
        assert (await plc.trigger(3, recipe=2)).busy  # back to pcb-a by its number
        assert (await trigger_on_bus(line.bus, "s1", 3)).part.recipe_id == "pcb-a"


async def test_busy_wrong_ack_and_too_long_part_id(line: Line, capfd: pytest.CaptureFixture[str]) -> None:
    async with SimulatedS7Plc(line.ports["s1"]) as plc:
        plc.auto_ack = False
        assert (await plc.trigger(1)).busy
        assert (await plc.trigger(2)).error == Error.BUSY
        first = await trigger_on_bus(line.bus, "s1", 1)
        await publish_decision(line.bus, first.part, Verdict.VERDICT_PASS)
        assert (await plc.result(1)).verdict == "PASS"
        await plc.ack(7)
        await asyncio.sleep(0.1)
        assert (await plc.read_gateway()).done  # a wrong-sequence ack is ignored...
        assert "acknowledged a sequence that is not the result's" in logged(capfd)  # ...and logged
        await plc.ack(1)
        await plc.wait_for(lambda g: not g.done)

        # A STRING whose length byte says more than the configured 32 characters: refused, logged.
        assert (await plc.trigger(3, part_id="x" * 40)).error == Error.PART_ID_TOO_LONG
        assert "part id length 40 is more than its field's 32 characters" in logged(capfd)
        assert (await plc.trigger(4, part_id="fits")).busy  # the next trigger is served
        fourth = await trigger_on_bus(line.bus, "s1", 4)
        assert fourth.part_id == "fits"
        await publish_decision(line.bus, fourth.part, Verdict.VERDICT_PASS)
        assert (await plc.result(4)).verdict == "PASS"


async def test_heartbeat_loss_then_plc_restart(line: Line) -> None:
    async with SimulatedS7Plc(line.ports["s1"]) as plc:
        assert (await plc.trigger(10)).busy
        abandoned = await trigger_on_bus(line.bus, "s1", 10)
        plc.beating = False
        lost = await plc.wait_for(lambda g: g.error == Error.PARTNER_LOST, timeout_s=5)
        assert (lost.busy, lost.done, lost.verdict) == (False, False, NO_RESULT)
        await publish_decision(line.bus, abandoned.part, Verdict.VERDICT_PASS)
        [ack] = await find(line.bus, "ack", PlcAck, lambda a: a.part.inspection_id == abandoned.part.inspection_id)
        assert not ack.delivered
        plc.beating = True
        await plc.wait_for(lambda g: g.error == Error.NONE, timeout_s=5)

        # The PLC's network goes away mid-part and comes back: Error, then served again.
        assert (await plc.trigger(11)).busy
        in_flight = await trigger_on_bus(line.bus, "s1", 11)
        plc.stop_server()
        await asyncio.sleep(HEARTBEAT_TIMEOUT_MS / 1000)
        plc.start_server()
        back = await plc.wait_for(lambda g: not g.busy and g.error == Error.PARTNER_LOST, timeout_s=10)
        assert (back.done, back.verdict) == (False, NO_RESULT)
        await plc.wait_for(lambda g: g.error == Error.NONE, timeout_s=10)
        await publish_decision(line.bus, in_flight.part, Verdict.VERDICT_PASS)  # abandoned with the connection
        [ack] = await find(line.bus, "ack", PlcAck, lambda a: a.part.inspection_id == in_flight.part.inspection_id)
        assert not ack.delivered
        assert (await plc.trigger(12)).busy
        twelfth = await trigger_on_bus(line.bus, "s1", 12)
        await publish_decision(line.bus, twelfth.part, Verdict.VERDICT_REWORK, "DEFECT_SPUR")
        assert (await plc.result(12)).reasons == ["DEFECT_SPUR"]
