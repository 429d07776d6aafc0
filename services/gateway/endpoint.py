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
from typing import Protocol, runtime_checkable

from lineguard.services.gateway.handshake import Result
from lineguard.services.gateway.recipes import RecipeBook
from lineguard.v1.drift_pb2 import SelfTestReport


class TriggerHandler(Protocol):
    """station id, the PLC's sequence, its part id, the lot the PLC says now ("" none) -> the inspection id the PLC
    is given back. Raises TriggerRefused when the trigger was not taken: the protocol tells its PLC to call again.
    The protocol checks the part id and lot (printable ASCII, within their fields) before it calls."""

    def __call__(self, station: str, sequence: int, part_id: str, /, *, lot: str = "") -> Awaitable[str]: ...


# station id, the PLC's sequence -> the latest result given for it, None when there is none to read (in flight,
# unknown, too old). A result read this way is recorded as delivered.
ResultReader = Callable[[str, int], Result | None]


# station id, the request's id (who asked: "plc", a 40100 job id) -> the run's report (selftest.py). Raises NoSelfTest
# for a station without golden parts configured.
SelfTestRunner = Callable[[str, str], Awaitable[SelfTestReport]]


class NoSelfTest(LookupError):
    """The station has no golden-part self-test configured (`selftest` in its settings)."""


class TriggerRefused(Exception):
    """The trigger was not taken (the gateway is stopping, its backlog for the bus is full); the PLC may call again
    with the same sequence."""


class NotHandedOver(Exception):
    """`deliver` knows that no PLC could receive the result (no live session listens for it): it is recorded as not
    delivered, and the PLC can still read it by its sequence (`serve_reads`)."""


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
        """Hand `station`'s PLC one result; raising (NotHandedOver when nobody listens) records it as not delivered.

        Must not wait on anything but the PLC's protocol: the result of a part never waits on the bus."""

    async def set_busy(self, station: str, busy: bool) -> None:
        """Show whether `station` has parts in flight."""

    async def set_error(self, station: str, reason: str | None) -> None:
        """Show `station` in Error for `reason` (a service it needs is down, health.py), or serving again (None).
        While in Error the handshake refuses its triggers; the endpoint shows the state, nothing more."""


@runtime_checkable
class UsesRecipes(Protocol):
    """An endpoint whose PLC selects recipes (OPC 40100's RecipeManagement, a register PLC's `recipe` field): the
    gateway hands it the line's recipe book before `start()`."""

    def use_recipes(self, recipes: RecipeBook) -> None: ...


@runtime_checkable
class ReadsBack(Protocol):
    """An endpoint whose PLC can read a result it missed by its sequence (OPC UA's GetResult); the gateway hands it
    the reader once the endpoint is open. A result read back is recorded as delivered."""

    def serve_reads(self, read: ResultReader) -> None: ...


@runtime_checkable
class ShowsCapture(Protocol):
    """An endpoint whose PLC is told when a part's image is taken (OPC 40100's AcquisitionDone), so it can move the
    part on before the result: the gateway watches the frames (captures.py) for the stations it `shows_capture`."""

    def shows_capture(self, station: str) -> bool: ...

    async def captured(self, station: str, inspection_id: str) -> None:
        """The image of `inspection_id`, a part in flight at `station`, is taken."""


@runtime_checkable
class ShowsWarning(Protocol):
    """An endpoint that can show its PLC a warning while the station serves on: the drift watch's alert (register
    PLCs: `error` = DRIFT_WARNING while no error shows; docs/drift.md)."""

    async def set_warning(self, station: str, reason: str | None) -> None: ...


@runtime_checkable
class RunsSelfTests(Protocol):
    """An endpoint whose PLC can ask for a station's golden-part self-test (a register PLC's `selftest` field, an
    OPC 40100 job with IsSimulated): the gateway hands it the runner before `start()`. The golden parts' results
    reach that PLC flagged simulated, never as a production result (docs/drift.md)."""

    def use_selftests(self, run: SelfTestRunner, stations: frozenset[str]) -> None:
        """`stations`: those with golden parts configured (a command at another is answered "none configured")."""
