"""A station's link: triggers to the bus, one result to the PLC, one ack per inspection.

The PLC side here is a recording PlcEndpoint (the OPC UA one is tested against a
real server in tests/integration/test_gateway_opcua.py); the bus side is a
recording publish function that can be told to fail."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from google.protobuf.message import Message

from lineguard.bus import BadMessage
from lineguard.config import LineConfig
from lineguard.services.gateway.endpoint import TriggerRefused
from lineguard.services.gateway.handshake import Handshake, Outcome, Result
from lineguard.services.gateway.station import ACK_RETRY_S, StationLink, StationLinks, station_timeout_s
from lineguard.v1.decision_pb2 import Decision, Verdict
from lineguard.v1.plc_pb2 import PlcAck
from lineguard.v1.trigger_pb2 import Trigger


@dataclass
class RecordingPlc:
    protocol: str = "opcua"
    stations: tuple[str, ...] = ("s1",)
    results: list[Result] = field(default_factory=list)
    busy: list[bool] = field(default_factory=list)

    async def on_trigger(self, station: str, sequence: int, part_id: str) -> str:
        raise AssertionError("these tests trigger the link directly")

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def run_heartbeat(self, stopping: asyncio.Event) -> None: ...

    async def deliver(self, station: str, result: Result) -> None:
        assert station in self.stations
        self.results.append(result)

    async def set_busy(self, station: str, busy: bool) -> None:
        assert station in self.stations
        self.busy.append(busy)


@dataclass
class RecordingBus:
    sent: list[tuple[str, Message]] = field(default_factory=list)
    failures: int = 0  # the next this many publishes raise

    async def publish(self, kind: str, message: Message) -> None:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("nats: no responders")
        self.sent.append((kind, message))

    def of(self, kind: str) -> list:
        return [m for k, m in self.sent if k == kind]


def link(timeout_s: float = 5.0) -> tuple[StationLink, RecordingPlc, RecordingBus]:
    bus = RecordingBus()
    plc = RecordingPlc()
    lk = StationLink(Handshake(line="l1", station="s1", recipe_id="pcb-a", timeout_s=timeout_s), bus.publish)
    lk.attach(plc)
    return lk, plc, bus


def decision_for(trigger: Trigger, verdict: int = Verdict.VERDICT_PASS, *reasons: str) -> Decision:
    d = Decision(verdict=verdict, reason_codes=list(reasons))
    d.part.CopyFrom(trigger.part)
    return d


async def test_trigger_publishes_a_trigger_and_shows_busy() -> None:
    lk, plc, bus = link()
    inspection_id = await lk.trigger(3, "tray-1")
    [trig] = bus.of("trigger")
    assert trig.part.inspection_id == inspection_id
    assert (trig.part.sequence, trig.part.recipe_id, trig.part_id, trig.source) == (3, "pcb-a", "tray-1", "opcua")
    assert plc.busy == [True]


async def test_trigger_not_published_is_refused_and_the_retry_gets_the_same_id() -> None:
    lk, _, bus = link()
    bus.failures = 1
    with pytest.raises(TriggerRefused, match="trigger 3 of station s1 not published"):
        await lk.trigger(3, "")
    inspection_id = await lk.trigger(3, "")
    assert [t.part.inspection_id for t in bus.of("trigger")] == [inspection_id]
    assert lk.handshake.in_flight == 1


async def test_decision_reaches_the_plc_once_with_one_ack() -> None:
    lk, plc, bus = link()
    await lk.trigger(1, "")
    [trig] = bus.of("trigger")
    d = decision_for(trig, Verdict.VERDICT_FAIL, "DEFECT_SHORT")
    assert (await lk.on_decision(d)).outcome is Outcome.ON_TIME
    assert (await lk.on_decision(d)).outcome is Outcome.DUPLICATE  # a redelivered decision
    assert [(r.verdict, r.reasons) for r in plc.results] == [(Verdict.VERDICT_FAIL, ("DEFECT_SHORT",))]
    assert plc.busy == [True, False]
    acks: list[PlcAck] = bus.of("ack")
    # Both acks carry the same inspection (the bus stores them once by message id) and the same content.
    assert all(a == acks[0] for a in acks)
    assert acks[0].delivered and not acks[0].gateway_timeout and acks[0].protocol == "opcua"
    assert acks[0].part.inspection_id == trig.part.inspection_id


async def test_no_decision_in_time_gives_fail_timeout_and_the_late_one_is_not_delivered() -> None:
    lk, plc, bus = link(timeout_s=0.05)
    await lk.trigger(1, "")
    [trig] = bus.of("trigger")
    await asyncio.sleep(0.06)
    await lk.expire_due()
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
    await asyncio.sleep(0.06)
    resolution = await lk.on_decision(decision_for(bus.of("trigger")[0], Verdict.VERDICT_PASS))
    assert resolution.outcome is Outcome.LATE
    assert [r.reasons for r in plc.results] == [("TIMEOUT",)]


async def test_timeout_ack_not_published_is_retried() -> None:
    lk, plc, bus = link(timeout_s=0.01)
    await lk.trigger(1, "")
    await asyncio.sleep(0.02)
    bus.failures = 1
    await lk.expire_due()
    assert len(plc.results) == 1 and bus.of("ack") == []
    await lk.expire_due()
    assert len(plc.results) == 1 and len(bus.of("ack")) == 1


async def test_deadline_loop_delivers_the_timeout_without_any_decision() -> None:
    lk, plc, _ = link(timeout_s=0.1)
    stopping = asyncio.Event()
    loop = asyncio.create_task(lk.run_deadlines(stopping))
    await lk.trigger(1, "")
    await asyncio.sleep(0.25)
    stopping.set()
    await loop
    assert [r.reasons for r in plc.results] == [("TIMEOUT",)]


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


async def test_deadline_loop_retries_an_ack_the_bus_refused_on_its_next_tick() -> None:
    lk, plc, bus = link(timeout_s=0.05)
    stopping = asyncio.Event()
    loop = asyncio.create_task(lk.run_deadlines(stopping))
    await lk.trigger(1, "")
    bus.failures = 2  # the timeout's ack is refused twice, then published; nothing else wakes the loop
    await asyncio.sleep(0.05 + 3 * ACK_RETRY_S)
    stopping.set()
    await loop
    assert [r.reasons for r in plc.results] == [("TIMEOUT",)]
    [ack] = bus.of("ack")
    assert ack.gateway_timeout and lk.unpublished_acks == 0 and lk.settled
