"""A PLC protocol added from a test module, through the seam alone (no library file names it).

This module is the protocol "loopback": KEY, Settings with an option of its own (`slot`) and
open_endpoints, registered with PLC_PROTOCOLS.register. Its endpoint lives in this process: the
test plays the PLC through it, calling the trigger callback the gateway gave it and reading the
results the gateway delivered. The gateway is the real service (its setup, run_service) on a
real nats-server, so the handshake it runs is the one every protocol gets."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import pytest
import yaml
from pydantic import Field, ValidationError

from lineguard.bus import Bus
from lineguard.config import PLC_PROTOCOLS, ConfigError, LineConfig, PlcSettings, parse_config
from lineguard.contracts import stream_name, subject
from lineguard.natsserver import EmbeddedNats
from lineguard.services.gateway.endpoint import PlcEndpoint, TriggerHandler
from lineguard.services.gateway.handshake import Result
from lineguard.services.gateway.service import setup
from lineguard.testing import running_service
from lineguard.testing.gateway import publish_decision
from lineguard.testing.streams import collect
from lineguard.v1.decision_pb2 import Verdict
from lineguard.v1.plc_pb2 import PlcAck
from lineguard.v1.trigger_pb2 import Trigger

KEY = "loopback"
QUICK_TIMEOUT_S = 0.3 + 0.1  # s2: recipe deadline + gateway grace


class Settings(PlcSettings):
    protocol: Literal["loopback"] = "loopback"
    slot: int = Field(0, ge=0, le=15, description="which of the bench's 16 station slots the station is wired to")


@dataclass
class LoopbackEndpoint:
    """One bench serving every loopback station: what the gateway showed each station, as it showed it."""

    stations: tuple[str, ...]
    on_trigger: TriggerHandler
    slots: dict[str, int]
    protocol: str = KEY
    started: bool = False
    stopped: bool = False
    beats: int = 0
    results: dict[str, list[Result]] = field(default_factory=dict)
    busy: dict[str, list[bool]] = field(default_factory=dict)
    errors: dict[str, list[str | None]] = field(default_factory=dict)

    async def start(self) -> None:
        self.started = True

    async def stop(self) -> None:
        self.stopped = True

    async def run_heartbeat(self, stopping: asyncio.Event) -> None:
        while not stopping.is_set():
            self.beats += 1
            await asyncio.sleep(0.05)

    async def deliver(self, station: str, result: Result) -> None:
        self.results.setdefault(station, []).append(result)

    async def set_busy(self, station: str, busy: bool) -> None:
        self.busy.setdefault(station, []).append(busy)

    async def set_error(self, station: str, reason: str | None) -> None:
        self.errors.setdefault(station, []).append(reason)

    async def result_for(self, station: str, inspection_id: str, timeout_s: float = 10.0) -> Result:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            got = [r for r in self.results.get(station, []) if r.inspection_id == inspection_id]
            if got:
                return got[0]
            await asyncio.sleep(0.01)
        raise AssertionError(f"no result for {inspection_id} at {station} within {timeout_s} s")


OPENED: list[LoopbackEndpoint] = []


def open_endpoints(stations: Sequence[tuple[str, Settings]], on_trigger: TriggerHandler) -> list[PlcEndpoint]:
    endpoint = LoopbackEndpoint(tuple(s for s, _ in stations), on_trigger, {s: plc.slot for s, plc in stations})
    OPENED.append(endpoint)
    return [endpoint]


@pytest.fixture(autouse=True)
def loopback_protocol() -> Iterator[None]:
    # Registered for this module's tests only: other tests see the protocols the package declares.
    PLC_PROTOCOLS.register(sys.modules[__name__])
    yield
    PLC_PROTOCOLS.unregister(KEY)


LineDict = Callable[..., dict[str, Any]]


@pytest.fixture
def line_dict(line_config_dict: LineDict) -> LineDict:
    """The demo line with two stations on the loopback bench: s1 waits 10 s for a decision, s2 (recipe "quick")
    gives FAIL / TIMEOUT after 0.3 s + 0.1 s grace."""

    def make(nats_url: str = "nats://127.0.0.1:1") -> dict[str, Any]:
        raw = line_config_dict(nats_url=nats_url, deadline_ms=10_000, gateway={"result_grace_ms": 100})
        raw["recipes"]["quick"] = {**raw["recipes"]["pcb-a"], "deadline_ms": 300}
        raw["stations"][0]["plc"] = {"protocol": KEY, "slot": 3}
        raw["stations"].append(
            {**raw["stations"][0], "id": "s2", "recipe": "quick", "plc": {"protocol": KEY, "slot": 4}}
        )
        return raw

    return make


def test_a_line_naming_the_protocol_validates(line_dict: LineDict) -> None:
    assert PLC_PROTOCOLS.settings_class(KEY) is Settings
    config = parse_config(yaml.safe_dump(line_dict()), "line.yaml")
    s1, s2 = (config.station(s).plc for s in ("s1", "s2"))
    assert isinstance(s1, Settings) and isinstance(s2, Settings)
    assert (s1.protocol, s1.slot, s2.slot) == (KEY, 3, 4)


def test_a_bad_option_of_the_protocol_fails_with_its_field_path(line_dict: LineDict) -> None:
    raw = line_dict()
    raw["stations"][0]["plc"]["slot"] = 99
    with pytest.raises(ValidationError) as invalid:
        LineConfig(**raw)
    assert [e["loc"] for e in invalid.value.errors()] == [("stations", 0, "plc", "slot")]
    with pytest.raises(ConfigError) as err:
        parse_config(yaml.safe_dump(raw), "line.yaml")
    [problem] = err.value.problems
    assert problem.path == "stations[0].plc.slot"
    assert "less than or equal to 15" in problem.message
    # Another protocol's option is not this one's.
    raw["stations"][0]["plc"] = {"protocol": KEY, "endpoint": "opc.tcp://127.0.0.1:4840/"}
    with pytest.raises(ConfigError, match=r"stations\[0\]\.plc\.endpoint: unknown field"):
        parse_config(yaml.safe_dump(raw), "line.yaml")


async def test_the_gateway_triggers_and_delivers_through_the_protocol(
    fresh_nats: EmbeddedNats, line_dict: LineDict
) -> None:
    OPENED.clear()
    config = LineConfig(**line_dict(fresh_nats.url))
    bus = await Bus.connect(config.nats, "seam-test")
    try:
        async with running_service("gateway", config, setup):
            [endpoint] = OPENED  # one bench for both stations: grouping them is the protocol's business
            assert endpoint.started and endpoint.stations == ("s1", "s2") and endpoint.slots == {"s1": 3, "s2": 4}

            # s1: the PLC triggers (and retries), the decision comes, the PLC gets it once.
            inspection_id = await endpoint.on_trigger("s1", 7, "tray-7")
            assert await endpoint.on_trigger("s1", 7, "tray-7") == inspection_id
            [msg] = await collect(bus, subject("trigger", "l1", "s1"), stream_name("trigger"), 1)
            trigger = Trigger.FromString(msg.data)
            assert (trigger.part.inspection_id, trigger.part.sequence) == (inspection_id, 7)
            assert (trigger.part_id, trigger.source) == ("tray-7", KEY)
            assert endpoint.busy["s1"] == [True]
            await publish_decision(bus, trigger.part, Verdict.VERDICT_REWORK, "DEFECT_SPUR")
            result = await endpoint.result_for("s1", inspection_id)
            assert (result.verdict, result.reasons, result.gateway_timeout) == (
                Verdict.VERDICT_REWORK,
                ("DEFECT_SPUR",),
                False,
            )
            assert endpoint.busy["s1"] == [True, False]

            # s2: no decision in time, so the gateway's own FAIL / TIMEOUT.
            asked = time.monotonic()
            timing_out_id = await endpoint.on_trigger("s2", 1, "")
            result = await endpoint.result_for("s2", timing_out_id)
            assert QUICK_TIMEOUT_S <= time.monotonic() - asked < QUICK_TIMEOUT_S + 2
            assert (result.verdict, result.reasons, result.gateway_timeout) == (
                Verdict.VERDICT_FAIL,
                ("TIMEOUT",),
                True,
            )

            acks = [PlcAck.FromString(m.data) for m in await collect(bus, "lg.ack.>", stream_name("ack"), 2)]
            assert sorted(
                (a.part.inspection_id, a.verdict, a.protocol, a.delivered, a.gateway_timeout) for a in acks
            ) == sorted(
                [
                    (inspection_id, Verdict.VERDICT_REWORK, KEY, True, False),
                    (timing_out_id, Verdict.VERDICT_FAIL, KEY, True, True),
                ]
            )
            assert [len(endpoint.results[s]) for s in ("s1", "s2")] == [1, 1]
            assert endpoint.beats > 0
        assert endpoint.stopped
    finally:
        await bus.close()
