"""Gateway service: PLCs trigger inspections over OPC UA and get each verdict back once.

Consumes decisions; publishes triggers (when a PLC calls Trigger) and acks
(when a result reached the PLC, or the gateway gave FAIL / TIMEOUT itself). Asked to stop,
it first refuses new triggers and answers every part in flight (StationLinks.finish)."""

from __future__ import annotations

from collections import defaultdict

from lineguard.bus import Delivery
from lineguard.runtime.service import ServiceContext
from lineguard.services.gateway.opcua_server import OpcuaEndpoint, quiet_asyncua
from lineguard.services.gateway.station import StationLinks
from lineguard.v1.decision_pb2 import Decision


async def setup(ctx: ServiceContext) -> None:
    quiet_asyncua()
    links = StationLinks(ctx.config, ctx.publish)
    by_endpoint: dict[str, list[str]] = defaultdict(list)
    for station in ctx.config.stations:
        if station.plc.protocol == "opcua":
            by_endpoint[station.plc.endpoint].append(station.id)
    for endpoint, station_ids in by_endpoint.items():
        server = OpcuaEndpoint(endpoint, station_ids, links.trigger)
        ctx.on_stop(server.stop)
        await server.start()
        for station_id, plc in server.stations.items():
            links.links[station_id].attach(plc)
        ctx.run_task(server.run_heartbeat(ctx.stopping))
    for link in links.links.values():
        ctx.run_task(link.run_deadlines(ctx.stopping))
    ctx.before_stop(links.finish)

    async def on_decision(delivery: Delivery[Decision]) -> None:
        await links.route(delivery.message).on_decision(delivery.message)

    ctx.consume("decision", Decision, on_decision)
