"""A gateway SIGKILLed with a part in flight, and started again: no PASS for a part nobody judged, no stale result.

Unlike test_gateway_restart.py (a stop asked for: the parts in flight answered first), nothing here lets the
gateway finish: it runs as its own process, `python -m lineguard.services.gateway --config line.yaml` as a
supervisor starts it, and gets SIGKILL while part 2 is triggered and undecided. A real nats-server outlives it,
the results service (in this process) writes the records into a SQLite file, and the PLC is the simulated one
over a real connection (Modbus TCP with the gateway as the server, S7 with the PLC's DB, OPC UA).

What must hold:
- while the gateway is dead the PLC is given nothing for part 2: its own watchdog sees the gateway's heartbeat
  stop (registers) or its connection go (OPC UA), and the outputs it holds are not a pass for part 2;
- the new gateway has no result for sequence 2 to read back; the PLC triggers part 2 again (its counter did not
  move: the part got no result);
- the killed part's decision, a PASS that comes only now, while the new part 2 is in flight, is handed to nobody
  (the new gateway never triggered that inspection): recorded as not delivered; the new part 2 gets its own
  result, a FAIL, once;
- the records agree: part 1 PASS delivered, the killed part 2 judged PASS but never at the PLC
  (plc_delivered_at NULL), the new part 2 FAIL delivered; one row each."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from lineguard.bus import Bus
from lineguard.config import LineConfig
from lineguard.contracts import msg_id, now_ns, subject, verdict_name
from lineguard.natsserver import EmbeddedNats, free_port
from lineguard.runtime.service import run_service
from lineguard.services.results.db import make_engine, upgrade_database
from lineguard.services.results.service import setup as results_setup
from lineguard.sim.lineconfig import write_config
from lineguard.sim.modbus import SimulatedModbusPlc
from lineguard.sim.plc import SimulatedPlc
from lineguard.sim.registers import RegisterPlc
from lineguard.sim.s7 import SimulatedS7Plc
from lineguard.testing.gateway import find
from lineguard.testing.waiting import wait_for
from lineguard.v1.decision_pb2 import Decision, Verdict
from lineguard.v1.plc_pb2 import PlcAck
from lineguard.v1.trigger_pb2 import Trigger

HEARTBEAT_MS = 50
PLC_WATCHDOG_S = 0.5  # the PLC fails its part when the gateway's heartbeat has not moved this long (10 beats)
REGISTERS = {"heartbeat_ms": HEARTBEAT_MS, "poll_ms": 5, "plc_heartbeat_timeout_ms": 600, "reconnect_ms": 50}


class GatewayProcess:
    """The gateway as its own OS process, started again on the same configuration after it is killed."""

    def __init__(self, config_path: Path, logs: Path) -> None:
        self.config_path, self.logs = config_path, logs
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        with open(self.logs / f"gateway-{self.starts}.log", "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "lineguard.services.gateway", "--config", str(self.config_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
                start_new_session=True,
            )

    def kill(self) -> None:
        assert self.process is not None and self.process.poll() is None, "the gateway is not running"
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)
        assert self.process.returncode == -signal.SIGKILL

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)

    def log(self) -> str:
        return "\n".join((self.logs / f"gateway-{n}.log").read_text() for n in range(1, self.starts + 1))


class RegisterSide:
    """A register PLC alive across the kill (for Modbus server mode it connects to the new server)."""

    def __init__(self, plc: Any, reconnects: bool) -> None:
        self.plc: RegisterPlc = plc
        self.reconnects = reconnects
        self.started = False

    async def serve(self) -> None:
        if not self.started:
            await self.plc.__aenter__()  # type: ignore[attr-defined]
            self.started = True
            return
        if self.reconnects:
            self.plc.disconnect()  # type: ignore[attr-defined]
            await self.plc.connect()  # type: ignore[attr-defined]
        await self.plc.wait_ready()

    async def trigger(self, sequence: int) -> None:
        answer = await self.plc.trigger(sequence)
        assert answer.busy, f"trigger {sequence} not taken: error {answer.error}"

    async def gateway_lost(self) -> None:
        """The PLC's watchdog: the gateway's heartbeat has stood still for PLC_WATCHDOG_S."""
        await wait_for(lambda: self.plc.gateway_silent_s() > PLC_WATCHDOG_S, timeout=10)
        shown = self.plc.gateway
        # What the PLC holds from the dead gateway is no pass for part 2 (done low: no result to act on).
        assert not (shown.done and shown.result_sequence == 2), shown

    def results(self) -> list[tuple[int, str]]:
        return [(r.sequence, verdict_name(r.verdict)) for r in self.plc.results]

    async def read_back(self, sequence: int) -> None:
        return None  # registers have no read-back: what `done` shows is all

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.plc.__aexit__(None, None, None)  # type: ignore[attr-defined]


class OpcuaSide:
    """One SimulatedPlc session per gateway (the old session died with the killed process)."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.plc: SimulatedPlc | None = None
        self.earlier: list[tuple[int, str]] = []

    async def serve(self) -> None:
        if self.plc is not None:
            self.earlier += [(r.sequence, r.verdict) for r in self.plc.received]
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.plc.__aexit__(None, None, None), 2)
        self.plc = await SimulatedPlc(self.endpoint, "s1").__aenter__()

    async def trigger(self, sequence: int) -> None:
        assert self.plc is not None
        await self.plc.trigger(sequence)

    async def gateway_lost(self) -> None:
        plc = self.plc
        assert plc is not None
        await wait_for(lambda: bool(plc.connection_losses), timeout=10)

    def results(self) -> list[tuple[int, str]]:
        return self.earlier + ([(r.sequence, r.verdict) for r in self.plc.received] if self.plc else [])

    async def read_back(self, sequence: int) -> Any:
        assert self.plc is not None
        return await self.plc.read_result(sequence)

    async def close(self) -> None:
        if self.plc is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.plc.__aexit__(None, None, None), 2)


def modbus_server(endpoint: str) -> tuple[dict[str, Any], RegisterSide]:
    port = free_port()
    settings = {"protocol": "modbus", "mode": "server", "port": port, **REGISTERS}
    return settings, RegisterSide(SimulatedModbusPlc("127.0.0.1", port, connect_timeout_s=60), reconnects=True)


def s7(endpoint: str) -> tuple[dict[str, Any], RegisterSide]:
    port = free_port()
    settings = {"protocol": "s7", "db": 100, "port": port, **REGISTERS}
    return settings, RegisterSide(SimulatedS7Plc(port, ready_timeout_s=60), reconnects=False)


def opcua(endpoint: str) -> tuple[dict[str, Any], OpcuaSide]:
    return {"protocol": "opcua", "endpoint": endpoint, "security": {"profile": "demo"}}, OpcuaSide(endpoint)


PROTOCOLS: dict[str, Callable[[str], tuple[dict[str, Any], Any]]] = {
    "modbus-server": modbus_server,
    "s7": s7,
    "opcua": opcua,
}


@dataclass
class Line:
    bus: Bus
    engine: sa.Engine


@contextlib.asynccontextmanager
async def results_service(config: LineConfig, url: str, bus: Bus) -> AsyncIterator[Line]:
    stopping = asyncio.Event()
    task = asyncio.create_task(run_service("results", config, results_setup, stopping=stopping))
    engine = make_engine(url)
    try:
        yield Line(bus, engine)
    finally:
        stopping.set()
        await asyncio.wait_for(task, 15)
        engine.dispose()


async def decide(bus: Bus, trigger: Trigger, verdict: Verdict, *reasons: str) -> None:
    """What the decision service publishes for the part."""
    decision = Decision(verdict=verdict, reason_codes=list(reasons), decided_unix_ns=now_ns())
    decision.part.CopyFrom(trigger.part)
    part = trigger.part
    await bus.publish(
        subject("decision", part.line, part.station), decision, msg_id=msg_id(part.inspection_id, "decision")
    )


async def triggered(bus: Bus, sequence: int, not_ids: tuple[str, ...] = ()) -> Trigger:
    [trigger] = await find(
        bus, "trigger", Trigger, lambda t: t.part.sequence == sequence and t.part.inspection_id not in not_ids
    )
    return trigger


def rows(engine: sa.Engine) -> dict[str, tuple[int, str, str | None, bool]]:
    with engine.connect() as conn:
        found = conn.execute(
            sa.text("SELECT inspection_id, sequence, verdict, plc_verdict, plc_delivered_at FROM inspections")
        )
        return {r.inspection_id: (r.sequence, r.verdict, r.plc_verdict, r.plc_delivered_at is not None) for r in found}


@pytest.mark.parametrize("protocol", list(PROTOCOLS))
async def test_a_gateway_killed_with_a_part_in_flight_gives_no_unjudged_pass_and_no_stale_result(
    tmp_path: Path, line_config_dict, protocol: str
) -> None:
    nats = EmbeddedNats(store_dir=tmp_path / "nats", log_file=tmp_path / "nats.log").start()
    endpoint = f"opc.tcp://127.0.0.1:{free_port()}/lineguard/"
    url = f"sqlite:///{tmp_path / 'lineguard.db'}"
    upgrade_database(url)
    raw = line_config_dict(nats_url=nats.url, database_url=url, opcua_endpoint=endpoint, deadline_ms=10_000)
    settings, plc = PROTOCOLS[protocol](endpoint)
    raw["stations"][0]["plc"] = settings
    raw["gateway"] = {"result_grace_ms": 100}
    config = LineConfig(**raw)
    gateway = GatewayProcess(write_config(tmp_path / "line.yaml", raw), tmp_path)
    bus = await Bus.connect(config.nats, "kill-test")
    try:
        async with results_service(config, url, bus) as line:
            gateway.start()
            await plc.serve()
            await plc.trigger(1)
            first = await triggered(bus, 1)
            await decide(bus, first, Verdict.VERDICT_PASS)
            await wait_for(lambda: plc.results() == [(1, "PASS")], timeout=10)

            await plc.trigger(2)
            killed = await triggered(bus, 2)  # on the bus: the part is in flight, nobody has judged it
            gateway.kill()
            await plc.gateway_lost()
            await asyncio.sleep(0.5)
            assert plc.results() == [(1, "PASS")]  # nothing for part 2 while the gateway is dead

            gateway.start()
            await plc.serve()
            assert await plc.read_back(2) is None  # the new gateway gave sequence 2 no result: none to read
            await plc.trigger(2)  # the part again: it got no result
            again = await triggered(bus, 2, not_ids=(killed.part.inspection_id,))
            # The killed part's decision comes only now, a PASS, while the new part under the same sequence is in
            # flight: the worst moment for a stale result. The new gateway never triggered that inspection.
            await decide(bus, killed, Verdict.VERDICT_PASS)
            await asyncio.sleep(0.5)
            assert plc.results() == [(1, "PASS")]
            await decide(bus, again, Verdict.VERDICT_FAIL, "DEFECT_SHORT")
            await wait_for(lambda: len(plc.results()) >= 2, timeout=10)
            await asyncio.sleep(0.5)  # a stale or doubled result would be here by now
            assert plc.results() == [(1, "PASS"), (2, "FAIL")]

            ids = {first.part.inspection_id, killed.part.inspection_id, again.part.inspection_id}
            acks = await find(bus, "ack", PlcAck, lambda a: a.part.inspection_id in ids)
            by_part: dict[str, list[PlcAck]] = {}
            for ack in acks:
                by_part.setdefault(ack.part.inspection_id, []).append(ack)
            assert {i: [(a.verdict, a.delivered) for a in got] for i, got in by_part.items()} == {
                first.part.inspection_id: [(Verdict.VERDICT_PASS, True)],
                killed.part.inspection_id: [(Verdict.VERDICT_PASS, False)],  # the new gateway's "not delivered"
                again.part.inspection_id: [(Verdict.VERDICT_FAIL, True)],
            }
            await wait_for(lambda: len(rows(line.engine)) == 3 and all(r[2] for r in rows(line.engine).values()))
            assert rows(line.engine) == {
                first.part.inspection_id: (1, "PASS", "PASS", True),
                killed.part.inspection_id: (2, "PASS", "PASS", False),  # judged, never at the PLC
                again.part.inspection_id: (2, "FAIL", "FAIL", True),
            }
            assert "decision for an inspection not triggered here" in gateway.log()
    except BaseException:
        print(gateway.log())  # what the gateway processes said, for the failure's report
        raise
    finally:
        await plc.close()
        gateway.stop()
        await bus.close()
        nats.stop()
