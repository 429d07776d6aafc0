"""The PLC's side of the register handshake (lineguard.contracts.registers), protocol-free.

`RegisterPlc` plays the controller over two callbacks, "read the area's bytes" and "write bytes into it",
so the Modbus and S7 simulated PLCs (sim/modbus.py, sim/s7.py) are only their transport. It counts its
heartbeat, triggers parts (sequence, part id, recipe, then the rising edge; the trigger drops once the
gateway answers with busy, done or an error), watches `done` rise and records each result, acknowledges
it, and reports like the OPC UA simulated PLC (lineguard.sim.plc's PlcRunReport): every sequence got
exactly one result, in time, and nothing else came."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from lineguard.contracts import verdict_name
from lineguard.contracts.registers import Error, GatewayFields, Layout, reasons_of
from lineguard.sim.plc import PlcResult, PlcRunReport, ResultCallback, paced, tally

Read = Callable[[int, int], Awaitable[bytes]]  # (start, end) byte offsets of the area -> its bytes
Write = Callable[[int, bytes], Awaitable[None]]  # (byte offset, bytes)


@dataclass
class _Seen:
    sequence: int
    verdict: int
    reasons: int
    arrival: float


class RegisterPlc:
    """`plc = RegisterPlc(layout, read, write); await plc.start(); report = await plc.run(20, rate_hz=10)`."""

    def __init__(self, layout: Layout, read: Read, write: Write, *, heartbeat_s: float = 0.1, poll_s: float = 0.002):
        self.layout = layout
        self._read, self._write = read, write
        self.heartbeat_s, self.poll_s = heartbeat_s, poll_s
        self.auto_ack = True  # acknowledge every result as soon as it is read (tests turn it off)
        self.beating = True  # count the heartbeat up (tests stop it to play a PLC gone silent)
        self.next_sequence = 1
        self.gateway = GatewayFields()  # the gateway's fields as last read
        self.results: list[_Seen] = []  # every rise of done, in order
        self._called: dict[int, float] = {}  # sequence -> when the trigger rose
        self._changed = asyncio.Condition()
        self._tasks: list[asyncio.Task[None]] = []
        self._on_result: ResultCallback | None = None
        self.min_low_s = 0.05  # the trigger stays low at least this long between parts (several gateway polls)
        self._trigger_fell = 0.0
        self._heartbeat_moved = time.monotonic()  # when the gateway's heartbeat was last seen to change
        self._closing = False

    async def start(self) -> None:
        self._closing = False
        for name in ("trigger", "ack_sequence"):
            await self.set(name, 0)
        self._tasks = [asyncio.create_task(self._beat()), asyncio.create_task(self._watch())]

    async def close(self) -> None:
        """Stop beating and polling. A task may outlive one cancel: Python 3.11's asyncio.wait_for (inside pymodbus's
        and snap7's calls) returns the reply instead of raising when the cancel lands as the reply completes, so the
        loops also watch `_closing`, and the tasks still running are cancelled again until they end."""
        self._closing = True
        pending = set(self._tasks)
        while pending:
            for task in pending:
                task.cancel()
            _, pending = await asyncio.wait(pending, timeout=0.5)
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                task.result()

    async def set_lot(self, lot: str | bytes) -> None:
        """Write the `lot` field, as a PLC does at a lot change: it stands for every part triggered until the next.
        `bytes` are written as they are (a faulty PLC's); a length past the field is the gateway's to refuse."""
        await self.set("lot", lot)

    async def set(self, name: str, value: int | str | bytes) -> None:
        offset, data = self.layout.encode_plc(name, value)
        await self._write(offset, data)

    async def read_gateway(self) -> GatewayFields:
        start, end = self.layout.gateway_span()
        return self.layout.decode_gateway(await self._read(start, end), start)

    async def _beat(self) -> None:
        count = 0
        while not self._closing:
            if self.beating:
                count = (count + 1) & 0xFFFF
                with contextlib.suppress(Exception):  # the link is down: beat again when it is back
                    await self.set("plc_heartbeat", count)
            await asyncio.sleep(self.heartbeat_s)

    async def _watch(self) -> None:
        """Poll the gateway's fields; record every rise of done as one result, and acknowledge it."""
        while not self._closing:
            try:
                now = await self.read_gateway()
            except Exception:  # noqa: BLE001 - the link is down: keep the last picture, try again
                await asyncio.sleep(self.poll_s * 10)
                continue
            before, self.gateway = self.gateway, now
            if now.heartbeat != before.heartbeat:
                self._heartbeat_moved = time.monotonic()
            if now.done and not before.done:
                seen = _Seen(now.result_sequence, now.verdict, now.reasons, time.perf_counter())
                self.results.append(seen)
                if self.auto_ack:
                    await self.set("ack_sequence", now.result_sequence)
                await self._report(seen)
            async with self._changed:
                self._changed.notify_all()
            await asyncio.sleep(self.poll_s)

    async def _report(self, seen: _Seen) -> None:
        if self._on_result is None or sum(r.sequence == seen.sequence for r in self.results) != 1:
            return
        outcome = self._on_result(self._result(seen))
        if inspect.isawaitable(outcome):
            await outcome

    def _result(self, seen: _Seen) -> PlcResult:
        called = self._called.get(seen.sequence)
        return PlcResult(
            sequence=seen.sequence,
            inspection_id="",  # registers carry the sequence, not the inspection id
            verdict=verdict_name(seen.verdict),
            reasons=reasons_of(seen.reasons),
            latency_s=seen.arrival - called if called is not None else math.nan,
        )

    def gateway_silent_s(self) -> float:
        """How long the gateway's heartbeat has not changed, as this PLC last read it: its watchdog. A PLC fails the
        part in flight when this passes its limit (a gateway gone, killed or cut off, answers nothing)."""
        return time.monotonic() - self._heartbeat_moved

    async def wait_for(self, condition: Callable[[GatewayFields], bool], timeout_s: float = 10.0) -> GatewayFields:
        """The gateway's fields once `condition` holds; TimeoutError when it does not within `timeout_s`."""
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(lambda: condition(self.gateway)), timeout=timeout_s)
        return self.gateway

    async def wait_ready(self, timeout_s: float = 30.0) -> None:
        """Until the gateway beats and the station is out of Error (it saw this PLC's heartbeat)."""
        first = (await self.wait_for(lambda g: True, timeout_s)).heartbeat
        await self.wait_for(lambda g: g.heartbeat != first and g.error != Error.PARTNER_LOST, timeout_s)

    async def trigger(
        self, sequence: int, part_id: str = "", recipe: int = 0, timeout_s: float = 10.0
    ) -> GatewayFields:
        """Raise the trigger for `sequence`; returns the gateway's fields that answered it (busy rose, done rose,
        or an error code for a refusal), after dropping the trigger again. A refusal with the code already shown
        changes nothing the PLC can see: TimeoutError."""
        # A polling gateway sees a level only if it lasts a poll: keep the trigger low long enough first.
        await asyncio.sleep(max(0.0, self._trigger_fell + self.min_low_s - time.monotonic()))
        before = self.gateway
        await self.set("sequence", sequence)
        await self.set("part_id", part_id)
        await self.set("recipe", recipe)
        self._called[sequence] = time.perf_counter()
        await self.set("trigger", 1)
        try:
            return await self.wait_for(
                lambda g: (
                    (g.busy and not before.busy)
                    or (g.done and not before.done and g.result_sequence == sequence)
                    or (g.error not in (Error.NONE, before.error))
                ),
                timeout_s,
            )
        finally:
            await self.set("trigger", 0)
            self._trigger_fell = time.monotonic()

    async def ack(self, sequence: int) -> None:
        await self.set("ack_sequence", sequence)

    async def result(self, sequence: int, timeout_s: float = 10.0) -> PlcResult:
        """The first result for `sequence`, waiting for it."""
        await self.wait_for(lambda g: any(r.sequence == sequence for r in self.results), timeout_s)
        return self._result(next(r for r in self.results if r.sequence == sequence))

    async def run(
        self,
        parts: int,
        rate_hz: float,
        on_result: ResultCallback | None = None,
        result_timeout_s: float = 30.0,
        settle_s: float = 0.2,
    ) -> PlcRunReport:
        """Trigger `parts` parts, at most `rate_hz` per second and one at a time (the register handshake),
        each within `result_timeout_s` of its trigger; then report, after `settle_s` to catch duplicates."""
        ticks = paced(parts, rate_hz)
        self._on_result = on_result
        first_seen = len(self.results)
        sequences: list[int] = []
        try:
            async for _ in ticks:
                with contextlib.suppress(TimeoutError):  # a station that stays busy: that part is missing
                    await self.wait_for(lambda g: not g.busy and not g.done, result_timeout_s)
                sequence = self.next_sequence
                self.next_sequence = self.next_sequence % 0xFFFFFFFF + 1
                sequences.append(sequence)
                with contextlib.suppress(TimeoutError):
                    await self.trigger(sequence, part_id=f"part-{sequence}")
                    await self.result(sequence, result_timeout_s)
            await asyncio.sleep(settle_s)
        finally:
            self._on_result = None
        seen = self.results[first_seen:]
        return tally([(s, s) for s in sequences], [(r.sequence, self._result(r)) for r in seen], set(sequences))
