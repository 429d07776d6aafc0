"""Station Error from the services' heartbeats, on a real nats-server: the test plays capture, inference, ocr and
decision by publishing their heartbeats; when they stop, every station goes to Error (OPC UA simple: the Error
variable; OPC 40100: VisionStateMachine in Error; Modbus: error = SERVICE_DOWN) and triggers are refused; when
they beat again, the stations serve again."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from asyncua import Client, Node, ua

from lineguard.bus import Bus
from lineguard.config import LineConfig
from lineguard.contracts import heartbeat_subject, now_ns
from lineguard.contracts import machine_vision as mv
from lineguard.contracts import opcua as contract
from lineguard.contracts.registers import Error
from lineguard.natsserver import EmbeddedNats, free_port
from lineguard.services.gateway.service import setup
from lineguard.sim.modbus import SimulatedModbusPlc
from lineguard.testing import running_service
from lineguard.testing.machine_vision import vision_system
from lineguard.v1.heartbeat_pb2 import Heartbeat

LineDict = Callable[..., dict[str, Any]]
WATCHED = ("capture", "inference", "ocr", "decision")
HEARTBEAT_S = 0.2  # the played services' heartbeat_s: down after 3 x 0.2 s of silence


async def beat_until(bus: Bus, line: str, stop: asyncio.Event) -> None:
    seq = 0
    while not stop.is_set():
        seq += 1
        for service in WATCHED:
            beat = Heartbeat(service=service, instance="test", line=line, sequence=seq, sent_unix_ns=now_ns())
            await bus.publish(heartbeat_subject(line, service), beat, msg_id=f"hb:test:{service}:{seq}")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), HEARTBEAT_S)


async def eventually(check: Callable[[], Awaitable[bool]], timeout_s: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, "not in time"
        await asyncio.sleep(0.05)


@pytest.fixture
async def config(line_config_dict: LineDict, fresh_nats: EmbeddedNats) -> LineConfig:
    raw = line_config_dict(
        nats_url=fresh_nats.url,
        deadline_ms=10_000,
        services={s: {"heartbeat_s": HEARTBEAT_S} for s in WATCHED},
    )
    first = raw["stations"][0]
    opcua = f"opc.tcp://127.0.0.1:{free_port()}/lineguard/"
    raw["stations"] = [
        {**first, "id": "s1", "plc": {"protocol": "opcua", "endpoint": opcua, "security": {"profile": "demo"}}},
        {**first, "id": "s2", "plc": {"protocol": "modbus", "port": free_port(), "plc_heartbeat_timeout_ms": 0}},
    ]
    return LineConfig(**raw)


async def vision_state(client: Client, station: str) -> str:
    idx = await client.get_namespace_index(mv.NAMESPACE_URI)
    for node in await client.nodes.objects.get_children():
        is_system = await node.read_type_definition() == ua.NodeId(mv.VISION_SYSTEM_TYPE, idx)  # type: ignore[arg-type]
        if is_system and (await node.read_browse_name()).Name == station:
            state: Node = await node.get_child([f"{idx}:VisionStateMachine", "0:CurrentState"])
            return str((await state.read_value()).Text)
    raise AssertionError(f"no vision system {station}")


@pytest.fixture
async def bus(config: LineConfig) -> AsyncIterator[Bus]:
    bus = await Bus.connect(config.nats, "health-test")
    yield bus
    await bus.close()


async def test_services_silent_station_in_error_then_back(config: LineConfig, bus: Bus) -> None:
    stop = asyncio.Event()
    beating = asyncio.create_task(beat_until(bus, config.line, stop))
    opcua_url = config.stations[0].plc.endpoint  # type: ignore[attr-defined]
    modbus_port = config.stations[1].plc.port  # type: ignore[attr-defined]
    async with running_service("gateway", config, setup), Client(opcua_url) as client:
        idx = await client.get_namespace_index(contract.NAMESPACE_URI)
        error_var = client.get_node(ua.NodeId(contract.node_path("s1", contract.ERROR), idx))  # type: ignore[arg-type]
        trigger = client.get_node(ua.NodeId(contract.node_path("s1", contract.TRIGGER_METHOD), idx))  # type: ignore[arg-type]
        station = client.get_node(ua.NodeId(contract.station_path("s1"), idx))  # type: ignore[arg-type]
        async with SimulatedModbusPlc("127.0.0.1", modbus_port, device_id=1) as plc:
            await asyncio.sleep(1.0)  # beating: the stations serve
            assert await error_var.read_value() == ""
            assert (await plc.read_gateway()).error == Error.NONE
            assert await vision_state(client, "s1") == mv.OPERATIONAL

            stop.set()  # the services go silent
            await beating
            await eventually(lambda: _error_shown(error_var))
            assert "inference" in await error_var.read_value()
            await eventually(lambda: _modbus_error(plc, Error.SERVICE_DOWN))
            assert await vision_state(client, "s1") == mv.ERROR
            with pytest.raises(ua.UaStatusCodeError, match="BadResourceUnavailable"):  # fail safe: refused
                await station.call_method(trigger, ua.Variant(1, ua.VariantType.UInt32), "p1")
            refused = await plc.trigger(1)
            assert (refused.error, refused.busy, refused.done) == (Error.IN_ERROR, False, False)

            stop.clear()
            beating = asyncio.create_task(beat_until(bus, config.line, stop))  # they beat again
            await eventually(lambda: _error_cleared(error_var))
            await eventually(lambda: _modbus_error(plc, Error.NONE))
            assert await vision_state(client, "s1") == mv.OPERATIONAL
            inspection_id = await station.call_method(trigger, ua.Variant(2, ua.VariantType.UInt32), "p2")
            assert inspection_id
            assert (await plc.trigger(2)).busy  # served again
    stop.set()
    await beating


async def _error_shown(var: Node) -> bool:
    return bool(await var.read_value())


async def _error_cleared(var: Node) -> bool:
    return await var.read_value() == ""


async def _modbus_error(plc: SimulatedModbusPlc, code: Error) -> bool:
    return (await plc.read_gateway()).error == code


async def test_a_halt_stands_through_a_service_outage_until_the_plcs_reset(config: LineConfig, bus: Bus) -> None:
    """OPC 40100: Halted refuses jobs until Reset. An outage that begins after the Halt leaves the station Halted
    (there is no Halted-to-Error transition), and one the PLC halts during stays Halted when the services return:
    neither outage's end takes jobs again without a Reset. Each outage is reported by its Error events either way."""
    machine, cause = "VisionStateMachine", (ua.Variant(1, ua.VariantType.Int32), "line stop")
    opcua_url = config.stations[0].plc.endpoint  # type: ignore[attr-defined]
    stop = asyncio.Event()
    beating = asyncio.create_task(beat_until(bus, config.line, stop))
    async with running_service("gateway", config, setup), Client(opcua_url) as client:
        vc = await vision_system(client, "s1")
        sub = await client.create_subscription(10, vc)
        error_types = (mv.ERROR_EVENT_TYPE, mv.ERROR_RESOLVED_EVENT_TYPE)
        await sub.subscribe_events(vc.system, [client.get_node(ua.NodeId(t, vc.idx)) for t in error_types])  # type: ignore[arg-type]

        def reported(type_id: int) -> int:
            return sum(e["EventType"] == ua.NodeId(type_id, vc.idx) for e in vc.events)  # type: ignore[arg-type]

        async def outage() -> None:
            nonlocal beating
            stop.set()
            await beating
            errors = reported(mv.ERROR_EVENT_TYPE)
            await vc.wait_for(lambda: reported(mv.ERROR_EVENT_TYPE) > errors)

        async def services_back() -> None:
            nonlocal beating
            stop.clear()
            beating = asyncio.create_task(beat_until(bus, config.line, stop))
            resolved = reported(mv.ERROR_RESOLVED_EVENT_TYPE)
            await vc.wait_for(lambda: reported(mv.ERROR_RESOLVED_EVENT_TYPE) > resolved)

        async def refused(path: tuple[str, ...], *args: Any) -> int:
            with pytest.raises(ua.UaStatusCodeError) as refusal:
                await vc.call(path, *args)
            return refusal.value.code

        await asyncio.sleep(1.0)  # beating: the gateway watches each service from its first heartbeat
        assert await vision_state(client, "s1") == mv.OPERATIONAL
        # Halted first, then the services go down and come back.
        assert await vc.call((machine, "Halt"), *cause) == 0
        await outage()
        assert await vision_state(client, "s1") == mv.HALTED
        assert await refused((machine, "Reset"), *cause) == ua.StatusCodes.BadInvalidState  # services still down
        await services_back()
        assert await vision_state(client, "s1") == mv.HALTED
        with pytest.raises(ua.UaStatusCodeError) as job:
            await vc.start_single_job("m", "p")
        assert job.value.code == ua.StatusCodes.BadInvalidState
        assert await vc.call((machine, "Reset"), *cause) == 0
        assert await vision_state(client, "s1") == mv.OPERATIONAL

        # The services down first, the PLC halts the station in Error, then they come back.
        await outage()
        assert await vision_state(client, "s1") == mv.ERROR
        assert await vc.call((machine, "Halt"), *cause) == 0
        await services_back()
        assert await vision_state(client, "s1") == mv.HALTED
        assert await vc.call((machine, "Reset"), *cause) == 0
        assert await vision_state(client, "s1") == mv.OPERATIONAL

        # No Halt: the outage's end is the gateway's own Reset.
        await outage()
        assert await vision_state(client, "s1") == mv.ERROR
        await services_back()
        assert await vision_state(client, "s1") == mv.OPERATIONAL
        assert (reported(mv.ERROR_EVENT_TYPE), reported(mv.ERROR_RESOLVED_EVENT_TYPE)) == (3, 3)
        assert await vc.start_single_job("m", "p")
    stop.set()
    await beating
