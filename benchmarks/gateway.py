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

    python benchmarks/gateway.py [--results 200] [--rounds 5] [--publishing-interval-ms 0]
"""

from __future__ import annotations

import argparse
import asyncio
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

from lineguard.bus import Bus
from lineguard.config import LineConfig
from lineguard.contracts import msg_id, subject
from lineguard.contracts import opcua as contract
from lineguard.natsserver import EmbeddedNats, free_port
from lineguard.runtime.service import run_service
from lineguard.sim.lineconfig import demo_config_dict
from lineguard.sim.plc import subscription_parameters
from lineguard.testing.gateway import service_ready
from lineguard.testing.rounds import medians_and_ranges
from lineguard.v1.common_pb2 import Part
from lineguard.v1.decision_pb2 import Decision, Verdict

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


async def gateway_side(
    store: Path, interval_ms: float, profiles: list[str], stack: list[Callable[[], Awaitable[None]]]
) -> Sample:
    from lineguard.services.gateway.service import setup  # loads asyncua's server only when benchmarked

    nats = EmbeddedNats(store_dir=store / "nats").start()
    stack.append(lambda: asyncio.to_thread(nats.stop))
    endpoint = f"opc.tcp://127.0.0.1:{free_port()}/lineguard/"
    raw = demo_config_dict(
        nats_url=nats.url, database_url=f"sqlite:///{store / 'unused.db'}", opcua_endpoint=endpoint, deadline_ms=10_000
    )
    raw["stations"][0]["plc"]["profiles"] = profiles
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
        decision = Decision(part=part, verdict=Verdict.VERDICT_PASS)
        arrived = clock.expect(inspection_id)
        started = time.perf_counter_ns()
        await bus.publish(subject("decision", config.line, STATION), decision, msg_id=msg_id(inspection_id, "decision"))
        return (await asyncio.wait_for(arrived, 10) - started) / 1e6

    return sample


async def raw_side(interval_ms: float, stack: list[Callable[[], Awaitable[None]]]) -> Sample:
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


def pct(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


async def measure(sample: Sample, first: int, count: int, pause_s: float) -> list[float]:
    out = []
    for i in range(count):
        out.append(await sample(first + i))
        await asyncio.sleep(pause_s)  # the gateway's ack and busy flag settle between parts, as on a line
    return out


async def main(results: int, rounds: int, interval_ms: float, pause_s: float, profiles: list[str]) -> None:
    stack: list[Callable[[], Awaitable[None]]] = []
    rows = []
    try:
        with tempfile.TemporaryDirectory() as store:
            sides = {
                "gateway": await gateway_side(Path(store), interval_ms, profiles, stack),
                "raw": await raw_side(interval_ms, stack),
            }
            for sample in sides.values():  # warm both: imports, first sessions, first paths
                await measure(sample, 1, 20, pause_s)
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
                rows.append(row)
                print(
                    f"round {r + 1}: decision -> PLC p50 / p99 {row['gateway_p50_ms']:.3f} / "
                    f"{row['gateway_p99_ms']:.3f} ms"
                    f"   raw event {row['raw_p50_ms']:.3f} / {row['raw_p99_ms']:.3f} ms"
                    f"   added p50 {row['added_p50_ms']:+.3f} ms"
                )
            for close in reversed(stack):
                await close()
            stack.clear()
    finally:
        for close in reversed(stack):
            await close()
    summary: dict[str, Any] = {
        "benchmark": "gateway",
        "results_per_round": results,
        "rounds": rounds,
        "publishing_interval_ms": interval_ms,
        "profiles": profiles,
    }
    summary.update(medians_and_ranges(rows))
    print(
        f"median of {rounds}: decision -> PLC p50 {summary['gateway_p50_ms']:.3f} ms, "
        f"raw {summary['raw_p50_ms']:.3f} ms,"
        f" added p50 {summary['added_p50_ms']:+.3f} ms ({summary['added_p50_ms_range'][0]:+.3f} - "
        f"{summary['added_p50_ms_range'][1]:+.3f}), ratio {summary['ratio_p50']:.3f}"
    )
    print(json.dumps(summary))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=int, default=200, help="results per side per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--publishing-interval-ms", type=float, default=0.0)
    parser.add_argument(
        "--profiles",
        default="simple",
        help="the station's plc.profiles, comma separated (the gateway's default: simple,machine-vision)",
    )
    parser.add_argument("--pause-ms", type=float, default=5.0, help="between two results, on both sides")
    args = parser.parse_args()
    logging.disable(logging.WARNING)  # asyncua's per-session info lines; errors still raise
    asyncio.run(
        main(args.results, args.rounds, args.publishing_interval_ms, args.pause_ms / 1000, args.profiles.split(","))
    )
