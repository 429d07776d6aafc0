"""The gateway speaking Modbus TCP, on a real nats-server, against pymodbus PLCs on loopback.

Server mode: the gateway's pymodbus server, the simulated PLC (lineguard.sim.modbus) its client; two
stations on one server (units 1 and 2): s1 waits 10 s for a decision, s2 (recipe "quick") gives
FAIL / TIMEOUT after 0.3 s + 0.1 s grace. Client mode: the PLC is the server, the gateway polls it.
Malformed frames are sent with a raw socket."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pymodbus.client import AsyncModbusTcpClient

from lineguard.bus import Bus
from lineguard.config import LineConfig
from lineguard.contracts.registers import MODBUS_DEFAULTS, NO_RESULT, VERDICTS, Error, GatewayFields
from lineguard.natsserver import EmbeddedNats, free_port
from lineguard.recipes import RecipeVersion
from lineguard.services.gateway.service import setup
from lineguard.sim.modbus import SimulatedModbusPlc, SimulatedModbusPlcServer
from lineguard.sim.plc import SimulatedPlc
from lineguard.testing import running_service
from lineguard.testing.gateway import find, publish_decision
from lineguard.testing.waiting import wait_for
from lineguard.v1.decision_pb2 import Verdict
from lineguard.v1.plc_pb2 import PlcAck
from lineguard.v1.trigger_pb2 import Trigger

HEARTBEAT_TIMEOUT_MS = 600
LineDict = Callable[..., dict[str, Any]]


@dataclass
class Line:
    config: LineConfig
    bus: Bus
    port: int


def modbus_line(line_config_dict: LineDict, nats_url: str, port: int, mode: str) -> LineConfig:
    raw = line_config_dict(nats_url=nats_url, deadline_ms=10_000, gateway={"result_grace_ms": 100})
    # The PLC selects them by number in the `recipe` field (3: pcb-a, 4: quick).
    raw["recipes"]["quick"] = {**raw["recipes"]["pcb-a"], "deadline_ms": 300, "plc_recipe_number": 4}
    raw["recipes"]["pcb-a"]["plc_recipe_number"] = 3
    plc = {
        "protocol": "modbus",
        "mode": mode,
        "port": port,
        "heartbeat_ms": 50,
        "poll_ms": 5,
        "plc_heartbeat_timeout_ms": HEARTBEAT_TIMEOUT_MS,
        "reconnect_ms": 50,
        "reconnect_max_ms": 200,
    }
    raw["stations"][0]["plc"] = {**plc, "device_id": 1}
    if mode == "server":
        raw["stations"].append({**raw["stations"][0], "id": "s2", "recipe": "quick", "plc": {**plc, "device_id": 2}})
    return LineConfig(**raw)


@contextlib.asynccontextmanager
async def gateway(line_config_dict: LineDict, nats: EmbeddedNats, mode: str, port: int) -> AsyncIterator[Line]:
    config = modbus_line(line_config_dict, nats.url, port, mode)
    bus = await Bus.connect(config.nats, "modbus-test")
    try:
        async with running_service("gateway", config, setup):
            yield Line(config, bus, port)
    finally:
        await bus.close()


@pytest.fixture
async def server_line(line_config_dict: LineDict, fresh_nats: EmbeddedNats) -> AsyncIterator[Line]:
    async with gateway(line_config_dict, fresh_nats, "server", free_port()) as line:
        yield line


def logged(capfd: pytest.CaptureFixture[str]) -> str:
    """What the gateway logged so far (structlog prints to stdout or stderr, as configured)."""
    out = capfd.readouterr()
    return out.out + out.err


async def trigger_on_bus(bus: Bus, station: str, sequence: int) -> Trigger:
    [trigger] = await find(bus, "trigger", Trigger, lambda t: t.part.station == station and t.part.sequence == sequence)
    return trigger


async def acks_for(bus: Bus, inspection_id: str) -> list[PlcAck]:
    return await find(bus, "ack", PlcAck, lambda a: a.part.inspection_id == inspection_id)


async def test_server_mode_round_trip_and_timeout(server_line: Line) -> None:
    async with SimulatedModbusPlc("127.0.0.1", server_line.port, device_id=1) as plc:
        answer = await plc.trigger(7, part_id="tray-7", recipe=3)
        assert answer.busy and answer.error == Error.NONE
        trigger = await trigger_on_bus(server_line.bus, "s1", 7)
        assert (trigger.part_id, trigger.source, trigger.part.recipe_id) == ("tray-7", "modbus", "pcb-a")
        await publish_decision(server_line.bus, trigger.part, Verdict.VERDICT_REWORK, "DEFECT_SPUR", "NEW_THING")
        result = await plc.result(7)
        assert (result.verdict, result.reasons) == ("REWORK", ["DEFECT_SPUR", "OTHER"])
        done_fell = await plc.wait_for(lambda g: not g.done)  # the sim acknowledged it
        assert (done_fell.busy, done_fell.result_sequence, done_fell.verdict) == (False, 7, VERDICTS["REWORK"])
        [ack] = await acks_for(server_line.bus, trigger.part.inspection_id)
        assert (ack.delivered, ack.verdict, ack.protocol) == (True, Verdict.VERDICT_REWORK, "modbus")

    # s2 on unit 2 of the same server: no decision in time is FAIL / TIMEOUT, and the sim's run sees it.
    async with SimulatedModbusPlc("127.0.0.1", server_line.port, device_id=2) as plc2:
        report = await plc2.run(2, rate_hz=20, result_timeout_s=5)
    assert report.ok, report
    assert [(r.sequence, r.verdict, r.reasons) for r in report.results] == [
        (1, "FAIL", ["TIMEOUT"]),
        (2, "FAIL", ["TIMEOUT"]),
    ]


async def test_plc_recipe_number_changes_the_product_between_parts(server_line: Line) -> None:
    """The `recipe` field selects a recipe by its plc_recipe_number for this part and those after it; a number no
    recipe has is refused (UNKNOWN_RECIPE) and the live recipe keeps running."""
    quick = RecipeVersion.of("quick", server_line.config.recipes["quick"])
    async with SimulatedModbusPlc("127.0.0.1", server_line.port, device_id=1) as plc:
        assert (await plc.trigger(1, recipe=4)).busy
        first = await trigger_on_bus(server_line.bus, "s1", 1)
        assert (first.part.recipe_id, first.part.recipe_version, first.part.recipe_sha256) == (
            "quick",
            quick.version,
            quick.sha256,
        )
        assert (await plc.result(1)).reasons == ["TIMEOUT"]  # quick's deadline (300 ms), not pcb-a's 10 s
        await plc.wait_for(lambda g: not g.done)
        refused = await plc.trigger(2, recipe=99)
        assert (refused.error, refused.busy) == (Error.UNKNOWN_RECIPE, False)
        assert (await plc.trigger(3)).busy  # 0: the recipe prepared now, still quick
        assert (await trigger_on_bus(server_line.bus, "s1", 3)).part.recipe_id == "quick"
        taken = await find(server_line.bus, "trigger", Trigger, lambda t: t.part.station == "s1")
        assert [t.part.sequence for t in taken] == [1, 3]  # the refused part never entered the line


async def test_trigger_while_busy_and_wrong_sequence_ack(server_line: Line, capfd: pytest.CaptureFixture[str]) -> None:
    async with SimulatedModbusPlc("127.0.0.1", server_line.port, device_id=1) as plc:
        plc.auto_ack = False
        assert (await plc.trigger(10)).busy
        refused = await plc.trigger(11)
        assert (refused.error, refused.busy) == (Error.BUSY, True)
        first = await trigger_on_bus(server_line.bus, "s1", 10)
        await publish_decision(server_line.bus, first.part, Verdict.VERDICT_PASS)
        assert (await plc.result(10)).verdict == "PASS"
        # Refused is refused: 11 never reached the bus.
        assert await find(server_line.bus, "trigger", Trigger, lambda t: t.part.sequence == 11, timeout=0.5) == []

        await plc.ack(99)  # not the result's sequence: done stays up
        await asyncio.sleep(0.1)
        assert (await plc.read_gateway()).done
        assert "acknowledged a sequence that is not the result's" in logged(capfd)
        await plc.ack(10)
        await plc.wait_for(lambda g: not g.done)
        # And the station serves the next trigger.
        assert (await plc.trigger(12)).busy
        again = await trigger_on_bus(server_line.bus, "s1", 12)
        await publish_decision(server_line.bus, again.part, Verdict.VERDICT_FAIL, "DEFECT_SHORT")
        assert (await plc.result(12)).reasons == ["DEFECT_SHORT"]


async def test_heartbeat_loss_is_error_with_safe_outputs(server_line: Line) -> None:
    async with SimulatedModbusPlc("127.0.0.1", server_line.port, device_id=1) as plc:
        assert (await plc.trigger(20)).busy
        in_flight = await trigger_on_bus(server_line.bus, "s1", 20)
        plc.beating = False
        lost = await plc.wait_for(lambda g: g.error == Error.PARTNER_LOST, timeout_s=5)
        assert (lost.busy, lost.done, lost.verdict, lost.result_sequence) == (False, False, NO_RESULT, 0)
        # The abandoned part's decision is not shown to the PLC, and the ack says so.
        await publish_decision(server_line.bus, in_flight.part, Verdict.VERDICT_PASS)
        [ack] = await acks_for(server_line.bus, in_flight.part.inspection_id)
        assert not ack.delivered
        assert not (await plc.read_gateway()).done
        assert (await plc.trigger(21)).error == Error.IN_ERROR  # refused while in Error
        assert (await plc.wait_for(lambda g: g.error != Error.IN_ERROR)).error == Error.PARTNER_LOST

        plc.beating = True
        await plc.wait_for(lambda g: g.error == Error.NONE, timeout_s=5)
        assert (await plc.trigger(22)).busy
        served = await trigger_on_bus(server_line.bus, "s1", 22)
        await publish_decision(server_line.bus, served.part, Verdict.VERDICT_PASS)
        assert (await plc.result(22)).verdict == "PASS"


async def test_plc_connection_drops_mid_run_and_comes_back(server_line: Line) -> None:
    async with SimulatedModbusPlc("127.0.0.1", server_line.port, device_id=1) as plc:
        assert (await plc.trigger(30)).busy
        trigger = await trigger_on_bus(server_line.bus, "s1", 30)
        plc.disconnect()  # the PLC's network blips, shorter than the heartbeat timeout
        await publish_decision(server_line.bus, trigger.part, Verdict.VERDICT_PASS)
        await asyncio.sleep(0.1)
        await plc.connect()
        assert (await plc.result(30)).verdict == "PASS"  # the result waited for it
        await plc.wait_for(lambda g: not g.done)
        assert (await plc.trigger(31)).busy
        after = await trigger_on_bus(server_line.bus, "s1", 31)
        await publish_decision(server_line.bus, after.part, Verdict.VERDICT_FAIL, "DEFECT_OPEN")
        assert (await plc.result(31)).reasons == ["DEFECT_OPEN"]


async def raw_exchange(port: int, frame: bytes, timeout: float = 2.0) -> bytes:
    """Send `frame` on a fresh connection; what comes back before the server answers or closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(frame)
        await writer.drain()
        with contextlib.suppress(TimeoutError):
            return await asyncio.wait_for(reader.read(260), timeout)
        return b""
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError, socket.error):
            await writer.wait_closed()


def mbap(transaction: int, unit: int, pdu: bytes, length: int | None = None) -> bytes:
    return struct.pack(">HHHB", transaction, 0, len(pdu) + 1 if length is None else length, unit) + pdu


async def test_malformed_frames_and_bad_addresses_get_exception_codes(
    server_line: Line, capfd: pytest.CaptureFixture[str]
) -> None:
    port = server_line.port
    # Unknown function code 0x63: exception 01 (illegal function) for that transaction (pymodbus, unable to
    # decode the request, answers it under function code 0).
    reply = await raw_exchange(port, mbap(5, 1, bytes([0x63, 0, 0])))
    assert reply[:2] == b"\x00\x05" and reply[7] & 0x80 and reply[8] == 0x01
    # A truncated MBAP header, and a header whose length says more than comes: nothing answered, no crash.
    assert await raw_exchange(port, b"\x00\x01\x00", timeout=0.3) == b""
    assert await raw_exchange(port, mbap(6, 1, bytes([3, 0, 0, 0, 1]), length=200), timeout=0.3) == b""
    # A length shorter than its PDU: not a valid read; the server does not answer it with data.
    short = await raw_exchange(port, mbap(7, 1, bytes([3, 0, 0, 0, 1]), length=2), timeout=0.3)
    assert len(short) < 9 or short[7] & 0x80

    client = AsyncModbusTcpClient("127.0.0.1", port=port, retries=0, reconnect_delay=0)
    assert await client.connect()
    try:
        # Out of the map: exception 02; the gateway's own registers are read-only: 02.
        reply = await client.read_holding_registers(1000, count=2, device_id=1)
        assert reply.isError() and reply.exception_code == 0x02
        reply = await client.write_register(MODBUS_DEFAULTS["verdict"], VERDICTS["PASS"], device_id=1)
        assert reply.isError() and reply.exception_code == 0x02
        # A part id longer than its 32 characters: exception 03 and a log line naming it.
        reply = await client.write_registers(MODBUS_DEFAULTS["part_id"], [40, 0x4142], device_id=1)
        assert reply.isError() and reply.exception_code == 0x03
        assert "part id too long for its registers" in logged(capfd)
    finally:
        client.close()

    # The server still serves, and the next trigger is taken.
    async with SimulatedModbusPlc("127.0.0.1", port, device_id=1) as plc:
        assert (await plc.trigger(40, part_id="ok")).busy
        trigger = await trigger_on_bus(server_line.bus, "s1", 40)
        assert trigger.part_id == "ok"
        await publish_decision(server_line.bus, trigger.part, Verdict.VERDICT_PASS)
        assert (await plc.result(40)).verdict == "PASS"


async def test_a_unit_id_no_station_has_gets_exception_0b_and_one_log_line(
    server_line: Line, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """Units 1 and 2 are s1's and s2's. Any other unit id is a PLC asking the wrong unit: exception 0x0B (gateway
    target device failed to respond), not 04 (device failure) with pymodbus's KeyError traceback, and a log line
    naming the unit id, once however often it asks."""
    client = AsyncModbusTcpClient("127.0.0.1", port=server_line.port, retries=0, reconnect_delay=0)
    assert await client.connect()
    try:
        for _ in range(3):
            reply = await client.read_holding_registers(MODBUS_DEFAULTS["heartbeat"], count=2, device_id=9)
            assert reply.isError() and reply.exception_code == 0x0B
        reply = await client.write_register(MODBUS_DEFAULTS["trigger"], 1, device_id=9)
        assert reply.isError() and reply.exception_code == 0x0B
        assert not (await client.read_holding_registers(MODBUS_DEFAULTS["heartbeat"], count=1, device_id=1)).isError()
    finally:
        client.close()
    out = logged(capfd)
    assert out.count("Modbus request to a unit id no station has") == 1 and "unit_id=9" in out
    assert not [r for r in caplog.records if r.name.startswith("pymodbus")]  # no traceback of its own


async def test_client_mode_round_trip_and_plc_restart(line_config_dict: LineDict, fresh_nats: EmbeddedNats) -> None:
    port = free_port()
    # The gateway first: it keeps connecting until the PLC's server is up.
    async with gateway(line_config_dict, fresh_nats, "client", port) as line, SimulatedModbusPlcServer(port) as plc:
        assert (await plc.trigger(1, part_id="carrier-9")).busy
        trigger = await trigger_on_bus(line.bus, "s1", 1)
        assert trigger.part_id == "carrier-9"
        await publish_decision(line.bus, trigger.part, Verdict.VERDICT_PASS)
        assert (await plc.result(1)).verdict == "PASS"
        await plc.wait_for(lambda g: not g.done)

        # The PLC goes away mid-run: the gateway loses it; it comes back on the same port and is served again.
        assert (await plc.trigger(2)).busy
        second = await trigger_on_bus(line.bus, "s1", 2)
        await plc.stop_server()
        await asyncio.sleep(HEARTBEAT_TIMEOUT_MS / 1000)
        await plc.start_server()
        lost_and_back = await plc.wait_for(lambda g: not g.busy and g.error == Error.PARTNER_LOST, timeout_s=10)
        assert (lost_and_back.done, lost_and_back.verdict) == (False, NO_RESULT)
        await plc.wait_for(lambda g: g.error == Error.NONE, timeout_s=10)
        # Part 2 was abandoned with the connection: its decision is not shown, and its ack says so.
        await publish_decision(line.bus, second.part, Verdict.VERDICT_PASS)
        [ack] = await acks_for(line.bus, second.part.inspection_id)
        assert not ack.delivered and not (await plc.read_gateway()).done
        assert (await plc.trigger(3)).busy
        third = await trigger_on_bus(line.bus, "s1", 3)
        await publish_decision(line.bus, third.part, Verdict.VERDICT_FAIL, "CODE_MISSING")
        assert (await plc.result(3)).reasons == ["CODE_MISSING"]


class AnswerWatchingPlc(SimulatedModbusPlcServer):
    """A PLC whose program sees each write of the gateway as it lands (a scan quicker than any poll): it lowers
    `trigger` as soon as busy, done or an error answers it, as docs/modbus.md's handshake allows, and keeps what
    answered and every picture of the gateway's fields a write made."""

    def __init__(self, port: int):
        super().__init__(port)
        self.answers: list[GatewayFields] = []
        self.written: list[GatewayFields] = []

    def on_write(self) -> None:
        start, end = self.layout.gateway_span()
        seen = self.layout.decode_gateway(bytes(self.memory[start:end]), start)
        self.written.append(seen)
        trigger = self.layout.offsets["trigger"]
        if any(self.memory[trigger : trigger + 2]) and (seen.busy or seen.done or seen.error != Error.NONE):
            self.memory[trigger : trigger + 2] = bytes(2)
            self.answers.append(seen)


def reports_not_ready(port: int) -> bool:
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1).close()
    except urllib.error.HTTPError as exc:
        return exc.code == 503
    return False


async def test_a_refused_trigger_is_answered_by_its_error_alone_never_by_busy(tmp_path: Path, started_gateway) -> None:
    """Client mode, a gateway that is stopping (s1 keeps it waiting for a part in flight): it refuses s2's trigger
    (REFUSED, 6), and busy never rises for it. Had busy risen first, the PLC would lower the trigger on it, and
    the refusal, cleared when the trigger falls, would be gone at the next poll: a PLC scanning slower than
    poll_ms would see busy rise and fall, no done, no error."""
    port, health_port = free_port(), free_port()
    s2 = {
        "protocol": "modbus",
        "mode": "client",
        "port": port,
        "heartbeat_ms": 50,
        "poll_ms": 5,
        "plc_heartbeat_timeout_ms": HEARTBEAT_TIMEOUT_MS,
        "reconnect_ms": 50,
    }
    async with (
        started_gateway(
            tmp_path, quick_deadline_ms=300, plc={"s2": s2}, services={"gateway": {"http_port": health_port}}
        ) as gateway,
        AnswerWatchingPlc(port) as plc,
        SimulatedPlc(gateway.endpoint, "s1") as opcua_plc,
    ):
        waiting_id = await opcua_plc.trigger(1)
        gateway.stopping.set()
        await wait_for(lambda: asyncio.to_thread(reports_not_ready, health_port))  # and so refusing new triggers
        await plc.set("sequence", 7)
        await plc.set("trigger", 1)
        await wait_for(lambda: plc.answers)
        assert (plc.answers[0].busy, plc.answers[0].error) == (False, Error.REFUSED)
        await plc.wait_for(lambda g: g.error == Error.NONE)  # the trigger fell: the refusal was seen
        assert not any(seen.busy for seen in plc.written)
        assert await find(gateway.bus, "trigger", Trigger, lambda t: t.part.station == "s2", timeout=0.5) == []
        [trigger] = await find(gateway.bus, "trigger", Trigger, lambda t: t.part.inspection_id == waiting_id)
        await publish_decision(gateway.bus, trigger.part, Verdict.VERDICT_PASS)  # the gateway may stop now
        await asyncio.wait_for(gateway.service, timeout=15)
