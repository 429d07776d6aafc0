"""Golden-part self-tests run by the gateway on its schedule and on a PLC's command (docs/drift.md): a real gateway
and nats-server, the decision service's part played on the bus (each golden part's trigger answered with the
verdict the test chooses), real PLC clients: the simulated Modbus PLC raising `selftest` on s2 and reading
`selftest_state`, an asyncua client starting an OPC 40100 job with IsSimulated on s1. Golden parts' verdicts never
reach the PLC as a production result (no `done`, no ack, ResultReady only with IsSimulated true)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from asyncua import Client, ua

from lineguard.bus import Bus
from lineguard.contracts import stream_name
from lineguard.contracts.registers import NO_RESULT, SelfTestState
from lineguard.natsserver import free_port
from lineguard.samples import SAMPLE_BOARDS
from lineguard.sim.modbus import SimulatedModbusPlc
from lineguard.testing.gateway import Gateway, find, publish_decision
from lineguard.testing.machine_vision import RESULT_READY, vision_system
from lineguard.testing.waiting import wait_for
from lineguard.v1.decision_pb2 import Verdict
from lineguard.v1.drift_pb2 import SelfTestReport
from lineguard.v1.plc_pb2 import PlcAck
from lineguard.v1.trigger_pb2 import Trigger

pytestmark = pytest.mark.asyncio(loop_scope="module")

GOOD = {"name": "good", "image": str(SAMPLE_BOARDS / "00041000_temp.jpg"), "expect": "PASS"}
SPUR = {"name": "spur", "image": str(SAMPLE_BOARDS / "00041000_test.jpg"), "expect": "FAIL", "reasons": ["DEFECT_SPUR"]}
SCHEDULE_S = 0.2  # s1's interval: short, so its runs come while the test waits for them (none is timed)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def gateway(tmp_path_factory: pytest.TempPathFactory, started_gateway) -> AsyncIterator[Gateway]:
    modbus = {"protocol": "modbus", "mode": "server", "port": free_port(), "poll_ms": 5, "heartbeat_ms": 50}
    modbus["plc_heartbeat_timeout_ms"] = 0  # the connection is the partner
    stations = {
        "s1": {"selftest": {"interval_s": SCHEDULE_S, "timeout_s": 5, "cases": [GOOD]}},
        "s2": {"selftest": {"interval_s": 0, "timeout_s": 5, "cases": [GOOD, SPUR]}},  # on command only
    }
    async with started_gateway(
        tmp_path_factory.mktemp("selftest-command-nats"), quick_deadline_ms=300, plc={"s2": modbus}, stations=stations
    ) as started:
        yield started


def structure(name: str, identifier: str) -> object:
    """A 40100 id structure (MeasIdDataType, ...), made by asyncua from the NodeSet the client loaded."""
    return getattr(ua, name)(Id=identifier)


class GoldenJudge:
    """The decision service for golden parts: each one's trigger answered with `verdicts[case]`."""

    def __init__(self, bus: Bus):
        self.bus = bus
        self.verdicts: dict[str, tuple[Verdict, tuple[str, ...]]] = {
            "good": (Verdict.VERDICT_PASS, ()),
            "spur": (Verdict.VERDICT_FAIL, ("DEFECT_SPUR",)),
        }
        self.judged: list[Trigger] = []

    async def run(self) -> None:
        sub = await self.bus.js.pull_subscribe("lg.trigger.>", stream=stream_name("trigger"))
        try:
            while True:
                try:
                    msgs = await sub.fetch(50, timeout=0.2)
                except Exception:  # noqa: BLE001 - nothing new yet
                    continue
                for msg in msgs:
                    await msg.ack()
                    trigger = Trigger.FromString(msg.data)
                    if trigger.part.simulated:
                        self.judged.append(trigger)
                        verdict, reasons = self.verdicts[trigger.part.golden_case]
                        await publish_decision(self.bus, trigger.part, verdict, *reasons)
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()


@pytest_asyncio.fixture(loop_scope="module")
async def judge(gateway: Gateway) -> AsyncIterator[GoldenJudge]:
    judge = GoldenJudge(gateway.bus)
    task = asyncio.create_task(judge.run())
    try:
        yield judge
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def reports(gateway: Gateway, station: str, request_id: str) -> list[SelfTestReport]:
    return await find(
        gateway.bus,
        "selftest",
        SelfTestReport,
        lambda r: r.part.station == station and r.request_id == request_id,
        timeout=0.5,
    )


async def test_the_schedule_runs_a_station_every_interval_and_never_one_on_command_only(
    gateway: Gateway, judge: GoldenJudge
) -> None:
    async def scheduled_runs() -> bool:
        return len(await reports(gateway, "s1", "")) >= 3

    await wait_for(scheduled_runs)
    runs = await reports(gateway, "s1", "")
    assert all(
        not r.changed and [(c.name, c.verdict) for c in r.cases] == [("good", Verdict.VERDICT_PASS)] for r in runs
    )
    # One run after the other: each started after the one before finished.
    ordered = sorted(runs, key=lambda r: r.started_unix_ns)
    assert all(a.finished_unix_ns <= b.started_unix_ns for a, b in itertools.pairwise(ordered))
    goldens = [t for t in judge.judged if t.part.station == "s1"]
    assert goldens and all(t.source == "selftest" and t.part.golden_case == "good" for t in goldens)
    assert not await reports(gateway, "s2", "")  # interval 0: on command only


async def test_a_modbus_plc_asks_for_the_self_test_and_reads_its_outcome_not_a_result(
    gateway: Gateway, judge: GoldenJudge
) -> None:
    port = gateway.config.station("s2").plc.port  # type: ignore[attr-defined]
    async with SimulatedModbusPlc("127.0.0.1", port, device_id=1) as plc:
        assert (await plc.read_gateway()).selftest_state == SelfTestState.NONE
        await plc.set("selftest", 1)
        fields = await plc.wait_for(lambda g: g.selftest_state == SelfTestState.AS_EXPECTED)
        # Golden parts are not production results: nothing in verdict / done, no ack on the bus.
        assert (fields.done, fields.busy, fields.verdict, fields.result_sequence) == (False, False, NO_RESULT, 0)
        [report] = await reports(gateway, "s2", "plc")
        assert [(c.name, c.verdict, c.changed) for c in report.cases] == [
            ("good", Verdict.VERDICT_PASS, False),
            ("spur", Verdict.VERDICT_FAIL, False),
        ]
        golden_ids = {c.inspection_id for c in report.cases}
        acks = await find(gateway.bus, "ack", PlcAck, lambda a: a.part.inspection_id in golden_ids, timeout=1.0)
        assert not acks

        # The spur board now passes: an outcome changed, and the PLC reads 3 (CHANGED) after the next edge.
        judge.verdicts["spur"] = (Verdict.VERDICT_PASS, ())
        await plc.set("selftest", 0)
        await plc.set("selftest", 1)
        await plc.wait_for(lambda g: g.selftest_state == SelfTestState.CHANGED)
        changed = [r for r in await reports(gateway, "s2", "plc") if r.changed]
        assert [c.name for c in changed[0].cases if c.changed] == ["spur"]
        # A production part still gets its result as before.
        answer = await plc.trigger(5, part_id="real")
        assert answer.busy
        [trigger] = await find(
            gateway.bus, "trigger", Trigger, lambda t: t.part.station == "s2" and t.part.sequence == 5
        )
        await publish_decision(gateway.bus, trigger.part, Verdict.VERDICT_PASS)
        result = await plc.result(5)
        assert result.verdict == "PASS"
        assert (await plc.read_gateway()).selftest_state == SelfTestState.CHANGED  # kept until the next run


async def test_an_opc_40100_job_in_simulation_mode_is_the_self_test_and_its_results_say_so(
    gateway: Gateway, judge: GoldenJudge
) -> None:
    auto = ("VisionStateMachine", "AutomaticModeStateMachine")
    async with Client(gateway.endpoint) as client:
        s1 = await vision_system(client, "s1")
        on = [ua.Variant(True, ua.VariantType.Boolean), ua.Variant(1, ua.VariantType.Int32), "golden check"]
        assert await s1.call((*auto, "SimulationMode"), *on) == 0
        job_id = await s1.start_single_job("golden-check", "")

        def of_job() -> list[dict]:
            return [r for r in s1.results() if r["JobId"].Id == job_id]

        await s1.wait_for(lambda: bool(of_job()))
        [result] = of_job()
        assert result["EventType"] == ua.NodeId(RESULT_READY, s1.idx)  # type: ignore[arg-type]
        assert result["IsSimulated"] is True and result["MeasId"].Id == "golden-check"
        assert [v.Value for v in result["ResultContent"]][:2] == [Verdict.VERDICT_PASS, "PASS"]
        golden = [t for t in judge.judged if t.part.inspection_id == result["ResultId"].Id]
        assert golden and golden[0].part.simulated and golden[0].part.golden_case == "good"
        with pytest.raises(ua.UaStatusCodeError, match="BadNotSupported"):  # a self-test is one job
            await s1.call(
                (*auto, "StartContinuous"),
                *(structure(t, "") for t in ("MeasIdDataType", "PartIdDataType")),
                structure("RecipeIdExternalDataType", ""),
                structure("ProductIdDataType", ""),
            )

        # Out of SimulationMode, a job is a production part again: its result is not simulated.
        off = [ua.Variant(False, ua.VariantType.Boolean), ua.Variant(0, ua.VariantType.Int32), ""]
        assert await s1.call((*auto, "SimulationMode"), *off) == 0
        production = await s1.start_single_job("real", "p")
        [trigger] = await find(gateway.bus, "trigger", Trigger, lambda t: t.part.inspection_id == production)
        assert not trigger.part.simulated
        await publish_decision(gateway.bus, trigger.part, Verdict.VERDICT_FAIL, "DEFECT_OPEN")
        await s1.wait_for(lambda: any(r["ResultId"].Id == production for r in s1.results()))
        [real] = [r for r in s1.results() if r["ResultId"].Id == production]
        assert real["IsSimulated"] is False
        with pytest.raises(ua.UaStatusCodeError, match="BadInvalidArgument"):
            await s1.call((*auto, "SimulationMode"), "yes", ua.Variant(0, ua.VariantType.Int32), "")
