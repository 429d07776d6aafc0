"""The gateway stopped while parts are in flight and started again, for each protocol: no part lost, none passed.

A real nats-server outlives both gateways (conftest's started_gateway, given the server and the OPC UA address
to serve again); the PLCs are the simulated ones over real connections, one per station: s1 waits up to 10 s for
a decision, s2 gives FAIL / TIMEOUT after 1 s + 0.1 s grace. Mid-run, with a part in flight at each station, the
gateway is asked to stop (SIGTERM's path): the decision that comes during the stop is delivered, the part without
one gets FAIL / TIMEOUT. Then a second gateway starts on the same addresses; the PLCs connect again (or, where the
PLC is the server, the gateway does) and s2's PLC counts from 1 again. The late decision of the part the first
gateway gave FAIL / TIMEOUT is a PASS, published while the new part with the same sequence is in flight: it must
never reach the PLC (the new gateway never triggered that inspection), and the new part gets its own FAIL."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

import pytest

from lineguard.bus import Bus
from lineguard.contracts import verdict_name
from lineguard.contracts.registers import reasons_of
from lineguard.natsserver import EmbeddedNats, free_port
from lineguard.sim.modbus import SimulatedModbusPlc, SimulatedModbusPlcServer
from lineguard.sim.plc import SimulatedPlc
from lineguard.sim.registers import RegisterPlc
from lineguard.sim.s7 import SimulatedS7Plc
from lineguard.testing.gateway import Gateway, find, publish_decision
from lineguard.testing.streams import settled
from lineguard.testing.waiting import wait_for
from lineguard.v1.decision_pb2 import Verdict
from lineguard.v1.plc_pb2 import PlcAck
from lineguard.v1.trigger_pb2 import Trigger

QUICK_DEADLINE_MS = 1000
QUICK_TIMEOUT_S = (QUICK_DEADLINE_MS + 100) / 1000
STATIONS = ("s1", "s2")
Seen = tuple[int, str, tuple[str, ...], str]  # (sequence, verdict, reasons, inspection id or "" on registers)


class OpcuaPlcs:
    """One SimulatedPlc per station; a new session on each gateway (the old one died with its server)."""

    def __init__(self) -> None:
        self.plcs: dict[str, SimulatedPlc] = {}
        self.earlier: dict[str, list[Seen]] = {s: [] for s in STATIONS}

    async def serve(self, gateway: Gateway) -> None:
        for station in STATIONS:
            old = self.plcs.pop(station, None)
            if old is not None:
                self.earlier[station] += self._seen(old)
                with contextlib.suppress(Exception):  # its server is gone: nothing to close politely
                    await asyncio.wait_for(old.__aexit__(None, None, None), 2)
            self.plcs[station] = await SimulatedPlc(gateway.endpoint, station).__aenter__()

    async def trigger(self, station: str, sequence: int) -> None:
        await self.plcs[station].trigger(sequence)

    @staticmethod
    def _seen(plc: SimulatedPlc) -> list[Seen]:
        return [(r.sequence, r.verdict, tuple(r.reasons), r.inspection_id) for r in plc.received]

    def results(self, station: str) -> list[Seen]:
        plc = self.plcs.get(station)
        return self.earlier[station] + (self._seen(plc) if plc is not None else [])

    async def close(self) -> None:
        for plc in self.plcs.values():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(plc.__aexit__(None, None, None), 2)


class RegisterPlcs:
    """One register PLC per station, alive across the restart: `reconnect` is what it does when its gateway comes
    back (Modbus server mode: connect to the new server; the PLC as the server: nothing, the gateway connects)."""

    def __init__(self, plcs: dict[str, Any], reconnect: bool) -> None:
        self.plcs: dict[str, RegisterPlc] = plcs
        self.reconnect = reconnect
        self.started = False

    async def serve(self, gateway: Gateway) -> None:
        for plc in self.plcs.values():
            if not self.started:
                await plc.__aenter__()  # type: ignore[attr-defined]
                continue
            if self.reconnect:
                plc.disconnect()  # type: ignore[attr-defined]
                await plc.connect()  # type: ignore[attr-defined]
            await plc.wait_ready()
        self.started = True

    async def trigger(self, station: str, sequence: int) -> None:
        answer = await self.plcs[station].trigger(sequence)
        assert answer.busy, f"{station} trigger {sequence} not taken: error {answer.error}"

    def results(self, station: str) -> list[Seen]:
        return [
            (r.sequence, verdict_name(r.verdict), tuple(reasons_of(r.reasons)), "") for r in self.plcs[station].results
        ]

    async def close(self) -> None:
        for plc in self.plcs.values():
            with contextlib.suppress(Exception):
                await plc.__aexit__(None, None, None)  # type: ignore[attr-defined]


REGISTER_TIMING = {"heartbeat_ms": 50, "poll_ms": 5, "plc_heartbeat_timeout_ms": 600, "reconnect_ms": 50}


def modbus_server() -> tuple[dict[str, dict[str, Any]], RegisterPlcs]:
    port = free_port()
    settings = {
        s: {"protocol": "modbus", "mode": "server", "port": port, "device_id": unit, **REGISTER_TIMING}
        for unit, s in enumerate(STATIONS, start=1)
    }
    plcs = {s: SimulatedModbusPlc("127.0.0.1", port, device_id=settings[s]["device_id"]) for s in STATIONS}
    return settings, RegisterPlcs(plcs, reconnect=True)


def modbus_client() -> tuple[dict[str, dict[str, Any]], RegisterPlcs]:
    ports = {s: free_port() for s in STATIONS}
    settings = {s: {"protocol": "modbus", "mode": "client", "port": ports[s], **REGISTER_TIMING} for s in STATIONS}
    return settings, RegisterPlcs({s: SimulatedModbusPlcServer(ports[s]) for s in STATIONS}, reconnect=False)


def s7() -> tuple[dict[str, dict[str, Any]], RegisterPlcs]:
    ports = {s: free_port() for s in STATIONS}
    settings = {s: {"protocol": "s7", "db": 100, "port": ports[s], **REGISTER_TIMING} for s in STATIONS}
    return settings, RegisterPlcs({s: SimulatedS7Plc(ports[s]) for s in STATIONS}, reconnect=False)


def opcua() -> tuple[None, OpcuaPlcs]:
    return None, OpcuaPlcs()


PROTOCOLS: dict[str, Callable[[], tuple[Any, Any]]] = {
    "opcua": opcua,
    "modbus-server": modbus_server,
    "modbus-client": modbus_client,
    "s7": s7,
}


async def triggered(bus: Bus, station: str, sequence: int, *, not_ids: tuple[str, ...] = ()) -> Trigger:
    """The trigger of `station`'s part `sequence` on the bus (not one of `not_ids`: an earlier part's)."""
    [trigger] = await find(
        bus,
        "trigger",
        Trigger,
        lambda t: t.part.station == station and t.part.sequence == sequence and t.part.inspection_id not in not_ids,
    )
    return trigger


async def results_at(plcs: Any, counts: dict[str, int], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while any(len(plcs.results(s)) < n for s, n in counts.items()) and time.monotonic() < deadline:
        await asyncio.sleep(0.02)


async def acks_of(bus: Bus, ids: set[str], timeout_s: float = 10) -> list[PlcAck]:
    """The stored acks of those inspections, once each has one (each look reads the whole stream again)."""
    deadline = time.monotonic() + timeout_s
    while True:
        acks = await find(bus, "ack", PlcAck, lambda a: a.part.inspection_id in ids, timeout=2)
        if {a.part.inspection_id for a in acks} >= ids or time.monotonic() > deadline:
            return acks


@pytest.mark.parametrize("protocol", list(PROTOCOLS))
async def test_a_gateway_restarted_mid_run_loses_no_part_and_hands_over_no_stale_result(
    tmp_path, started_gateway, protocol: str
) -> None:
    nats = EmbeddedNats(store_dir=tmp_path / "nats", log_file=tmp_path / "nats.log").start()
    endpoint = f"opc.tcp://127.0.0.1:{free_port()}/lineguard/"
    plc_settings, plcs = PROTOCOLS[protocol]()
    same_line: dict[str, Any] = {"nats": nats, "endpoint": endpoint, "plc": plc_settings}
    try:
        async with started_gateway(tmp_path / "first", quick_deadline_ms=QUICK_DEADLINE_MS, **same_line) as first:
            await plcs.serve(first)
            await plcs.trigger("s1", 1)
            await publish_decision(first.bus, (await triggered(first.bus, "s1", 1)).part, Verdict.VERDICT_PASS)
            await results_at(plcs, {"s1": 1}, timeout_s=10)
            # A part in flight at each station when the stop comes.
            await plcs.trigger("s1", 2)
            waiting = await triggered(first.bus, "s1", 2)
            await plcs.trigger("s2", 1)
            timed_out = await triggered(first.bus, "s2", 1)
            first.stopping.set()
            await publish_decision(first.bus, waiting.part, Verdict.VERDICT_REWORK, "DEFECT_SPUR")
            await asyncio.wait_for(first.service, timeout=QUICK_TIMEOUT_S + 10)
        before_restart = {s: plcs.results(s) for s in STATIONS}

        async with started_gateway(tmp_path / "second", quick_deadline_ms=QUICK_DEADLINE_MS, **same_line) as second:
            await plcs.serve(second)
            # s2's PLC counts from 1 again: a new part under the old part's sequence ...
            await plcs.trigger("s2", 1)
            again = await triggered(second.bus, "s2", 1, not_ids=(timed_out.part.inspection_id,))
            # ... while the old part's decision comes at last, a PASS: stale, never to be handed over.
            await publish_decision(second.bus, timed_out.part, Verdict.VERDICT_PASS)
            await plcs.trigger("s1", 3)
            third = await triggered(second.bus, "s1", 3)
            await publish_decision(second.bus, third.part, Verdict.VERDICT_FAIL, "DEFECT_SHORT")
            await results_at(plcs, {"s1": 3, "s2": 2}, timeout_s=QUICK_TIMEOUT_S + 10)
            await wait_for(lambda: settled(second.bus, "decision", "gateway-decision"), timeout=10)
            await asyncio.sleep(0.3)  # a result handed over twice, or a stale one, would be here by now
            after_restart = {s: plcs.results(s) for s in STATIONS}
            ids = {t.part.inspection_id for t in (waiting, timed_out, again, third)}
            acks = await acks_of(second.bus, ids)
    finally:
        await plcs.close()
        nats.stop()

    def shown(seen: list[Seen]) -> list[tuple[int, str, tuple[str, ...]]]:
        return [(sequence, verdict, reasons) for sequence, verdict, reasons, _ in seen]

    # The stop answered both parts in flight: the decision that came, and FAIL / TIMEOUT for the one that did not.
    assert shown(before_restart["s1"]) == [(1, "PASS", ()), (2, "REWORK", ("DEFECT_SPUR",))]
    assert shown(before_restart["s2"]) == [(1, "FAIL", ("TIMEOUT",))]
    # After the restart: each new part its own result, and the stale PASS handed to nobody.
    assert shown(after_restart["s1"]) == [*shown(before_restart["s1"]), (3, "FAIL", ("DEFECT_SHORT",))]
    assert shown(after_restart["s2"]) == [(1, "FAIL", ("TIMEOUT",)), (1, "FAIL", ("TIMEOUT",))]
    if protocol == "opcua":  # the events name their inspection: the new part's result is the new part's
        assert [i for *_, i in after_restart["s2"]] == [timed_out.part.inspection_id, again.part.inspection_id]
    # Every part is on record once, as the PLC got it: the stale decision's "not delivered" is not stored over
    # the FAIL / TIMEOUT the PLC was given (the same message id).
    by_part = {}
    for ack in acks:
        by_part.setdefault(ack.part.inspection_id, []).append(ack)
    assert sorted(len(a) for a in by_part.values()) == [1, 1, 1, 1], by_part
    got = {i: (a[0].verdict, a[0].delivered, a[0].gateway_timeout) for i, a in by_part.items()}
    assert got == {
        waiting.part.inspection_id: (Verdict.VERDICT_REWORK, True, False),
        timed_out.part.inspection_id: (Verdict.VERDICT_FAIL, True, True),
        again.part.inspection_id: (Verdict.VERDICT_FAIL, True, True),
        third.part.inspection_id: (Verdict.VERDICT_FAIL, True, False),
    }
