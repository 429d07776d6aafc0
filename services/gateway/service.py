"""Gateway service: PLCs trigger inspections and get each verdict back once, over each station's protocol.

Consumes decisions; publishes triggers (when a PLC triggers a part) and acks (when a result
reached the PLC, or the gateway gave FAIL / TIMEOUT itself), each behind the PLC's back through
its station's outbox. The protocols are plugins
(endpoint.py, protocols/): this module only groups the stations by `plc.protocol` and opens
each protocol's endpoints. Asked to stop, it first refuses new triggers and answers every
part in flight (StationLinks.finish)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time

from nats.aio.msg import Msg

from lineguard.bus import Delivery
from lineguard.config import PLC_PROTOCOLS, PlcSettings
from lineguard.contracts import heartbeat_subject
from lineguard.recipes import LiveRecipes, RecipeStore
from lineguard.runtime.service import ServiceContext
from lineguard.services.gateway.captures import watch_captures
from lineguard.services.gateway.endpoint import PlcEndpoint, ReadsBack, RunsSelfTests, UsesRecipes
from lineguard.services.gateway.health import ServiceWatch
from lineguard.services.gateway.recipes import RecipeBook
from lineguard.services.gateway.selftest import SelfTests, command_subjects
from lineguard.services.gateway.station import StationLinks
from lineguard.v1.decision_pb2 import Decision
from lineguard.v1.drift_pb2 import DriftLevel, DriftState
from lineguard.v1.heartbeat_pb2 import Heartbeat


async def setup(ctx: ServiceContext) -> None:
    links = StationLinks(ctx.config, ctx.publish)
    # The stations' active recipe versions, before any PLC can trigger; then followed as they are activated.
    store = await RecipeStore.open(ctx.bus.js, provision=not ctx.config.nats.authenticated)
    live = LiveRecipes(ctx.config, store)
    await live.start()
    recipes = RecipeBook(ctx.config, {station_id: link.handshake for station_id, link in links.links.items()}, live)
    ctx.run_task(live.follow(ctx.stopping, recipes.activated))
    selftests = SelfTests(ctx.config, ctx.publish)
    by_protocol: dict[str, list[tuple[str, PlcSettings]]] = {}
    for station in ctx.config.stations:
        by_protocol.setdefault(station.plc.protocol, []).append((station.id, station.plc))
    for protocol, stations in by_protocol.items():
        endpoints: list[PlcEndpoint] = PLC_PROTOCOLS.factory_of(protocol)(stations, links.trigger)
        for endpoint in endpoints:
            ctx.on_stop(endpoint.stop)
            if isinstance(endpoint, UsesRecipes):  # its PLC selects recipes (OPC 40100, a register `recipe` field)
                endpoint.use_recipes(recipes)
            if isinstance(endpoint, RunsSelfTests):  # its PLC can ask for a self-test (docs/drift.md)
                endpoint.use_selftests(selftests.run, frozenset(selftests.stations))
            await endpoint.start()
            for station_id in endpoint.stations:
                links.links[station_id].attach(endpoint)
            if isinstance(endpoint, ReadsBack):
                endpoint.serve_reads(links.read_result)
            ctx.run_task(endpoint.run_heartbeat(ctx.stopping))
    for link in links.links.values():
        ctx.run_task(link.run_deadlines(ctx.stopping))
        ctx.run_task(link.run_outbox(ctx.stopping))
    ctx.before_stop(links.finish)
    ctx.run_task(watch_health(ctx, links))
    if any(link.shows_capture for link in links.links.values()):  # an OPC 40100 PLC hears of each image taken

        async def on_captured(station_id: str, inspection_id: str) -> None:
            link = links.links.get(station_id)
            if link is not None:
                await link.on_captured(inspection_id)

        ctx.run_task(watch_captures(ctx.bus, ctx.config.line, on_captured, ctx.stopping))

    async def on_decision(delivery: Delivery[Decision]) -> None:
        if delivery.message.part.simulated:  # a golden part's: to its self-test, never to the PLC
            selftests.on_decision(delivery.message)
            return
        await links.route(delivery.message).on_decision(delivery.message)

    ctx.consume("decision", Decision, on_decision)
    await watch_drift(ctx, links, selftests)
    keep_out_of_collections(ctx)


def keep_out_of_collections(ctx: ServiceContext) -> None:
    """Leave what the gateway holds for good (the OPC UA address space, the 40100 NodeSet's types, the libraries:
    ~635,000 objects with both profiles) out of the garbage collector's full collections, which otherwise walk it
    all, ~0.28 s of CPU each (benchmarks/gateway.py --breakdown, docs/benchmarks.md) with the event loop held: every
    PLC of the gateway waits, heartbeats stop, deadlines slip. gc.freeze moves them to a generation no collection
    scans; at ready nothing of it is garbage any more (the start's own full collections took that). Unfrozen at the
    stop, so a test process that starts many gateways frees each one's objects."""
    gc.freeze()

    async def unfreeze() -> None:
        gc.unfreeze()

    ctx.on_stop(unfreeze)


async def watch_drift(ctx: ServiceContext, links: StationLinks, selftests: SelfTests) -> None:
    """The drift watch's state of each station shown at its PLC as a warning (docs/drift.md); the self-tests on
    their schedule and on command."""

    async def on_drift(delivery: Delivery[DriftState]) -> None:
        state = delivery.message
        link = links.links.get(state.part.station)
        if link is not None:
            alert = state.level == DriftLevel.DRIFT_LEVEL_ALERT
            await link.set_warning(state.detail or "drift alert" if alert else None)

    ctx.consume("drift", DriftState, on_drift)
    for station_id, station in selftests.stations.items():
        if station.selftest is not None and station.selftest.interval_s > 0:  # a service's task runs while it does
            ctx.run_task(selftests.schedule(ctx.stopping, station_id))
    if selftests.stations:
        sub = await ctx.bus.nc.subscribe(command_subjects(ctx.config.line), cb=selftests.on_command)

        async def unsubscribe() -> None:
            with contextlib.suppress(Exception):  # the bus may be closing
                await sub.unsubscribe()

        ctx.on_stop(unsubscribe)


async def watch_health(ctx: ServiceContext, links: StationLinks) -> None:
    """Feed the services' heartbeats (a plain subscription: every beat, none stored for us) to a ServiceWatch and
    put every station in Error while one it needs is silent; back when it beats again (health.py)."""
    watch = ServiceWatch.of(ctx.config)
    if not watch.timeouts_s:
        return

    async def on_beat(msg: Msg) -> None:
        try:
            beat = Heartbeat.FromString(msg.data)
        except Exception:  # noqa: BLE001 - a malformed heartbeat proves nothing either way
            return
        watch.beat(beat.service, time.monotonic())

    every_service = heartbeat_subject(ctx.config.line, "gateway").rsplit(".", 1)[0] + ".*"  # lg.heartbeat.<line>.*
    sub = await ctx.bus.nc.subscribe(every_service, cb=on_beat)
    period = min(watch.timeouts_s.values()) / 4
    connected = True
    try:
        while not ctx.stopping.is_set():
            now = time.monotonic()
            if ctx.bus.nc.is_connected and not connected:
                watch.bus_back(now)
            connected = ctx.bus.nc.is_connected
            reason = watch.reason(now) if connected else None
            for link in links.links.values():
                if connected:  # while the bus is away the state stays as it was
                    await link.set_fault(reason)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(ctx.stopping.wait(), timeout=period)
    finally:
        with contextlib.suppress(Exception):  # the bus may be closing
            await sub.unsubscribe()
