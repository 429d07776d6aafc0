"""A gateway under test, driven from the bus side: its handles, waiting until it serves, what it published, the
decision service's part (publishing a decision) and the capture service's (publishing a part's frame)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import Message

from lineguard.bus import Bus
from lineguard.config import LineConfig
from lineguard.contracts import msg_id, new_inspection_id, now_ns, stream_name, subject
from lineguard.natsserver import EmbeddedNats
from lineguard.v1.common_pb2 import Part
from lineguard.v1.decision_pb2 import Decision, Verdict
from lineguard.v1.drift_pb2 import DriftLevel, DriftState
from lineguard.v1.frame_pb2 import Frame


@dataclass
class Gateway:
    config: LineConfig
    endpoint: str
    bus: Bus
    stopping: asyncio.Event  # set to ask the gateway to stop
    service: asyncio.Task  # the gateway itself
    nats: EmbeddedNats | None = None  # its nats-server, for tests that stop and restart it


async def service_ready(
    bus: Bus, service: asyncio.Task, timeout: float = 60.0, ready: asyncio.Event | None = None
) -> None:
    """The decision consumer exists once setup is done, and setup starts the OPC UA server. `ready`: the event
    run_service sets once it serves, for a gateway started again (its durable consumer is there already)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if service.done():
            service.result()  # raises what stopped it
        if ready is not None:
            if ready.is_set():
                return
            await asyncio.sleep(0.05)
            continue
        try:
            await bus.js.consumer_info(stream_name("decision"), "gateway-decision")
            return
        except Exception:  # noqa: BLE001 - not yet: the consumer is made when the gateway is ready
            await asyncio.sleep(0.1)
    raise AssertionError("the gateway did not get ready in time")


async def find(
    bus: Bus,
    kind: str,
    message_type: type[Message],
    match: Callable[[Any], bool],
    *,
    subj: str | None = None,
    timeout: float = 10.0,
) -> list:
    """Every stored `kind` message that `match`es, waiting until there is at least one. `match` sees the decoded
    message, or for "dead" the raw one (its headers say why it died)."""
    sub = await bus.js.pull_subscribe(subj or f"lg.{kind}.>", stream=stream_name(kind))
    found: list = []
    deadline = time.monotonic() + timeout
    try:
        while not found and time.monotonic() < deadline:
            try:
                msgs = await sub.fetch(100, timeout=0.3)
            except Exception:  # noqa: BLE001 - nothing new yet
                continue
            for msg in msgs:
                await msg.ack()
                if kind == "dead":
                    if match(msg):
                        found.append(msg)
                else:
                    message = message_type.FromString(msg.data)
                    if match(message):
                        found.append(message)
    finally:
        await sub.unsubscribe()
    return found


async def publish_decision(bus: Bus, part: Part, verdict: Verdict, *reasons: str) -> Decision:
    decision = Decision(verdict=verdict, reason_codes=list(reasons))
    decision.part.CopyFrom(part)
    await bus.publish(
        subject("decision", part.line, part.station), decision, msg_id=msg_id(part.inspection_id, "decision")
    )
    return decision


async def publish_frame(bus: Bus, part: Part) -> Frame:
    """What the capture service publishes once it has a part's image (a tiny one: the gateway reads no image)."""
    frame = Frame(camera_id="test-camera", captured_unix_ns=time.time_ns(), width=1, height=1, channels=1)
    frame.part.CopyFrom(part)
    frame.encoding, frame.data = "png", b"\x89PNG"
    await bus.publish(subject("frame", part.line, part.station), frame, msg_id=msg_id(part.inspection_id, "frame"))
    return frame


async def publish_drift(bus: Bus, line: str, station: str, level: DriftLevel, detail: str = "") -> DriftState:
    """What the results service's drift watch publishes for a station (services/results/drift.py)."""
    state = DriftState(
        part=Part(inspection_id=new_inspection_id(), line=line, station=station),
        level=level,
        detail=detail,
        computed_unix_ns=now_ns(),
    )
    await bus.publish(subject("drift", line, station), state, msg_id=msg_id(state.part.inspection_id, "drift"))
    return state
