"""The production lot from the PLC, over each protocol's own way of saying it, into every part and the stored row.

Real gateway and nats-server (conftest's started_gateway), real connections to the simulated PLCs: Modbus TCP in
both modes and S7 write the `lot` text field at a lot change and leave it; the simple OPC UA profile calls SetLot;
OPC 40100 names the lot as the job's MeasId. Each part triggered carries the lot standing then (Part.lot, and the
PLC's part id as Part.part_id), a lot the protocol cannot hold is refused with that protocol's error and triggers
nothing, and, with the results service on a SQLite file, the lot the PLC set is the inspection row's `lot`."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from asyncua import Client, ua

from lineguard.config import LineConfig
from lineguard.contracts import msg_id, now_ns, subject
from lineguard.contracts import opcua as opcua_contract
from lineguard.contracts.registers import Error
from lineguard.natsserver import free_port
from lineguard.runtime.service import run_service
from lineguard.services.results.db import make_engine, upgrade_database
from lineguard.services.results.service import setup as results_setup
from lineguard.sim.modbus import SimulatedModbusPlc, SimulatedModbusPlcServer
from lineguard.sim.opcua_client_plc import ServerPlc
from lineguard.sim.plc import SimulatedPlc
from lineguard.sim.registers import RegisterPlc
from lineguard.sim.s7 import SimulatedS7Plc
from lineguard.testing.gateway import Gateway, find
from lineguard.testing.machine_vision import vision_system
from lineguard.testing.waiting import wait_for
from lineguard.v1.decision_pb2 import Decision, Verdict
from lineguard.v1.trigger_pb2 import Trigger

TIMING = {"heartbeat_ms": 50, "poll_ms": 5, "plc_heartbeat_timeout_ms": 600, "reconnect_ms": 50}


def register_plc(protocol: str) -> tuple[dict[str, Any], RegisterPlc]:
    port = free_port()
    if protocol == "modbus-server":
        return {"protocol": "modbus", "mode": "server", "port": port, **TIMING}, SimulatedModbusPlc("127.0.0.1", port)
    if protocol == "modbus-client":
        return {"protocol": "modbus", "mode": "client", "port": port, **TIMING}, SimulatedModbusPlcServer(port)
    return {"protocol": "s7", "db": 100, "port": port, **TIMING}, SimulatedS7Plc(port)


async def trigger_of(gateway: Gateway, sequence: int, station: str = "s1") -> Trigger:
    [trigger] = await find(
        gateway.bus, "trigger", Trigger, lambda t: t.part.station == station and t.part.sequence == sequence
    )
    return trigger


async def decide(gateway: Gateway, trigger: Trigger) -> None:
    """What the decision service publishes for the part: a PASS, with the part as the trigger carried it."""
    decision = Decision(verdict=Verdict.VERDICT_PASS, decided_unix_ns=now_ns())
    decision.part.CopyFrom(trigger.part)
    await gateway.bus.publish(
        subject("decision", trigger.part.line, trigger.part.station),
        decision,
        msg_id=msg_id(trigger.part.inspection_id, "decision"),
    )


async def judged(gateway: Gateway, plc: RegisterPlc, sequence: int, part_id: str = "") -> Trigger:
    """Trigger `sequence` at the register PLC, decide it PASS, and wait until the PLC has its result."""
    answer = await plc.trigger(sequence, part_id=part_id)
    assert answer.busy, f"trigger {sequence} not taken: error {answer.error}"
    trigger = await trigger_of(gateway, sequence)
    await decide(gateway, trigger)
    await plc.result(sequence)
    await plc.wait_for(lambda g: not g.done)
    return trigger


@pytest.mark.parametrize("protocol", ["modbus-server", "modbus-client", "s7"])
async def test_a_register_plc_sets_the_lot_at_a_lot_change_and_every_part_carries_it(
    tmp_path: Path, started_gateway, protocol: str
) -> None:
    settings, plc = register_plc(protocol)
    async with (
        started_gateway(tmp_path, quick_deadline_ms=300, plc={"s1": settings}) as gateway,
        plc,  # type: ignore[attr-defined]
    ):
        first = await judged(gateway, plc, 1, part_id="tray-1")
        assert (first.part.lot, first.part.part_id, first.part_id) == ("", "tray-1", "tray-1")  # no lot yet
        await plc.set_lot("LOT-2026-12-A")
        second = await judged(gateway, plc, 2)
        third = await judged(gateway, plc, 3, part_id="tray-3")  # the lot stands until the PLC changes it
        await plc.set_lot("LOT-2026-12-B")
        fourth = await judged(gateway, plc, 4)
        assert [t.part.lot for t in (second, third, fourth)] == ["LOT-2026-12-A", "LOT-2026-12-A", "LOT-2026-12-B"]

        # Bytes no lot is: the trigger is refused with the lot's own code, and nothing is triggered.
        await plc.set_lot("L\xe9".encode("latin-1"))
        refused = await plc.trigger(5)
        assert (refused.error, refused.busy) == (Error.LOT_NOT_ASCII, False)
        # One more character than the field holds (32): Modbus server mode refuses the write itself
        # (exception 03, the lot register keeps what it had); where the PLC holds the field, the trigger.
        if protocol == "modbus-server":
            with pytest.raises(ConnectionError, match="write refused"):
                await plc.set_lot("L" * 33)
            await plc.set_lot("LOT-2026-12-C")
            assert (await judged(gateway, plc, 6)).part.lot == "LOT-2026-12-C"
        else:
            await plc.set_lot("L" * 33)
            refused = await plc.trigger(6)
            assert (refused.error, refused.busy) == (Error.LOT_TOO_LONG, False)
        await asyncio.sleep(0.2)
        triggered = await find(gateway.bus, "trigger", Trigger, lambda t: t.part.station == "s1")
        assert sorted(t.part.sequence for t in triggered) == [1, 2, 3, 4] + ([6] if protocol == "modbus-server" else [])


async def test_opcua_client_mode_reads_the_plcs_lot_node_with_every_trigger(tmp_path: Path, started_gateway) -> None:
    async with ServerPlc(free_port()) as plc:
        settings = {
            "protocol": "opcua-client",
            "endpoint": plc.endpoint,
            "nodes": plc.node_map(lot=True),
            "security": {"profile": "demo", "policy": "None", "pki_dir": str(tmp_path / "pki")},
            "heartbeat_ms": 100,
            "watchdog_ms": 200,
            "reconnect_ms": 50,
        }
        async with started_gateway(tmp_path / "nats", quick_deadline_ms=300, plc={"s1": settings}) as gateway:
            await wait_for(lambda: plc.read("Heartbeat"), timeout=20)  # connected: the gateway counts it up
            await plc.set_lot("LOT-C1")
            await plc.trigger_part(1, part_id="pallet-1")
            trigger = await trigger_of(gateway, 1)
            assert (trigger.part.lot, trigger.part.part_id) == ("LOT-C1", "pallet-1")
            await decide(gateway, trigger)
            await plc.result(1)
            await plc.set_lot("LOT-\u00e9")  # not printable ASCII: refused, error 12, nothing triggered
            await plc.trigger_part(2)
            await wait_for(lambda: _equals(plc.read("Error"), Error.LOT_NOT_ASCII), timeout=10)
            await plc.set_lot("L" * 65)  # more than the record holds: error 11
            await plc.trigger_part(3)
            await wait_for(lambda: _equals(plc.read("Error"), Error.LOT_TOO_LONG), timeout=10)
            await asyncio.sleep(0.2)
            assert len(await find(gateway.bus, "trigger", Trigger, lambda t: t.part.station == "s1")) == 1


async def _equals(value: Any, want: int) -> bool:
    return bool(await value == want)


async def test_the_simple_opcua_profile_sets_the_lot_with_set_lot(tmp_path: Path, started_gateway) -> None:
    async with started_gateway(tmp_path, quick_deadline_ms=300) as gateway, SimulatedPlc(gateway.endpoint) as plc:
        await plc.trigger(1, "tray-1")
        assert (await trigger_of(gateway, 1)).part.lot == ""
        await plc.set_lot("LOT-7")
        await plc.trigger(2, "tray-2")
        await plc.trigger(3)
        assert [(await trigger_of(gateway, s)).part.lot for s in (2, 3)] == ["LOT-7", "LOT-7"]
        assert (await trigger_of(gateway, 2)).part.part_id == "tray-2"

        async with Client(gateway.endpoint) as client:
            idx = await client.get_namespace_index(opcua_contract.NAMESPACE_URI)
            lot_node = client.get_node(ua.NodeId(opcua_contract.node_path("s1", opcua_contract.LOT), idx))
            assert await lot_node.read_value() == "LOT-7"
            station = client.get_node(ua.NodeId(opcua_contract.station_path("s1"), idx))
            set_lot = ua.NodeId(opcua_contract.node_path("s1", opcua_contract.SET_LOT_METHOD), idx)
            for bad, status in (
                (ua.Variant("Lös-1", ua.VariantType.String), "BadInvalidArgument"),
                (ua.Variant("L" * 65, ua.VariantType.String), "BadOutOfRange"),
                (ua.Variant(7, ua.VariantType.Int32), "BadInvalidArgument"),
            ):
                with pytest.raises(ua.UaStatusCodeError) as refused:
                    await station.call_method(set_lot, bad)
                assert type(refused.value).__name__ == status
            with pytest.raises(ua.UaStatusCodeError) as too_long_part:
                await station.call_method(
                    ua.NodeId(opcua_contract.node_path("s1", opcua_contract.TRIGGER_METHOD), idx),
                    ua.Variant(9, ua.VariantType.UInt32),
                    ua.Variant("p" * 65, ua.VariantType.String),
                )
            assert type(too_long_part.value).__name__ == "BadOutOfRange"
            assert await lot_node.read_value() == "LOT-7"  # a refused lot changes nothing
        await plc.trigger(4)
        assert (await trigger_of(gateway, 4)).part.lot == "LOT-7"
        await plc.set_lot("")
        await plc.trigger(5)
        assert (await trigger_of(gateway, 5)).part.lot == ""


async def test_opc_40100_takes_the_lot_as_the_jobs_meas_id(tmp_path: Path, started_gateway) -> None:
    async with started_gateway(tmp_path, quick_deadline_ms=300) as gateway, Client(gateway.endpoint) as client:
        s1 = await vision_system(client, "s1")
        await s1.wait_for(lambda: bool(s1.states) and s1.states[-1] == "Ready")
        job = await s1.start_single_job("LOT-40100", "carrier-3")
        [trigger] = await find(gateway.bus, "trigger", Trigger, lambda t: t.part.inspection_id == job)
        assert (trigger.part.lot, trigger.part.part_id) == ("LOT-40100", "carrier-3")
        await decide(gateway, trigger)
        await s1.wait_for(lambda: bool(s1.states) and s1.states[-1] == "Ready")
        for meas, part, status in (("Lös", "p", "BadInvalidArgument"), ("L" * 65, "p", "BadOutOfRange")):
            with pytest.raises(ua.UaStatusCodeError) as refused:
                await s1.start_single_job(meas, part)
            assert type(refused.value).__name__ == status
        with pytest.raises(ua.UaStatusCodeError) as long_part:
            await s1.start_single_job("LOT-40100", "p" * 65)
        assert type(long_part.value).__name__ == "BadOutOfRange"
        await asyncio.sleep(0.2)
        assert len(await find(gateway.bus, "trigger", Trigger, lambda t: t.part.station == "s1")) == 1


async def test_the_lot_a_plc_sets_is_the_stored_inspections_lot(tmp_path: Path, started_gateway) -> None:
    """Modbus PLC -> gateway -> bus -> results service -> SQLite: the row names the lot and part id the PLC wrote."""
    url = f"sqlite:///{tmp_path / 'lineguard.db'}"
    upgrade_database(url)
    settings, plc = register_plc("modbus-server")
    async with started_gateway(tmp_path / "nats", quick_deadline_ms=300, plc={"s1": settings}) as gateway:
        raw = gateway.config.model_dump(mode="json")
        raw["database"] = {**raw["database"], "url": url}
        stopping = asyncio.Event()
        results = asyncio.create_task(run_service("results", LineConfig(**raw), results_setup, stopping=stopping))
        engine = make_engine(url)
        try:
            async with plc:  # type: ignore[attr-defined]
                await plc.set_lot("LOT-ROW-1")
                one = await judged(gateway, plc, 1, part_id="tray-9")
                two = await judged(gateway, plc, 2)  # a bad lot next: refused, never a row
                await plc.set_lot("L\x01")
                assert (await plc.trigger(3)).error == Error.LOT_NOT_ASCII

            def rows() -> dict[str, Any]:
                with engine.connect() as conn:
                    found = conn.execute(sa.text("SELECT inspection_id, lot, part_id, plc_verdict FROM inspections"))
                    return {r.inspection_id: (r.lot, r.part_id, r.plc_verdict) for r in found}

            await wait_for(lambda: len(rows()) == 2 and all(v[2] for v in rows().values()), timeout=20)
            assert not results.done(), results
            assert rows() == {
                one.part.inspection_id: ("LOT-ROW-1", "tray-9", "PASS"),
                two.part.inspection_id: ("LOT-ROW-1", None, "PASS"),
            }
        finally:
            stopping.set()
            await asyncio.wait_for(results, 15)
            engine.dispose()
