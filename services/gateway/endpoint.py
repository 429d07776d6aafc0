"""What the gateway needs of a PLC protocol, whichever it is: the `PlcEndpoint` seam.

A protocol (lineguard.services.gateway.protocols, key `plc.protocol`) opens endpoints for the
stations configured with it; an endpoint is whatever the protocol listens on or connects to
(one OPC UA server, one Modbus connection) and may serve several stations. It only speaks its
protocol: a trigger it receives goes to the callback it was given, and it shows what the
handshake (station.py) tells it to. Sequence numbers, deadlines, exactly once, busy and acks
are decided there, the same for every protocol."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from lineguard.services.gateway.handshake import Result

# station id, the PLC's sequence, its part id -> the inspection id the PLC is given back.
# Raises TriggerRefused when the trigger was not taken: the protocol tells its PLC to call again.
TriggerHandler = Callable[[str, int, str], Awaitable[str]]


class TriggerRefused(Exception):
    """The trigger could not be put on the bus; the PLC may call again with the same sequence."""


class PlcEndpoint(Protocol):
    @property
    def protocol(self) -> str:
        """The protocol's key: named in every Trigger (`source`) and PlcAck (`protocol`)."""
        ...

    @property
    def stations(self) -> Sequence[str]:
        """The ids of the stations it serves."""
        ...

    @property
    def on_trigger(self) -> TriggerHandler:
        """Where it sends each trigger its PLC makes (the callback it was opened with)."""
        ...

    async def start(self) -> None:
        """Listen (or connect); raises when it cannot, which stops the gateway from starting."""

    async def stop(self) -> None: ...

    async def run_heartbeat(self, stopping: asyncio.Event) -> None:
        """Show the PLC the gateway is alive until `stopping` is set (return at once if the protocol has no way)."""

    async def deliver(self, station: str, result: Result) -> None:
        """Hand `station`'s PLC one result; raising records the ack as not delivered."""

    async def set_busy(self, station: str, busy: bool) -> None:
        """Show whether `station` has parts in flight."""
