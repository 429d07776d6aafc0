"""The register handshake, once for every register protocol (Modbus TCP, S7): edges, acks, heartbeat, Error.

A PLC that speaks registers cannot call a method: it sets fields and watches ours
(lineguard.contracts.registers). `RegisterStation` is one station's side of that, protocol-free:
it is given the PLC's fields each time the transport reads them (`on_read`, bytes of the station's
area) and writes its own through the transport's `write(offset, bytes)`. What a trigger or a result
means (sequence numbers, deadlines, exactly once, acks on the bus) stays in station.py / handshake.py;
this module adds what registers need on top: one part at a time, the rising edge, the acknowledgement
that lets `done` fall, and the fail-safe Error state when the partner is gone.

`poll()` is the loop every transport runs: read the PLC's fields, hand them over, wait `poll_s` (or
until woken, when the transport knows the PLC just wrote). `ClientEndpoint` is a PlcEndpoint for a
station whose fields live in the PLC (Modbus client mode, S7): a transport gives it connect, read,
write and close. `RegisterSettings` holds the timing options every register protocol takes."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import structlog
from pydantic import Field

from lineguard.config.seams import PlcSettings
from lineguard.contracts.registers import (
    GATEWAY_FIELDS,
    NO_RESULT,
    SPECS,
    TEXT_CHARS,
    TEXT_DEFAULTS,
    Error,
    GatewayFields,
    Layout,
    PartIdError,
    PlcFields,
    SelfTestState,
    overlap,
    reason_bits,
)
from lineguard.services.gateway.endpoint import NoSelfTest, SelfTestRunner, TriggerHandler, TriggerRefused
from lineguard.services.gateway.handshake import Result
from lineguard.services.gateway.recipes import RecipeBook, UnknownRecipe

log = structlog.get_logger("lineguard.gateway")

Write = Callable[[int, bytes], Awaitable[None]]  # (byte offset in the station's area, bytes)
Read = Callable[[int, int], Awaitable[bytes]]  # (start, end) byte offsets -> the area's bytes in between

_SAFE = GatewayFields()


class RegisterSettings(PlcSettings):
    """The timing options of every register protocol (its Settings add where the fields are)."""

    poll_ms: int = Field(10, ge=1, le=10_000, description="how often the PLC's fields are read (and watched)")
    heartbeat_ms: int = Field(500, ge=10, le=60_000, description="how often the gateway's heartbeat counts up")
    plc_heartbeat_timeout_ms: int = Field(
        2000, ge=0, le=600_000, description="Error when the PLC's heartbeat does not change this long; 0: not watched"
    )
    timeout_ms: int = Field(1000, ge=10, le=60_000, description="client: how long one request may take")
    reconnect_ms: int = Field(100, ge=10, le=60_000, description="client: the first wait before connecting again")
    reconnect_max_ms: int = Field(5000, ge=10, le=600_000, description="client: the wait doubles up to this")


def check_overlap(
    name: str, start: int, earlier: Mapping[str, Any], size: Callable[[str, int], int], unit: str
) -> None:
    """A map's field validator, for every register protocol: `name` at `start` must not overlap the fields validated
    before it (`earlier`, pydantic's info.data: in field order, so the overlap is reported at the later field's
    path). `size(field, chars)` is a field's extent in the map's `unit` ("registers", "bytes"), `chars` the
    characters it holds when it is a text field (`part_id_chars`, `lot_chars`)."""
    starts = {n: a for n, a in earlier.items() if n in SPECS}
    starts[name] = start

    def extent(n: str) -> int:
        option = TEXT_CHARS.get(n)
        return size(n, earlier.get(option, TEXT_DEFAULTS[option]) if option else 0)

    other = overlap(starts, {n: extent(n) for n in starts}, name)
    if other is not None:
        raise ValueError(
            f"{name} ({unit} {start}..{start + extent(name) - 1}) overlaps {other} "
            f"({starts[other]}..{starts[other] + extent(other) - 1})"
        )


class ResultNotAwaited(Exception):
    """A result the PLC is not waiting for (its trigger was refused, or abandoned in Error): not shown."""


class RegisterStation:
    """One station's register handshake: what the PLC sees, and what its fields make of it."""

    def __init__(
        self,
        station: str,
        layout: Layout,
        on_trigger: TriggerHandler,
        write: Write,
        *,
        plc_heartbeat_timeout_s: float,
        connected: bool,
    ):
        self.station = station
        self.layout = layout
        self.on_trigger = on_trigger
        self.recipes: RecipeBook | None = None  # the line's; given by the gateway (UsesRecipes) before start
        self.selftests: SelfTestRunner | None = None  # given by the gateway (RunsSelfTests) before start
        self._selftest: asyncio.Task[None] | None = None  # the run the PLC's `selftest` edge asked for
        self._write = write
        self.plc_heartbeat_timeout_s = plc_heartbeat_timeout_s
        self.outputs = GatewayFields()
        self._lock = asyncio.Lock()  # one change of our fields at a time, written before the next
        self._slot: int | None = None  # the sequence in flight or awaiting its acknowledgement
        self._refusal = Error.NONE  # why the trigger now high was refused, shown until it falls
        self._fault: Error | None = None  # the station is in Error while set
        self._down: str | None = None  # a service the station needs is down (set_down): in Error while set
        self._warning: str | None = None  # the drift watch alerts (set_warning): shown, the station serves on
        self._connected = connected
        # What the last read found; None until the first read of a connection (nothing to compare with).
        self._last: PlcFields | None = PlcFields() if connected else None
        self._beat_seen_at = time.monotonic()
        if plc_heartbeat_timeout_s > 0:
            self._fault = Error.PARTNER_LOST  # until the PLC's heartbeat is seen to move
        self.outputs.error = self._error()

    @property
    def in_error(self) -> bool:
        return self._fault is not None or self._down is not None

    def _error(self) -> int:
        standing = Error.SERVICE_DOWN if self._down else Error.DRIFT_WARNING if self._warning else Error.NONE
        return int(self._refusal or self._fault or standing)

    async def _show(self, change: dict[str, int | bool]) -> None:
        """Set our fields and write the ones that changed. Call with the lock held.

        The gateway's fields lying between changed ones are written again with their value, so that a change
        spread over a block of gateway fields (a result: busy ... result_sequence, the reasons unchanged on a
        pass) is one write, one round trip, which the PLC sees whole. Where the map puts other bytes between
        them, a rising `done` is written last and a falling one first, so the PLC never sees `done` with
        another result."""
        before = self.outputs
        after = GatewayFields(**{**before.__dict__, **change})
        after.error = self._error() if "error" not in change else after.error
        changed = [n for n in GATEWAY_FIELDS if getattr(after, n) != getattr(before, n)]
        self.outputs = after
        if not changed or not self._connected:
            return  # written in full when the connection is back (resync)
        writes = self.layout.encode_gateway(after, self._bridged(changed))
        if len(writes) > 1 and "done" in changed:
            done_offset = self.layout.offsets["done"]
            done_write = next(w for w in writes if w[0] <= done_offset < w[0] + len(w[1]))
            writes.remove(done_write)
            writes = [*writes, done_write] if after.done else [done_write, *writes]
        for offset, data in writes:
            await self._write(offset, data)

    def _bridged(self, changed: list[str]) -> list[str]:
        """`changed` and every gateway field that lies between them."""
        offsets, size = self.layout.offsets, self.layout.size
        low = min(offsets[n] for n in changed)
        high = max(offsets[n] + size(n) for n in changed)
        return [n for n in GATEWAY_FIELDS if low <= offsets[n] and offsets[n] + size(n) <= high]

    # -- the transport's events

    async def connected(self) -> None:
        """A (new) connection to the PLC: write all our fields, then compare from the next read on."""
        async with self._lock:
            self._connected = True
            self._last = None
            self._beat_seen_at = time.monotonic()
            if self.plc_heartbeat_timeout_s <= 0:
                self._fault = None  # no heartbeat to wait for: the connection is the partner
            self.outputs.error = self._error()
            for offset, data in self.layout.encode_gateway(self.outputs, GATEWAY_FIELDS):
                await self._write(offset, data)

    async def disconnected(self, why: str) -> None:
        """The connection to the PLC is gone: Error, safe outputs (written when it is back)."""
        async with self._lock:
            self._connected = False
            await self._enter_error(Error.PARTNER_LOST, f"connection lost: {why}")

    async def on_read(self, data: bytes, start: int, now: float | None = None) -> None:
        """The PLC's fields as just read (`data` from byte `start` of the area): heartbeat, ack, trigger."""
        now = time.monotonic() if now is None else now
        fields = self.layout.decode_plc(data, start)
        last, self._last = self._last, fields
        async with self._lock:
            if last is not None and fields.plc_heartbeat != last.plc_heartbeat:
                self._beat_seen_at = now
                if self._fault is Error.PARTNER_LOST:
                    self._fault = None
                    log.info("PLC heartbeat back: station serves again", station=self.station)
                    await self._show({})
            await self._watch_heartbeat(now)
            if last is not None and fields.ack_sequence != last.ack_sequence:
                await self._acknowledge(fields.ack_sequence)
            if last is not None and last.trigger and not fields.trigger and self._refusal is not Error.NONE:
                self._refusal = Error.NONE  # the PLC saw the refusal: back to what the station's state shows
                await self._show({})
        if last is not None and fields.trigger and not last.trigger:
            await self._trigger(fields)
        if last is not None and fields.selftest and not last.selftest:
            await self._start_selftest()

    async def set_down(self, reason: str | None) -> None:
        """A service the station needs is down (Error, safe outputs, triggers refused), or beats again (None)."""
        async with self._lock:
            self._down = reason
            if reason is not None:
                await self._enter_error(Error.SERVICE_DOWN, reason)
            else:
                await self._show({})

    async def set_warning(self, reason: str | None) -> None:
        """The drift watch alerts (shown as DRIFT_WARNING while no error shows; triggers are still taken), or not."""
        async with self._lock:
            self._warning = reason
            await self._show({})

    async def _start_selftest(self) -> None:
        """The PLC's `selftest` edge: judge the golden parts (flagged simulated, never a production result), and
        show how it went in `selftest_state`. An edge while a run is going is that run's."""
        if self._selftest is not None and not self._selftest.done():
            return
        if self.selftests is None:
            await self._show_selftest(SelfTestState.NOT_CONFIGURED, "no golden-part self-test configured here")
            return
        run = self.selftests
        async with self._lock:
            await self._show({"selftest_state": SelfTestState.RUNNING})
        log.info("PLC asked for the self-test", station=self.station)

        async def selftest() -> None:
            try:
                report = await run(self.station, "plc")
            except NoSelfTest as exc:
                await self._show_selftest(SelfTestState.NOT_CONFIGURED, str(exc))
            except Exception as exc:  # noqa: BLE001 - the bus away: shown as not run, the PLC may ask again
                await self._show_selftest(SelfTestState.NOT_RUN, repr(exc))
            else:
                await self._show_selftest(SelfTestState.CHANGED if report.changed else SelfTestState.AS_EXPECTED)

        self._selftest = asyncio.create_task(selftest())

    async def _show_selftest(self, state: SelfTestState, why: str = "") -> None:
        if why:
            log.warning("PLC self-test not run", station=self.station, state=state.name, why=why)
        async with self._lock:
            with contextlib.suppress(Exception):  # not connected: written with every field when it is back
                await self._show({"selftest_state": state})

    async def beat(self) -> None:
        async with self._lock:
            await self._show({"heartbeat": (self.outputs.heartbeat + 1) & 0xFFFF})

    async def deliver(self, result: Result) -> None:
        """Show the result: verdict, reasons, result_sequence, then done (busy falls with it)."""
        async with self._lock:
            if self.in_error:
                why = self._fault.name if self._fault is not None else self._down
                raise ResultNotAwaited(
                    f"station {self.station} is in Error ({why}): result {result.sequence} not shown"
                )
            # The part in flight, even before its busy is shown (a result as quick as the trigger's own reply).
            if self._slot != result.sequence or self.outputs.done:
                raise ResultNotAwaited(
                    f"station {self.station} awaits no result for sequence {result.sequence} "
                    f"(in flight: {'none' if self._slot is None or self.outputs.done else self._slot})"
                )
            await self._show(
                {
                    "verdict": int(result.verdict),
                    "reasons": reason_bits(result.reasons),
                    "result_sequence": result.sequence,
                    "busy": False,
                    "done": True,
                }
            )

    # -- the rules

    async def _watch_heartbeat(self, now: float) -> None:
        timeout = self.plc_heartbeat_timeout_s
        if timeout > 0 and self._fault is None and now - self._beat_seen_at > timeout:
            await self._enter_error(Error.PARTNER_LOST, f"PLC heartbeat unchanged for {timeout * 1000:.0f} ms")

    async def _enter_error(self, code: Error, why: str) -> None:
        """Error: the part in flight is abandoned and every output goes to its safe state."""
        if self._fault is None:
            log.error(
                "station in Error: outputs safe (no result, done low, not a pass)",
                station=self.station,
                error=code.name,
                why=why,
                abandoned=self._slot if self.outputs.busy or self.outputs.done else None,
            )
        if code is not Error.SERVICE_DOWN:
            self._fault = code
        self._slot = None
        safe = {n: getattr(_SAFE, n) for n in GATEWAY_FIELDS if n not in ("heartbeat", "error", "selftest_state")}
        await self._show(safe)

    async def _acknowledge(self, ack_sequence: int) -> None:
        if self.outputs.done and ack_sequence == self.outputs.result_sequence:
            self._slot = None
            await self._show({"done": False})
        elif ack_sequence != 0 and ack_sequence != self.outputs.result_sequence:
            log.warning(
                "PLC acknowledged a sequence that is not the result's: ignored",
                station=self.station,
                ack_sequence=ack_sequence,
                result_sequence=self.outputs.result_sequence,
                done=self.outputs.done,
            )

    async def _refuse(self, code: Error, why: str, fields: PlcFields) -> None:
        log.warning("trigger refused", station=self.station, sequence=fields.sequence, error=code.name, why=why)
        self._refusal = code
        await self._show({})

    async def _trigger(self, fields: PlcFields) -> None:
        sequence = fields.sequence
        async with self._lock:
            if self.in_error:
                why = self._fault.name if self._fault is not None else self._down
                await self._refuse(Error.IN_ERROR, f"the station is in Error ({why})", fields)
                return
            if self._slot is not None or self.outputs.busy or self.outputs.done:
                await self._refuse(
                    Error.BUSY, f"sequence {self._slot} is in flight or not acknowledged (busy/done)", fields
                )
                return
            if sequence == 0:
                await self._refuse(Error.BAD_SEQUENCE, "sequence 0 means none; count from 1", fields)
                return
            try:
                part_id = fields.part_id.text()
                lot = fields.lot.text()  # the lot standing now: the PLC wrote it at the lot change
            except PartIdError as exc:
                await self._refuse(exc.code, str(exc), fields)
                return
            if self.recipes is not None and fields.recipe:
                # One part at a time: the product changes between parts, for this one and those after it.
                try:
                    self.recipes.select_number(self.station, fields.recipe)
                except UnknownRecipe as exc:
                    await self._refuse(Error.UNKNOWN_RECIPE, str(exc), fields)
                    return
            self._slot = sequence  # taken: another trigger is BUSY from here on
        log.info("PLC trigger", station=self.station, sequence=sequence, part_id=part_id, lot=lot, recipe=fields.recipe)
        try:
            # Not under the lock: the result may be delivered before this returns.
            await self.on_trigger(self.station, sequence, part_id, lot=lot)
        except TriggerRefused as exc:
            log.error("trigger refused by the gateway", station=self.station, sequence=sequence, reason=str(exc))
            async with self._lock:
                if self._slot == sequence:  # not abandoned meanwhile by an Error, which shows instead
                    self._slot = None
                    self._refusal = Error.REFUSED
                    await self._show({})
            return
        # busy only once the gateway has taken the part, so a refused trigger never raises it: a PLC lowers the trigger
        # when it sees busy, and a REFUSED shown after that would be gone at the next poll, before a slow PLC reads it.
        async with self._lock:
            if self._slot == sequence and not self.outputs.done:  # not answered or abandoned meanwhile
                self._refusal = Error.NONE
                await self._show({"busy": True, "verdict": NO_RESULT, "reasons": 0})


@dataclass(frozen=True)
class Backoff:
    """How long to wait before connecting again: `first_s`, doubling up to `max_s`; reset once connected."""

    first_s: float
    max_s: float


async def poll(
    stations: Sequence[tuple[RegisterStation, Read]],
    period_s: float,
    stopping: asyncio.Event,
    wake: asyncio.Event | None = None,
) -> None:
    """Read every station's PLC fields once a period (or when woken: the PLC just wrote) and hand them over,
    until `stopping`. Each read also runs the heartbeat watchdog. A read that raises ends the loop with it."""
    while not stopping.is_set():
        if wake is not None:
            wake.clear()  # before reading: a write during the read wakes the next round
        for station, read in stations:
            start, end = station.layout.plc_span()
            await station.on_read(await read(start, end), start)
        waiting = [asyncio.ensure_future(stopping.wait())]
        if wake is not None:
            waiting.append(asyncio.ensure_future(wake.wait()))
        await asyncio.wait(waiting, timeout=period_s, return_when=asyncio.FIRST_COMPLETED)
        for waiter in waiting:
            waiter.cancel()


async def serve_client(
    station: RegisterStation,
    connect: Callable[[], Awaitable[Read]],
    close: Callable[[], Awaitable[None]],
    *,
    poll_s: float,
    backoff: Backoff,
    stopping: asyncio.Event,
    peer: str,
) -> None:
    """The gateway as the client of the PLC's registers: connect, poll, and on any failure go to Error and
    connect again with backoff, until `stopping`."""
    delay = backoff.first_s
    while not stopping.is_set():
        try:
            read = await connect()
            await station.connected()
            log.info("connected to the PLC", station=station.station, peer=peer)
            delay = backoff.first_s
            await poll([(station, read)], poll_s, stopping)
        except Exception as exc:  # noqa: BLE001 - whatever broke the link (refused, reset, timeout), it is lost
            await station.disconnected(repr(exc))
            log.warning("no connection to the PLC; connecting again", station=station.station, peer=peer, in_s=delay)
        finally:
            await close()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stopping.wait(), timeout=delay)
        delay = min(delay * 2, backoff.max_s)


async def beat(stations: Sequence[RegisterStation], period_s: float, stopping: asyncio.Event) -> None:
    """Count every station's heartbeat up once a period until `stopping` (a PlcEndpoint's run_heartbeat)."""
    while not stopping.is_set():
        for station in stations:
            try:
                await station.beat()
            except Exception as exc:  # noqa: BLE001 - a lost connection: the station's poll loop reconnects
                log.debug("heartbeat not written", station=station.station, error=repr(exc))
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stopping.wait(), timeout=period_s)


class ClientEndpoint:
    """A PlcEndpoint for one station whose fields live in the PLC: the gateway connects, polls and writes.

    A transport subclasses it with `protocol`, `endpoint` and connect / read / write / close; anything they
    raise is a lost connection (Error, then connecting again with backoff)."""

    protocol = ""

    def __init__(self, station: str, layout: Layout, settings: RegisterSettings, on_trigger: TriggerHandler):
        self.stations = (station,)
        self.on_trigger = on_trigger
        self.timing = settings
        self._link = RegisterStation(
            station,
            layout,
            on_trigger,
            self._write,
            plc_heartbeat_timeout_s=settings.plc_heartbeat_timeout_ms / 1000,
            connected=False,
        )
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def endpoint(self) -> str:
        raise NotImplementedError

    async def connect(self) -> None:
        raise NotImplementedError

    async def read(self, start: int, end: int) -> bytes:
        raise NotImplementedError

    async def write(self, offset: int, data: bytes) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    async def _connected(self) -> Read:
        await asyncio.wait_for(self.connect(), timeout=self.timing.timeout_ms / 1000)
        return self._read

    async def _read(self, start: int, end: int) -> bytes:
        # A PLC that stops answering (its network gone, no reset) is lost after timeout_ms, not after TCP's minutes.
        return await asyncio.wait_for(self.read(start, end), timeout=self.timing.timeout_ms / 1000)

    async def _write(self, offset: int, data: bytes) -> None:
        await asyncio.wait_for(self.write(offset, data), timeout=self.timing.timeout_ms / 1000)

    async def start(self) -> None:
        t = self.timing
        self._task = asyncio.create_task(
            serve_client(
                self._link,
                self._connected,
                self.close,
                poll_s=t.poll_ms / 1000,
                backoff=Backoff(t.reconnect_ms / 1000, t.reconnect_max_ms / 1000),
                stopping=self._stopping,
                peer=self.endpoint,
            )
        )
        log.info("PLC client started", protocol=self.protocol, endpoint=self.endpoint, station=self.stations[0])

    async def stop(self) -> None:
        self._stopping.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def run_heartbeat(self, stopping: asyncio.Event) -> None:
        await beat([self._link], self.timing.heartbeat_ms / 1000, stopping)

    async def deliver(self, station: str, result: Result) -> None:
        await self._link.deliver(result)

    async def set_busy(self, station: str, busy: bool) -> None:
        """Nothing to do: a register station shows its own busy (one part at a time, until its result)."""

    async def set_error(self, station: str, reason: str | None) -> None:
        with contextlib.suppress(Exception):  # not connected: shown with every field when the connection is back
            await self._link.set_down(reason)

    async def set_warning(self, station: str, reason: str | None) -> None:
        with contextlib.suppress(Exception):  # as set_error
            await self._link.set_warning(reason)

    def link(self, station: str) -> RegisterStation:
        return self._link

    def use_recipes(self, recipes: RecipeBook) -> None:
        self._link.recipes = recipes

    def use_selftests(self, run: SelfTestRunner, stations: frozenset[str]) -> None:
        self._link.selftests = run if self._link.station in stations else None
