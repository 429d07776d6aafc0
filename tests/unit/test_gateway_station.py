"""A station's link: triggers to the bus, one result to the PLC, one ack per inspection.

The PLC side here is a recording PlcEndpoint (the OPC UA one is tested against a
real server in tests/integration/test_gateway_opcua.py); the bus side is a
recording publish function that can be told to fail or to hang (a bus that never
answers, as NATS away does until the publish timeout). Triggers and acks reach it
through the station's outbox, run by `flush` (or the test's own task)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from google.protobuf.message import Message

from lineguard.bus import BadMessage
from lineguard.config import LineConfig
from lineguard.services.gateway.endpoint import NotHandedOver, TriggerRefused
from lineguard.services.gateway.handshake import Handshake, Outcome, Result
from lineguard.services.gateway.outbox import RETRY_S
from lineguard.services.gateway.station import READ_BACK_STAGE, StationLink, StationLinks, station_timeout_s
from lineguard.v1.decision_pb2 import Decision, Verdict
from lineguard.v1.trigger_pb2 import Trigger


@dataclass
class RecordingPlc:
    protocol: str = "opcua"
    stations: tuple[str, ...] = ("s1",)
    results: list[Result] = field(default_factory=list)
    busy: list[bool] = field(default_factory=list)
    listening: bool = True  # False: no session listens, deliver raises NotHandedOver
    handing: asyncio.Event | None = None  # set: deliver waits for it (a slow PLC write)

    async def on_trigger(self, station: str, sequence: int, part_id: str) -> str:
        raise AssertionError("these tests trigger the link directly")

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def run_heartbeat(self, stopping: asyncio.Event) -> None: ...

    async def deliver(self, station: str, result: Result) -> None:
        assert station in self.stations
        self.results.append(result)
        if self.handing is not None:
            await self.handing.wait()
        if not self.listening:
            raise NotHandedOver("nobody listens")

    async def set_busy(self, station: str, busy: bool) -> None:
        assert station in self.stations
        self.busy.append(busy)


@dataclass
class RecordingBus:
    sent: list[tuple[str, Message, str | None]] = field(default_factory=list)
    failures: int = 0  # the next this many publishes raise
    up: asyncio.Event = field(default_factory=asyncio.Event)  # cleared: every publish waits until it is set

    def __post_init__(self) -> None:
        self.up.set()

    async def publish(self, kind: str, message: Message, *, stage: str | None = None) -> None:
        await self.up.wait()
        if self.failures:
            self.failures -= 1
            raise ConnectionError("nats: no responders")
        self.sent.append((kind, message, stage))

    def of(self, kind: str) -> list:
        return [m for k, m, _ in self.sent if k == kind]


async def flush(lk: StationLink, timeout: float = 2.0) -> None:
    """Run the station's outbox until the bus has taken everything in it."""
    stopping = asyncio.Event()
    task = asyncio.create_task(lk.run_outbox(stopping))
    deadline = time.monotonic() + timeout
    while lk.outbox and time.monotonic() < deadline:
        await asyncio.sleep(0.005)
    stopping.set()
    await task


def link(timeout_s: float = 5.0, **options: int) -> tuple[StationLink, RecordingPlc, RecordingBus]:
    bus = RecordingBus()
    plc = RecordingPlc()
    lk = StationLink(Handshake(line="l1", station="s1", recipe_id="pcb-a", timeout_s=timeout_s), bus.publish, **options)
    lk.attach(plc)
    return lk, plc, bus


def decision_for(trigger: Trigger, verdict: int = Verdict.VERDICT_PASS, *reasons: str) -> Decision:
    d = Decision(verdict=verdict, reason_codes=list(reasons))
    d.part.CopyFrom(trigger.part)
    return d


async def test_trigger_publishes_a_trigger_and_shows_busy() -> None:
    lk, plc, bus = link()
    inspection_id = await lk.trigger(3, "tray-1")
    await flush(lk)
    [trig] = bus.of("trigger")
    assert trig.part.inspection_id == inspection_id
    assert (trig.part.sequence, trig.part.recipe_id, trig.part_id, trig.source) == (3, "pcb-a", "tray-1", "opcua")
    assert plc.busy == [True]


async def test_a_trigger_the_bus_refuses_is_accepted_and_published_on_a_retry() -> None:
    lk, _, bus = link()
    bus.failures = 2
    inspection_id = await lk.trigger(3, "")
    assert await lk.trigger(3, "") == inspection_id  # the PLC's retry: same inspection, not queued again
    await flush(lk)
    assert [t.part.inspection_id for t in bus.of("trigger")] == [inspection_id]
    assert lk.handshake.in_flight == 1 and lk.unpublished == 0


async def test_trigger_answers_at_once_while_the_bus_hangs_and_is_refused_when_the_outbox_is_full() -> None:
    lk, _, bus = link(outbox_limit=3)
    bus.up.clear()  # every publish waits: NATS away
    stopping = asyncio.Event()
    outbox = asyncio.create_task(lk.run_outbox(stopping))
    ids = [await asyncio.wait_for(lk.trigger(seq, ""), timeout=0.05) for seq in (1, 2, 3)]
    with pytest.raises(TriggerRefused, match="trigger 4 of station s1 refused: 3 messages wait for the bus"):
        await asyncio.wait_for(lk.trigger(4, ""), timeout=0.05)
    assert await lk.trigger(2, "") == ids[1]  # a part in flight is still found
    assert lk.handshake.in_flight == 3
    bus.up.set()
    while lk.outbox:
        await asyncio.sleep(0.005)
    stopping.set()
    await outbox
    assert [t.part.inspection_id for t in bus.of("trigger")] == ids
    assert await lk.trigger(4, "")  # taken again once the bus took the backlog


async def test_decision_reaches_the_plc_once_with_one_ack() -> None:
    lk, plc, bus = link()
    await lk.trigger(1, "")
    await flush(lk)
    [trig] = bus.of("trigger")
    d = decision_for(trig, Verdict.VERDICT_FAIL, "DEFECT_SHORT")
    assert (await lk.on_decision(d)).outcome is Outcome.ON_TIME
    assert (await lk.on_decision(d)).outcome is Outcome.DUPLICATE  # a redelivered decision
    await flush(lk)
    assert [(r.verdict, r.reasons) for r in plc.results] == [(Verdict.VERDICT_FAIL, ("DEFECT_SHORT",))]
    assert plc.busy == [True, False]
    [ack] = bus.of("ack")  # the duplicate's ack is the first one, in the outbox until the bus takes it
    assert ack.delivered and not ack.gateway_timeout and ack.protocol == "opcua"
    assert ack.part.inspection_id == trig.part.inspection_id


async def test_no_decision_in_time_gives_fail_timeout_and_the_late_one_is_not_delivered() -> None:
    lk, plc, bus = link(timeout_s=0.05)
    await lk.trigger(1, "")
    await flush(lk)
    [trig] = bus.of("trigger")
    await asyncio.sleep(0.06)
    await lk.expire_due()
    await flush(lk)
    [result] = plc.results
    assert (result.verdict, result.reasons, result.gateway_timeout) == (Verdict.VERDICT_FAIL, ("TIMEOUT",), True)
    [ack] = bus.of("ack")
    assert ack.gateway_timeout and ack.verdict == Verdict.VERDICT_FAIL and list(ack.reason_codes) == ["TIMEOUT"]
    resolution = await lk.on_decision(decision_for(trig, Verdict.VERDICT_PASS))
    assert resolution.outcome is Outcome.LATE
    assert len(plc.results) == 1  # the PLC never sees the late PASS


async def test_a_decision_after_the_deadline_is_late_even_before_the_timer_ran() -> None:
    lk, plc, bus = link(timeout_s=0.05)
    await lk.trigger(1, "")
    await flush(lk)
    await asyncio.sleep(0.06)
    resolution = await lk.on_decision(decision_for(bus.of("trigger")[0], Verdict.VERDICT_PASS))
    assert resolution.outcome is Outcome.LATE
    assert [r.reasons for r in plc.results] == [("TIMEOUT",)]


async def test_fail_timeout_reaches_the_plc_on_time_while_the_bus_hangs() -> None:
    # Defect 3: the deadline loop awaited each ack's publish, so with the bus away every later FAIL / TIMEOUT waited
    # a publish timeout. Now the acks wait in the outbox and the deadlines keep their time.
    lk, plc, bus = link(timeout_s=0.1)
    stopping = asyncio.Event()
    tasks = [asyncio.create_task(lk.run_deadlines(stopping)), asyncio.create_task(lk.run_outbox(stopping))]
    bus.up.clear()
    started = time.monotonic()
    for seq in (1, 2, 3):
        await lk.trigger(seq, "")
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.15)
    arrived = time.monotonic() - started
    assert [r.reasons for r in plc.results] == [("TIMEOUT",)] * 3, f"after {arrived:.2f} s"
    assert bus.sent == [] and lk.unpublished == 6  # three triggers, three acks
    bus.up.set()
    while lk.outbox:
        await asyncio.sleep(0.005)
    stopping.set()
    await asyncio.gather(*tasks)
    acks = bus.of("ack")
    assert [a.part.sequence for a in acks] == [1, 2, 3] and all(a.gateway_timeout and a.delivered for a in acks)


async def test_a_result_nobody_listened_for_is_not_delivered_until_the_plc_reads_it_back() -> None:
    lk, plc, bus = link(timeout_s=0.01)
    plc.listening = False
    inspection_id = await lk.trigger(7, "")
    await asyncio.sleep(0.02)
    await lk.expire_due()
    await flush(lk)
    [ack] = bus.of("ack")
    assert not ack.delivered and ack.gateway_timeout
    assert lk.read_result(8) is None  # never triggered
    read = lk.read_result(7)
    assert read is not None and read.inspection_id == inspection_id and read.reasons == ("TIMEOUT",)
    assert lk.read_result(7) == read  # read again: the same, recorded once
    await flush(lk)
    [_, (kind, again, stage)] = bus.sent[1:]
    assert (kind, stage) == ("ack", READ_BACK_STAGE)
    assert again.delivered and again.part.inspection_id == inspection_id
    assert again.delivered_unix_ns >= ack.delivered_unix_ns
    await lk.trigger(7, "")  # the PLC's counter came round again: the older part is no longer read under 7
    assert lk.read_result(7) is None


async def test_deadline_loop_delivers_the_timeout_without_any_decision() -> None:
    lk, plc, _ = link(timeout_s=0.1)
    stopping = asyncio.Event()
    loop = asyncio.create_task(lk.run_deadlines(stopping))
    await lk.trigger(1, "")
    await asyncio.sleep(0.25)
    stopping.set()
    await loop
    assert [r.reasons for r in plc.results] == [("TIMEOUT",)]


async def test_a_link_is_not_settled_while_a_timeout_is_being_handed_to_the_plc() -> None:
    # CI caught it: the handshake closes the part at its deadline before the PLC write; a stop that looked then saw
    # no part in flight and an empty outbox, ended the outbox, and the FAIL / TIMEOUT's ack was never published.
    lk, plc, bus = link(timeout_s=0.01)
    plc.handing = asyncio.Event()
    await lk.trigger(1, "")
    await flush(lk)
    await asyncio.sleep(0.02)
    expiring = asyncio.create_task(lk.expire_due())
    while not plc.results:
        await asyncio.sleep(0.001)
    assert not lk.handshake.busy and not lk.outbox  # what the stop used to look at
    assert not lk.settled
    plc.handing.set()
    await expiring
    assert not lk.settled  # the ack waits in the outbox
    await flush(lk)
    assert lk.settled and [a.gateway_timeout for a in bus.of("ack")] == [True]


@pytest.fixture
def config(line_config_dict) -> Callable[..., LineConfig]:
    """`config(**sections)`: the demo line with a 1.2 s recipe deadline."""

    def make(**sections: object) -> LineConfig:
        return LineConfig(
            **line_config_dict(opcua_endpoint="opc.tcp://127.0.0.1:4840/lineguard/", deadline_ms=1200, **sections)
        )

    return make


def test_gateway_deadline_is_the_recipes_plus_grace(config) -> None:
    assert station_timeout_s(config(gateway={"result_grace_ms": 300}), "s1") == pytest.approx(1.5)


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (
            lambda d: setattr(d.part, "station", "s9"),
            "is for station 's9', which this gateway does not serve (stations: s1)",
        ),
        (lambda d: setattr(d.part, "line", "l2"), "is for line 'l2'; this gateway serves line 'l1'"),
        (
            lambda d: setattr(d, "verdict", Verdict.VERDICT_UNSPECIFIED),
            "has verdict 0 (UNSPECIFIED); a PLC can only be",
        ),
        (lambda d: setattr(d, "verdict", 17), "has verdict 17 (not a Verdict value)"),
    ],
)
def test_route_refuses_a_decision_it_cannot_deliver(mutate, reason: str, config) -> None:
    links = StationLinks(config(), RecordingBus().publish)
    d = Decision(verdict=Verdict.VERDICT_PASS)
    d.part.inspection_id, d.part.line, d.part.station = "id-1", "l1", "s1"
    assert links.route(d) is links.links["s1"]
    mutate(d)
    with pytest.raises(BadMessage, match=reason.replace("(", r"\(").replace(")", r"\)")):
        links.route(d)


async def test_the_outbox_retries_an_ack_the_bus_refused() -> None:
    lk, plc, bus = link(timeout_s=0.05)
    stopping = asyncio.Event()
    tasks = [asyncio.create_task(lk.run_deadlines(stopping)), asyncio.create_task(lk.run_outbox(stopping))]
    await lk.trigger(1, "")
    await asyncio.sleep(0.01)
    bus.failures = 2  # the timeout's ack is refused twice, then published; nothing else wakes the outbox
    await asyncio.sleep(0.05 + 3 * RETRY_S)
    stopping.set()
    await asyncio.gather(*tasks)
    assert [r.reasons for r in plc.results] == [("TIMEOUT",)]
    [ack] = bus.of("ack")
    assert ack.gateway_timeout and lk.unpublished == 0 and lk.settled
