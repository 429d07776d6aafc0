"""OPC UA: the gateway is a server, each station an object the PLC calls Trigger on (lineguard.contracts.opcua).

Stations that name the same endpoint URL share one server; the server itself is opcua_server.py,
imported only when endpoints are opened, so reading this module's Settings never loads asyncua."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

from pydantic import Field

from lineguard.config.seams import PlcSettings
from lineguard.services.gateway.protocols.opcua_security import OpcuaSecurity

if TYPE_CHECKING:  # every service validates the config, and so imports this module: keep it light
    from lineguard.services.gateway.endpoint import PlcEndpoint, TriggerHandler

KEY = "opcua"
SIMPLE = "simple"  # the profiles: lineguard's own Stations/<id> nodes, and OPC 40100
MACHINE_VISION = "machine-vision"


class Settings(PlcSettings):
    protocol: Literal["opcua"] = "opcua"
    endpoint: str = Field(
        "opc.tcp://127.0.0.1:4840/lineguard/",
        description="where the gateway's OPC UA server listens; stations on one URL share it",
    )
    security: OpcuaSecurity = Field(
        default_factory=OpcuaSecurity,
        description="profile, policies, certificates, users and roles (opcua_security.py); one per endpoint",
    )
    profiles: list[Literal["simple", "machine-vision"]] = Field(
        ["simple", "machine-vision"],
        min_length=1,
        description="the station's address spaces: `simple` (Stations/<id>: Trigger, Result*) and `machine-vision` "
        "(an OPC 40100 VisionSystemType instance, machine_vision.py); both answer from the same handshake",
    )
    continuous_period_ms: int = Field(
        500, gt=0, description="machine-vision: how often a StartContinuous job triggers a part"
    )


def open_endpoints(stations: Sequence[tuple[str, Settings]], on_trigger: TriggerHandler) -> list[PlcEndpoint]:
    """One server per endpoint URL, serving the stations configured on it, in configuration order."""
    from lineguard.services.gateway.protocols.opcua_server import OpcuaEndpoint, quiet_asyncua

    quiet_asyncua()
    by_url: dict[str, list[str]] = {}
    security: dict[str, tuple[str, OpcuaSecurity]] = {}
    for station_id, settings in stations:
        by_url.setdefault(settings.endpoint, []).append(station_id)
        first, first_security = security.setdefault(settings.endpoint, (station_id, settings.security))
        if settings.security != first_security:  # one server has one security setup
            raise ValueError(
                f"stations {first!r} and {station_id!r} share the OPC UA endpoint {settings.endpoint} but not its "
                "plc.security: give them the same (a YAML anchor) or different endpoints"
            )
    profiles = {station_id: tuple(settings.profiles) for station_id, settings in stations}
    periods = {station_id: settings.continuous_period_ms / 1000 for station_id, settings in stations}
    return [
        OpcuaEndpoint(url, ids, on_trigger, security=security[url][1], profiles=profiles, continuous_period_s=periods)
        for url, ids in by_url.items()
    ]
