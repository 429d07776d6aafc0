"""OPC UA client mode on a real nats-server: the gateway connects to a PLC's own asyncua server (lineguard.sim's
ServerPlc on loopback), watches its trigger node and writes results into its nodes.

s1: a counter trigger, results within 10 s; s2 (recipe "quick"): a Boolean trigger + sequence, FAIL / TIMEOUT after
0.3 s + 0.1 s grace."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from lineguard.bus import Bus
from lineguard.config import LineConfig
from lineguard.contracts.registers import Error
from lineguard.natsserver import EmbeddedNats, free_port
from lineguard.services.gateway.protocols.opcua_client_link import NodeMapError
from lineguard.services.gateway.service import setup
from lineguard.sim.opcua_client_plc import PlcSecurity, ServerPlc, node_id
from lineguard.testing import running_service
from lineguard.testing.gateway import find, publish_decision
from lineguard.v1.decision_pb2 import Verdict
from lineguard.v1.plc_pb2 import PlcAck
from lineguard.v1.trigger_pb2 import Trigger

LineDict = Callable[..., dict[str, Any]]
DEMO = {"profile": "demo", "policy": "None"}


def plc_section(plc: ServerPlc, tmp_path: Path, **over: Any) -> dict[str, Any]:
    return {
        "protocol": "opcua-client",
        "endpoint": plc.endpoint,
        "nodes": plc.node_map(),
        "security": {**DEMO, "pki_dir": str(tmp_path / "pki")},
        "heartbeat_ms": 100,
        "watchdog_ms": 200,
        "reconnect_ms": 50,
        "reconnect_max_ms": 300,
        **over,
    }


def line_config(line_config_dict: LineDict, nats_url: str, stations: dict[str, dict[str, Any]]) -> LineConfig:
    raw = line_config_dict(nats_url=nats_url, deadline_ms=10_000, gateway={"result_grace_ms": 100})
    raw["recipes"]["quick"] = {**raw["recipes"]["pcb-a"], "deadline_ms": 300}
    first = raw["stations"][0]
    raw["stations"] = [
        {**first, "id": sid, "recipe": "quick" if sid == "s2" else "pcb-a", "plc": plc} for sid, plc in stations.items()
    ]
    return LineConfig(**raw)


@dataclass
class Line:
    bus: Bus
    s1: ServerPlc
    s2: ServerPlc


@pytest.fixture
async def line(line_config_dict: LineDict, fresh_nats: EmbeddedNats, tmp_path: Path) -> AsyncIterator[Line]:
    async with (
        ServerPlc(free_port()) as s1,
        ServerPlc(free_port(), trigger="bool", reasons_as_bits=True) as s2,
    ):
        config = line_config(
            line_config_dict, fresh_nats.url, {"s1": plc_section(s1, tmp_path), "s2": plc_section(s2, tmp_path)}
        )
        bus = await Bus.connect(config.nats, "opcua-client-test")
        try:
            async with running_service("gateway", config, setup):
                yield Line(bus, s1, s2)
        finally:
            await bus.close()


async def trigger_on_bus(bus: Bus, station: str, sequence: int) -> Trigger:
    [trigger] = await find(bus, "trigger", Trigger, lambda t: t.part.station == station and t.part.sequence == sequence)
    return trigger


async def wait_value(plc: ServerPlc, name: str, want: Any, timeout_s: float = 10.0) -> None:
    """Until the PLC's variable `name` is `want` (or, a callable, `want(value)` is true)."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        value = await plc.read(name)
        if want(value) if callable(want) else value == want:
            return
        assert asyncio.get_running_loop().time() < deadline, f"{name} is {value!r}, not {want!r}"
        await asyncio.sleep(0.02)


async def test_round_trip_timeout_and_plc_restart(line: Line) -> None:
    plc = line.s1
    await wait_value(plc, "Heartbeat", lambda v: v > 0)  # connected: the gateway counts its heartbeat up
    await plc.trigger_part(5, part_id="pallet-12")
    trigger = await trigger_on_bus(line.bus, "s1", 5)
    assert (trigger.part_id, trigger.source) == ("pallet-12", "opcua-client")
    await wait_value(plc, "Busy", True)
    await publish_decision(line.bus, trigger.part, Verdict.VERDICT_FAIL, "DEFECT_SHORT", "CODE_MISSING")
    result = await plc.result(5)
    assert (result.verdict, result.reasons, result.inspection_id) == (
        Verdict.VERDICT_FAIL,
        ["CODE_MISSING", "DEFECT_SHORT"],
        trigger.part.inspection_id,
    )
    await wait_value(plc, "Busy", False)
    [ack] = await find(line.bus, "ack", PlcAck, lambda a: a.part.inspection_id == trigger.part.inspection_id)
    assert (ack.delivered, ack.protocol) == (True, "opcua-client")

    # The PLC's server restarts with a part in flight; its decision comes while the PLC is away: written once the
    # gateway is connected again (the PLC still waits for it), and the next triggers are served.
    await plc.trigger_part(6)
    in_flight = await trigger_on_bus(line.bus, "s1", 6)
    await plc.stop_server()
    await publish_decision(line.bus, in_flight.part, Verdict.VERDICT_PASS)
    await asyncio.sleep(0.5)
    await plc.start_server()
    assert (await plc.result(6)).inspection_id == in_flight.part.inspection_id
    # Its first ack says not delivered; the write once the PLC is back is recorded as delivered (read back).
    acks = await find(line.bus, "ack", PlcAck, lambda a: a.part.inspection_id == in_flight.part.inspection_id)
    if len(acks) < 2:
        acks += await find(line.bus, "ack", PlcAck, lambda a: a.part.inspection_id == in_flight.part.inspection_id)
    assert [a.delivered for a in acks] == [False, True]
    await plc.trigger_part(7)
    seventh = await trigger_on_bus(line.bus, "s1", 7)
    await publish_decision(line.bus, seventh.part, Verdict.VERDICT_PASS)
    assert (await plc.result(7)).verdict == Verdict.VERDICT_PASS
    assert [r.sequence for r in plc.results] == [5, 6, 7]  # each exactly once


async def test_bool_trigger_decision_never_arrives(line: Line) -> None:
    report = await line.s2.run(3, rate_hz=20, result_timeout_s=5)
    assert report.ok, report
    assert {(r.verdict, tuple(r.reasons)) for r in report.results} == {("FAIL", ("TIMEOUT",))}
    assert await line.s2.read("Error") == Error.NONE


async def test_node_map_errors(line_config_dict: LineDict, fresh_nats: EmbeddedNats, tmp_path: Path) -> None:
    async with ServerPlc(free_port()) as plc:
        bad = plc_section(plc, tmp_path)
        bad["nodes"] = {**bad["nodes"], "verdict": "ns=2;q=Verdict"}
        with pytest.raises(ValidationError, match=r"stations\.0\.plc\.opcua-client\.nodes\.verdict|nodes\.verdict"):
            line_config(line_config_dict, fresh_nats.url, {"s1": bad})
        same = plc_section(plc, tmp_path)
        same["nodes"] = {**same["nodes"], "busy": same["nodes"]["verdict"]}
        with pytest.raises(ValidationError, match="busy and verdict name the same node"):
            line_config(line_config_dict, fresh_nats.url, {"s1": same})
        with pytest.raises(ValidationError, match="production profile refuses security policy None"):
            line_config(
                line_config_dict, fresh_nats.url, {"s1": plc_section(plc, tmp_path, security={"policy": "None"})}
            )

        for field, node, message in [
            ("verdict", node_id("NoSuchVerdict"), "no such node on the PLC"),
            ("busy", node_id("Verdict"), "the field needs Boolean"),
            ("part_id", "nsu=urn:nobody;s=PLC/PartId", "the PLC has no namespace 'urn:nobody'"),
        ]:
            section = plc_section(plc, tmp_path)
            section["nodes"] = {**section["nodes"], field: node}
            if field == "busy":
                section["nodes"].pop("verdict")
                section["nodes"]["verdict"] = node_id("Error")
                section["nodes"].pop("error")
            config = line_config(line_config_dict, fresh_nats.url, {"s1": section})
            with pytest.raises(NodeMapError, match=message) as caught:
                async with running_service("gateway", config, setup):
                    pass
            assert f"plc.nodes.{field} ({node})" in str(caught.value)


async def test_production_security(line_config_dict: LineDict, fresh_nats: EmbeddedNats, tmp_path: Path) -> None:
    """Basic256Sha256 / SignAndEncrypt with a user login; an untrusted PLC certificate is refused until trusted."""
    security = PlcSecurity(tmp_path / "plc-pki", "gateway", "s3cret")
    (tmp_path / "password").write_text("s3cret\n")
    async with ServerPlc(free_port(), security=security) as plc:
        pki = tmp_path / "pki"
        section = plc_section(
            plc,
            tmp_path,
            security={"pki_dir": str(pki), "user": "gateway", "password_file": str(tmp_path / "password")},
        )
        config = line_config(line_config_dict, fresh_nats.url, {"s1": section})
        bus = await Bus.connect(config.nats, "opcua-client-test")
        try:
            async with running_service("gateway", config, setup):
                await asyncio.sleep(1.0)
                assert await plc.read("Heartbeat") == 0  # the PLC's certificate is not trusted: no session
                rejected = list((pki / "rejected").glob("*.der"))
                assert rejected
                rejected[0].rename(pki / "trusted" / rejected[0].name)
                await wait_value(plc, "Heartbeat", lambda v: v > 0)  # connected, with backoff
                await plc.trigger_part(1)
                trigger = await trigger_on_bus(bus, "s1", 1)
                await publish_decision(bus, trigger.part, Verdict.VERDICT_PASS)
                assert (await plc.result(1)).verdict == Verdict.VERDICT_PASS
        finally:
            await bus.close()
