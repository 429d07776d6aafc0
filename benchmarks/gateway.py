"""Decision -> PLC: the gateway's delivery of a result against a raw asyncua event, same run, same client.

Gateway: the gateway service in-process (its OPC UA server on loopback, an embedded nats-server), a real asyncua
client subscribed to station s1's result events (the PLC side). Each sample: the client calls Trigger (not
timed), then the decision is published on the bus and timed from the publish call until the client's event
callback receives that inspection's result event.

Raw: a bare asyncua server in the same process with the same five result variables and the same event type;
timed from writing the five variables (one write_attribute_value each) and emitting the event until the same
kind of client receives it.

The station serves --profiles (default simple: the Stations/<id> nodes the client watches; with machine-vision
the gateway also sends each result as an OPC 40100 ResultReady event and writes it into a slot of the 40100
Results folder, on the same event loop). Both clients use the same
subscription (publishing interval --publishing-interval-ms, default 0: the server sends
a notification at once; at the simulated PLC's 10 ms both sides wait up to one interval more). Rounds alternate
which side goes first; the figures are the medians over rounds and their ranges; the last line is JSON.

Modbus TCP and S7 (--protocols modbus,s7): the gateway is the client of a simulated PLC's registers (Modbus
`mode: client` against lineguard.sim.modbus's pymodbus server; S7 against snap7's own server holding the DB,
lineguard.sim.s7). Each sample: the PLC raises its trigger and the gateway answers busy (not timed); then the
decision is published and timed until the PLC's memory holds `done` with that result_sequence (seen in the
server's write hook: pymodbus's action on the event loop, snap7's write event in its server thread). Raw: a
bare pymodbus AsyncModbusTcpClient / snap7 AsyncClient writing the same registers (the result's verdict,
reasons, result_sequence, busy and done, the same write(s) the gateway makes) into a second server of the same
kind, timed the same way. In Modbus server mode the gateway writes its own memory and the PLC's next poll reads
it: that mode adds the PLC's poll period, which is the PLC's, and is not measured here.

--breakdown: where the gateway side's time goes, by timestamps in this process (perf_counter_ns): the publish call,
the gateway's decision handler starting (StationLink.on_decision: the bus hop, JetStream and the consumer's pull
included), the handshake done and the result handed to the endpoint (StationLink._hand_over), the PLC side seeing
it (the protocol's write); and, over the run, every garbage collection (gc.callbacks: start, end, generation) and
every stall of the event loop (a 1 ms ticker waking more than --stall-ms late) with the main thread's CPU time in
it: near the stall's length when this process's code held the loop, near 0 when the OS ran others instead. The
slowest 1 % of samples are then told by what overlapped them. The ticker costs the loop a wakeup a millisecond:
compare figures of runs with it only with each other.

    python benchmarks/gateway.py [--protocols opcua,modbus,s7] [--results 200] [--rounds 5]
        [--publishing-interval-ms 0] [--breakdown] [--stall-ms 1]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import json
import logging
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from asyncua import Client, Node, Server, ua
from pymodbus.client import AsyncModbusTcpClient
from snap7 import AsyncClient
from snap7.server import EVC_DATA_WRITE

from lineguard.bus import Bus
from lineguard.config import LineConfig
from lineguard.contracts import msg_id, subject
from lineguard.contracts import opcua as contract
from lineguard.contracts.registers import VERDICTS, GatewayFields, Layout
from lineguard.natsserver import EmbeddedNats, free_port
from lineguard.runtime.logging import configure_logging
from lineguard.runtime.service import run_service
from lineguard.sim.lineconfig import demo_config_dict
from lineguard.sim.modbus import SimulatedModbusPlcServer
from lineguard.sim.plc import subscription_parameters
from lineguard.sim.s7 import SimulatedS7Plc
from lineguard.testing.gateway import service_ready
from lineguard.testing.rounds import medians_and_ranges
from lineguard.v1.common_pb2 import Part
from lineguard.v1.decision_pb2 import Decision, Verdict
from lineguard.v1.trigger_pb2 import Trigger

STATION = "s1"
RAW_NAMESPACE = "urn:lineguard:bench:raw"
INITIAL: dict[str, Any] = {
    contract.RESULT_SEQUENCE: 0,
    contract.RESULT_INSPECTION_ID: "",
    contract.RESULT_VERDICT: 0,
    contract.RESULT_REASONS: "",
    contract.RESULT_TIMESTAMP: datetime(1601, 1, 1, tzinfo=UTC),
}


def variant(name: str, value: Any) -> ua.Variant:
    ua_type = next(f.ua_type for f in contract.RESULT_FIELDS if f.name == name)
    return ua.Variant(value, ua.VariantType[ua_type])


class EventClock:
    """A subscription's handler: when each inspection's result event arrived (perf_counter_ns)."""

    def __init__(self) -> None:
        self.waiting: dict[str, asyncio.Future[int]] = {}

    def expect(self, inspection_id: str) -> asyncio.Future[int]:
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.waiting[inspection_id] = future
        return future

    def event_notification(self, event: Any) -> None:
        arrived = time.perf_counter_ns()
        inspection_id = getattr(event, contract.RESULT_INSPECTION_ID, None)
        future = self.waiting.pop(inspection_id, None) if inspection_id else None
        if future is not None and not future.done():
            future.set_result(arrived)


async def subscribe(client: Client, source: Node, event_type: Node, interval_ms: float) -> EventClock:
    clock = EventClock()
    subscription = await client.create_subscription(subscription_parameters(interval_ms), clock)
    await subscription.subscribe_events(source, event_type, queuesize=0xFFFFFFFF)
    return clock


Sample = Callable[[int], Awaitable[float]]  # one result's latency in ms


Stack = list[Callable[[], Awaitable[None]]]  # what to close, in reverse order


@dataclasses.dataclass
class Breakdown:
    """--breakdown's timestamps (perf_counter_ns), by inspection id, and the run's collections and loop stalls."""

    stall_ns: int
    published: dict[str, int] = dataclasses.field(default_factory=dict)
    handled: dict[str, int] = dataclasses.field(default_factory=dict)  # the gateway's decision handler started
    handed: dict[str, int] = dataclasses.field(default_factory=dict)  # the handshake is done: to the endpoint
    arrived: dict[str, int] = dataclasses.field(default_factory=dict)  # the PLC side saw the result
    # The loop thread's CPU time from the publish call until the sample had its answer: the work of this process
    # (gateway, PLC side, bus client) in a sample; the rest of its wall time the OS gave the CPUs to others.
    cpu: dict[str, int] = dataclasses.field(default_factory=dict)
    collections: list[tuple[int, int, int]] = dataclasses.field(default_factory=list)  # (start, end, generation)
    # (when the ticker was due, when it ran, the main thread's CPU time in between: near the stall's length when code
    # of this process held the loop, near 0 when the OS ran other processes instead)
    stalls: list[tuple[int, int, int]] = dataclasses.field(default_factory=list)
    _gc_started: int = 0
    full_collection: dict[str, Any] = dataclasses.field(default_factory=dict)

    def time_full_collection(self) -> None:
        """What one full collection costs this process while the gateway runs (its objects, the PLC side's, the bus
        client's): a gen-2 collection holds the event loop that long whenever the collector's thresholds start one."""
        cpu = time.thread_time_ns()
        gc.collect()
        self.full_collection = {
            "full_collection_cpu_ms": round((time.thread_time_ns() - cpu) / 1e6, 3),
            "tracked_objects": len(gc.get_objects()),
            "frozen_objects": gc.get_freeze_count(),
        }

    def install(self) -> None:
        from lineguard.services.gateway import station

        link = station.StationLink
        on_decision, hand_over = link.on_decision, link._hand_over
        marks = self

        async def timed_on_decision(self: Any, decision: Decision) -> Any:
            marks.handled.setdefault(decision.part.inspection_id, time.perf_counter_ns())
            return await on_decision(self, decision)

        async def timed_hand_over(self: Any, result: Any) -> bool:
            marks.handed.setdefault(result.inspection_id, time.perf_counter_ns())
            return await hand_over(self, result)

        link.on_decision = timed_on_decision  # type: ignore[method-assign]
        link._hand_over = timed_hand_over  # type: ignore[method-assign]
        gc.callbacks.append(self._on_gc)

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        now = time.perf_counter_ns()
        if phase == "start":
            self._gc_started = now
        else:
            self.collections.append((self._gc_started, now, int(info["generation"])))

    async def tick(self, stopping: asyncio.Event) -> None:
        while not stopping.is_set():
            due, cpu = time.perf_counter_ns() + 1_000_000, time.thread_time_ns()
            await asyncio.sleep(0.001)
            ran = time.perf_counter_ns()
            if ran - due > self.stall_ns:
                self.stalls.append((due, ran, time.thread_time_ns() - cpu))

    def report(self, protocol: str, ids: list[str]) -> dict[str, Any]:
        """Per segment p50 / p99 over the gateway side's samples, and what the slowest 1 % overlapped."""
        complete = [i for i in ids if all(i in t for t in (self.handled, self.handed, self.arrived, self.cpu))]
        segments = {
            "cpu": [self.cpu[i] / 1e6 for i in complete],
            "bus": [(self.handled[i] - self.published[i]) / 1e6 for i in complete],
            "handshake": [(self.handed[i] - self.handled[i]) / 1e6 for i in complete],
            "endpoint": [(self.arrived[i] - self.handed[i]) / 1e6 for i in complete],
        }
        total = {i: (self.arrived[i] - self.published[i]) / 1e6 for i in complete}
        cut = pct(list(total.values()), 99)
        slow = [i for i in complete if total[i] >= cut]

        def overlapping(i: str) -> list[tuple[int, int, int]]:
            return [(a, b, c) for a, b, c in self.stalls if a < self.arrived[i] and b > self.published[i]]

        tail = []
        for i in sorted(slow, key=lambda i: -total[i]):
            gcs = [c for c in self.collections if c[0] < self.arrived[i] and c[1] > self.published[i]]
            stalls = overlapping(i)
            tail.append(
                {
                    "total_ms": round(total[i], 3),
                    "cpu_ms": round(self.cpu[i] / 1e6, 3),
                    "bus_ms": round((self.handled[i] - self.published[i]) / 1e6, 3),
                    "handshake_ms": round((self.handed[i] - self.handled[i]) / 1e6, 3),
                    "endpoint_ms": round((self.arrived[i] - self.handed[i]) / 1e6, 3),
                    "gc": [(g, round((b - a) / 1e6, 3)) for a, b, g in gcs],
                    "stall_ms": round(sum(b - a for a, b, _ in stalls) / 1e6, 3),
                    "stall_cpu_ms": round(sum(c for _, _, c in stalls) / 1e6, 3),
                }
            )
        in_samples = sorted({s for i in complete for s in overlapping(i)})
        first = min((self.published[i] for i in complete), default=0)
        by_gen: dict[int, list[float]] = {}
        for a, b, g in self.collections:
            if a >= first:  # from the first timed sample on (the gateway's start and the warm-up left out)
                by_gen.setdefault(g, []).append((b - a) / 1e6)
        out = {
            "protocol": protocol,
            "samples": len(complete),
            "segments_p50_p99_ms": {k: (round(pct(v, 50), 3), round(pct(v, 99), 3)) for k, v in segments.items()},
            # Collections while the rounds ran, by generation: how many, the longest (ms, wall).
            "collections": {g: (len(v), round(max(v), 3)) for g, v in sorted(by_gen.items())},
            # Stalls while a sample was timed (setup's left out): how many, the longest, the CPU share.
            "stalls_in_samples": len(in_samples),
            "stall_max_ms": round(max(((b - a) / 1e6 for a, b, _ in in_samples), default=0.0), 3),
            "stall_cpu_share": round(sum(c for *_, c in in_samples) / max(1, sum(b - a for a, b, _ in in_samples)), 3),
            "slowest_1pct": tail,
        }
        out.update(self.full_collection)
        print(f"{protocol} breakdown: {json.dumps(out)}", flush=True)
        return out


BREAKDOWN: Breakdown | None = None
FREEZE = True  # --no-gc-freeze: False


def mark(table: str, inspection_id: str, at: int) -> None:
    if BREAKDOWN is not None:
        getattr(BREAKDOWN, table)[inspection_id] = at


async def start_gateway(store: Path, stack: Stack, endpoint: str, plc: dict[str, Any] | None) -> tuple[LineConfig, Bus]:
    """The gateway service in-process on its own nats-server (station s1's plc settings `plc`, or the OPC UA server at
    `endpoint`), and the decision service's connection to the bus, once the gateway serves."""
    from lineguard.services.gateway.service import setup  # loads the protocols' libraries only when benchmarked

    nats = EmbeddedNats(store_dir=store / "nats").start()
    stack.append(lambda: asyncio.to_thread(nats.stop))
    raw = demo_config_dict(
        nats_url=nats.url,
        database_url=f"sqlite:///{store / 'unused.db'}",
        opcua_endpoint=endpoint,
        deadline_ms=10_000,
        plc=plc,
    )
    config = LineConfig(**raw)
    stopping = asyncio.Event()
    service = asyncio.create_task(run_service("gateway", config, setup, stopping=stopping))

    async def stop_gateway() -> None:
        stopping.set()
        await asyncio.wait_for(service, timeout=30)

    stack.append(stop_gateway)
    bus = await Bus.connect(config.nats, "bench-decision")
    stack.append(bus.close)
    await service_ready(bus, service)
    return config, bus


async def publish_pass(bus: Bus, part: Part) -> None:
    decision = Decision(part=part, verdict=Verdict.VERDICT_PASS)
    await bus.publish(
        subject("decision", part.line, part.station), decision, msg_id=msg_id(part.inspection_id, "decision")
    )


async def gateway_side(store: Path, interval_ms: float, profiles: list[str], stack: Stack) -> Sample:
    endpoint = f"opc.tcp://127.0.0.1:{free_port()}/lineguard/"
    plc = {"protocol": "opcua", "endpoint": endpoint, "security": {"profile": "demo"}, "profiles": profiles}
    config, bus = await start_gateway(store, stack, endpoint, plc)

    client = Client(endpoint)
    await client.connect()
    stack.append(client.disconnect)
    idx = await client.get_namespace_index(contract.NAMESPACE_URI)
    station = client.get_node(ua.NodeId(contract.station_path(STATION), idx))
    trigger = client.get_node(ua.NodeId(contract.node_path(STATION, contract.TRIGGER_METHOD), idx))
    clock = await subscribe(client, station, client.get_node(ua.NodeId(contract.EVENT_TYPE, idx)), interval_ms)

    async def sample(sequence: int) -> float:
        inspection_id = await station.call_method(
            trigger.nodeid, ua.Variant(sequence, ua.VariantType.UInt32), ua.Variant("", ua.VariantType.String)
        )
        part = Part(
            inspection_id=inspection_id, line=config.line, station=STATION, recipe_id="pcb-a", sequence=sequence
        )
        arrived = clock.expect(inspection_id)
        started = time.perf_counter_ns()
        mark("published", inspection_id, started)
        cpu = time.thread_time_ns()
        await publish_pass(bus, part)
        seen = await asyncio.wait_for(arrived, 10)
        mark("cpu", inspection_id, time.thread_time_ns() - cpu)
        mark("arrived", inspection_id, seen)
        return (seen - started) / 1e6

    return sample


async def raw_side(interval_ms: float, stack: Stack) -> Sample:
    endpoint = f"opc.tcp://127.0.0.1:{free_port()}/raw/"
    server = Server()
    await server.init()
    server.set_endpoint(endpoint)
    idx = await server.register_namespace(RAW_NAMESPACE)
    etype = await server.get_node(ua.ObjectIds.BaseEventType).add_object_type(idx, contract.EVENT_TYPE)
    for field in contract.RESULT_FIELDS:
        await etype.add_property(idx, field.name, variant(field.name, INITIAL[field.name]))
    station = await server.nodes.objects.add_object(idx, STATION)
    variables = {
        f.name: await station.add_variable(idx, f.name, variant(f.name, INITIAL[f.name]))
        for f in contract.RESULT_FIELDS
    }
    events = await server.get_event_generator(etype, station.nodeid)
    await server.start()
    stack.append(server.stop)

    client = Client(endpoint)
    await client.connect()
    stack.append(client.disconnect)
    clock = await subscribe(client, client.get_node(station.nodeid), client.get_node(etype.nodeid), interval_ms)

    async def sample(sequence: int) -> float:
        inspection_id = f"raw-{sequence}"
        now = datetime.now(UTC)
        values = {
            contract.RESULT_INSPECTION_ID: inspection_id,
            contract.RESULT_VERDICT: 1,
            contract.RESULT_REASONS: "",
            contract.RESULT_TIMESTAMP: now,
            contract.RESULT_SEQUENCE: sequence,
        }
        arrived = clock.expect(inspection_id)
        started = time.perf_counter_ns()
        for name, value in values.items():
            dv = ua.DataValue(variant(name, value), SourceTimestamp=now, ServerTimestamp=now)
            await server.write_attribute_value(variables[name].nodeid, dv)
        for name, value in values.items():
            setattr(events.event, name, value)
        await events.trigger(time_attr=now, message=f"{STATION} #{sequence}: PASS")
        return (await asyncio.wait_for(arrived, 10) - started) / 1e6

    return sample


# -- Modbus TCP and S7: the result written into the PLC's registers -------------------------------------------------

# The gateway's fields a result writes (busy falls, done rises, the verdict, reasons and result_sequence): one block in
# the default maps, written as one request (RegisterStation._show writes the unchanged reasons of a pass again).
RESULT_FIELDS = ("busy", "done", "verdict", "reasons", "result_sequence")


class WriteClock:
    """When a PLC's memory first holds `done` with an awaited result_sequence (perf_counter_ns), checked by the
    server's write hook on whatever thread the write landed (snap7 serves from threads of its own)."""

    def __init__(self, layout: Layout, memory: bytearray) -> None:
        self.layout, self.memory = layout, memory
        self.span = layout.gateway_span()
        self.loop = asyncio.get_running_loop()
        self.waiting: dict[int, asyncio.Future[int]] = {}

    def expect(self, sequence: int) -> asyncio.Future[int]:
        future: asyncio.Future[int] = self.loop.create_future()
        self.waiting[sequence] = future
        return future

    def written(self) -> None:
        arrived = time.perf_counter_ns()
        if not self.waiting:
            return
        start, end = self.span
        fields = self.layout.decode_gateway(bytes(self.memory[start:end]), start)
        future = self.waiting.pop(fields.result_sequence, None) if fields.done else None
        if future is not None:
            self.loop.call_soon_threadsafe(lambda: future.done() or future.set_result(arrived))


class WatchedModbusPlc(SimulatedModbusPlcServer):
    """The simulated Modbus PLC server, its clock told of every register write a client makes."""

    clock: WriteClock | None = None

    def on_write(self) -> None:
        if self.clock is not None:
            self.clock.written()


def watch_s7(plc: SimulatedS7Plc) -> WriteClock:
    assert plc.server is not None
    clock = WriteClock(plc.layout, plc.memory)
    plc.server.set_events_callback(lambda event: clock.written() if event.EvtCode == EVC_DATA_WRITE else None)
    return clock


def result_writes(layout: Layout, sequence: int) -> list[tuple[int, bytes]]:
    """The write(s) the gateway makes to show a PASS for `sequence`: RESULT_FIELDS, adjacent ones in one write, a
    rising `done` last where a map splits them."""
    after = GatewayFields(done=True, verdict=VERDICTS["PASS"], result_sequence=sequence)
    writes = layout.encode_gateway(after, RESULT_FIELDS)
    done_at = layout.offsets["done"]
    return sorted(writes, key=lambda w: w[0] <= done_at < w[0] + len(w[1]))


async def register_plc(protocol: str, port: int, stack: Stack, *, triggers: bool) -> tuple[Any, WriteClock]:
    """A simulated PLC holding the station's registers on `port`, and the clock of the writes into them; with
    `triggers` it also plays its side of the handshake (heartbeat, trigger, acknowledge), else it is memory only."""
    plc: WatchedModbusPlc | SimulatedS7Plc
    if protocol == "modbus":
        plc = WatchedModbusPlc(port)
        if triggers:
            await plc.__aenter__()
        else:
            await plc.start_server()
        clock = WriteClock(plc.layout, plc.memory)
        plc.clock = clock
    else:
        plc = SimulatedS7Plc(port)
        if triggers:
            await plc.__aenter__()
        else:
            plc.start_server()
        clock = watch_s7(plc)
    if triggers:
        stack.append(lambda: plc.__aexit__(None, None, None))
    elif isinstance(plc, WatchedModbusPlc):
        stack.append(plc.stop_server)
    else:
        stack.append(lambda: asyncio.to_thread(plc.stop_server))
    return plc, clock


async def register_gateway_side(protocol: str, store: Path, stack: Stack) -> Sample:
    port = free_port()
    plc_settings: dict[str, Any] = {
        "protocol": protocol,
        "port": port,
        "poll_ms": 5,
        "heartbeat_ms": 100,
        "reconnect_ms": 50,
        **({"mode": "client"} if protocol == "modbus" else {}),
    }
    config, bus = await start_gateway(store, stack, "opc.tcp://127.0.0.1:1/", plc_settings)
    plc, clock = await register_plc(protocol, port, stack, triggers=True)
    plc.auto_ack = True
    seen: dict[int, asyncio.Future[Part]] = {}

    async def on_trigger(msg: Any) -> None:
        part = Trigger.FromString(msg.data).part
        future = seen.pop(part.sequence, None)
        if future is not None and not future.done():
            future.set_result(part)

    sub = await bus.nc.subscribe(subject("trigger", config.line, STATION), cb=on_trigger)
    stack.append(sub.unsubscribe)

    async def sample(sequence: int) -> float:
        await plc.wait_for(lambda g: not g.busy and not g.done)  # the last result acknowledged
        triggered = seen[sequence] = asyncio.get_running_loop().create_future()
        answer = await plc.trigger(sequence)
        if not answer.busy:
            raise RuntimeError(f"{protocol}: trigger {sequence} not taken (error {answer.error})")
        part = await asyncio.wait_for(triggered, 10)
        arrived = clock.expect(sequence)
        started = time.perf_counter_ns()
        mark("published", part.inspection_id, started)
        cpu = time.thread_time_ns()
        await publish_pass(bus, part)
        at = await asyncio.wait_for(arrived, 10)
        mark("cpu", part.inspection_id, time.thread_time_ns() - cpu)
        mark("arrived", part.inspection_id, at)
        return (at - started) / 1e6

    return sample


async def register_raw_side(protocol: str, stack: Stack) -> Sample:
    port = free_port()
    plc, clock = await register_plc(protocol, port, stack, triggers=False)
    write: Callable[[int, bytes], Awaitable[Any]]
    if protocol == "modbus":
        client = AsyncModbusTcpClient("127.0.0.1", port=port, retries=0, reconnect_delay=0)
        if not await client.connect():
            raise ConnectionError(f"no Modbus server on {port}")
        stack.append(lambda: asyncio.to_thread(client.close))

        async def write(offset: int, data: bytes) -> None:
            values = [int.from_bytes(data[i : i + 2]) for i in range(0, len(data), 2)]
            reply = await client.write_registers(offset // 2, values, device_id=1)
            if reply.isError():
                raise RuntimeError(f"write refused: {reply}")

    else:
        s7 = AsyncClient()
        await s7.connect("127.0.0.1", 0, 1, tcp_port=port)
        stack.append(s7.disconnect)

        async def write(offset: int, data: bytes) -> None:
            await s7.db_write(plc.db, offset, bytearray(data))

    done_falls = plc.layout.encode_gateway(GatewayFields(), ["done"])

    async def sample(sequence: int) -> float:
        writes = result_writes(plc.layout, sequence)
        arrived = clock.expect(sequence)
        started = time.perf_counter_ns()
        for offset, data in writes:
            await write(offset, data)
        latency = (await asyncio.wait_for(arrived, 10) - started) / 1e6
        for offset, data in done_falls:  # not timed: the PLC's acknowledgement, so the next result rises again
            await write(offset, data)
        return latency

    return sample


def pct(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


async def measure(sample: Sample, first: int, count: int, pause_s: float) -> list[float]:
    out = []
    for i in range(count):
        out.append(await sample(first + i))
        await asyncio.sleep(pause_s)  # the gateway's ack and busy flag settle between parts, as on a line
    return out


async def sides_of(
    protocol: str, store: Path, interval_ms: float, profiles: list[str], stack: Stack
) -> dict[str, Sample]:
    if protocol == "opcua":
        return {
            "gateway": await gateway_side(store, interval_ms, profiles, stack),
            "raw": await raw_side(interval_ms, stack),
        }
    return {
        "gateway": await register_gateway_side(protocol, store, stack),
        "raw": await register_raw_side(protocol, stack),
    }


async def bench(
    protocol: str, results: int, rounds: int, interval_ms: float, pause_s: float, profiles: list[str]
) -> dict[str, Any]:
    stack: Stack = []
    rows = []
    ticking = asyncio.Event()
    if BREAKDOWN is not None:
        ticker = asyncio.create_task(BREAKDOWN.tick(ticking))
    try:
        with tempfile.TemporaryDirectory() as store:
            sides = await sides_of(protocol, Path(store), interval_ms, profiles, stack)
            if FREEZE:
                # The raw side's server and both clients as the gateway keeps its own (keep_out_of_collections):
                # out of full collections, so that a collection in the rounds costs what the gateway's would (an
                # earlier protocol's leftovers collected first, not frozen with them).
                gc.collect()
                gc.freeze()
            for sample in sides.values():  # warm both: imports, first sessions, first paths
                await measure(sample, 1, 20, pause_s)
            warm_ids = set(BREAKDOWN.published) if BREAKDOWN is not None else set()
            sequence = 1000
            for r in range(rounds):
                order = ["gateway", "raw"] if r % 2 == 0 else ["raw", "gateway"]
                latencies = {}
                for name in order:
                    latencies[name] = await measure(sides[name], sequence, results, pause_s)
                    sequence += results
                row = {
                    f"{name}_{q}_ms": pct(latencies[name], int(q[1:]))
                    for name in ("gateway", "raw")
                    for q in ("p50", "p99")
                }
                row["added_p50_ms"] = row["gateway_p50_ms"] - row["raw_p50_ms"]
                row["added_p99_ms"] = row["gateway_p99_ms"] - row["raw_p99_ms"]
                row["ratio_p50"] = row["gateway_p50_ms"] / row["raw_p50_ms"]
                row["ratio_p99"] = row["gateway_p99_ms"] / row["raw_p99_ms"]
                rows.append(row)
                print(
                    f"{protocol} round {r + 1}: decision -> PLC p50 / p99 {row['gateway_p50_ms']:.3f} / "
                    f"{row['gateway_p99_ms']:.3f} ms"
                    f"   raw {RAW[protocol]} {row['raw_p50_ms']:.3f} / {row['raw_p99_ms']:.3f} ms"
                    f"   added p50 {row['added_p50_ms']:+.3f} ms",
                    flush=True,
                )
            if BREAKDOWN is not None:
                BREAKDOWN.time_full_collection()  # after the rounds: a collection of its own, timed, not in them
            for close in reversed(stack):
                await close()
            stack.clear()
    finally:
        for close in reversed(stack):
            await close()
        gc.unfreeze()
        ticking.set()
        if BREAKDOWN is not None:
            await ticker
    summary: dict[str, Any] = {
        "benchmark": "gateway",
        "protocol": protocol,
        "raw": RAW[protocol],
        "results_per_round": results,
        "rounds": rounds,
    }
    if protocol == "opcua":
        summary.update(publishing_interval_ms=interval_ms, profiles=profiles)
    summary.update(medians_and_ranges(rows))
    if BREAKDOWN is not None:
        warmed = [i for i in BREAKDOWN.published if i not in warm_ids]
        summary["breakdown"] = BREAKDOWN.report(protocol, warmed)
        for table in (BREAKDOWN.published, BREAKDOWN.handled, BREAKDOWN.handed, BREAKDOWN.arrived, BREAKDOWN.cpu):
            table.clear()
        BREAKDOWN.collections.clear()
        BREAKDOWN.stalls.clear()
    print(
        f"{protocol} median of {rounds}: decision -> PLC p50 / p99 {summary['gateway_p50_ms']:.3f} / "
        f"{summary['gateway_p99_ms']:.3f} ms, raw {summary['raw_p50_ms']:.3f} / {summary['raw_p99_ms']:.3f} ms,"
        f" added p50 {summary['added_p50_ms']:+.3f} ms ({summary['added_p50_ms_range'][0]:+.3f} - "
        f"{summary['added_p50_ms_range'][1]:+.3f}), ratio p50 {summary['ratio_p50']:.3f}"
        f" ({summary['ratio_p50_range'][0]:.3f} - {summary['ratio_p50_range'][1]:.3f})",
        flush=True,
    )
    print(json.dumps(summary), flush=True)
    return summary


RAW = {
    "opcua": "asyncua write + event",
    "modbus": "pymodbus write_registers",
    "s7": "snap7 db_write",
}


async def main(
    protocols: list[str], results: int, rounds: int, interval_ms: float, pause_s: float, profiles: list[str]
) -> None:
    for protocol in protocols:
        await bench(protocol, results, rounds, interval_ms, pause_s, profiles)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--protocols", default="opcua,modbus,s7", help="comma separated, each measured on its own: opcua, modbus, s7"
    )
    parser.add_argument("--results", type=int, default=200, help="results per side per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--publishing-interval-ms", type=float, default=0.0, help="OPC UA: the subscriptions'")
    parser.add_argument(
        "--profiles",
        default="simple",
        help="OPC UA: the station's plc.profiles, comma separated (the gateway's default: simple,machine-vision)",
    )
    parser.add_argument("--pause-ms", type=float, default=5.0, help="between two results, on both sides")
    parser.add_argument("--breakdown", action="store_true", help="timestamps per segment, collections, loop stalls")
    parser.add_argument("--stall-ms", type=float, default=1.0, help="--breakdown: a loop stall is a tick this late")
    parser.add_argument(
        "--no-gc-freeze",
        action="store_true",
        help="the gateway as before its objects were kept out of full collections (the comparison's other side)",
    )
    args = parser.parse_args()
    protocols = args.protocols.split(",")
    unknown = [p for p in protocols if p not in RAW]
    if unknown:
        parser.error(f"unknown protocol(s) {', '.join(unknown)}; choose from {', '.join(RAW)}")
    if args.no_gc_freeze:
        from lineguard.services.gateway import service as gateway_service

        gateway_service.keep_out_of_collections = lambda ctx: None  # type: ignore[assignment]
        FREEZE = False
    if args.breakdown:
        BREAKDOWN = Breakdown(int(args.stall_ms * 1e6))
        BREAKDOWN.install()
    # The gateway's per-part log lines would be most of this process's output (and CPU); errors still show.
    configure_logging("bench-gateway", "error", json=False)
    logging.disable(logging.WARNING)  # asyncua's and pymodbus's per-session info lines; errors still raise
    asyncio.run(
        main(
            protocols,
            args.results,
            args.rounds,
            args.publishing_interval_ms,
            args.pause_ms / 1000,
            args.profiles.split(","),
        )
    )
