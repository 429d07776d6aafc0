"""What one station owes the bus (its triggers and acks), published behind the PLC's back.

The PLC's Trigger call and its results never wait on NATS: a trigger or an ack is put in the
station's outbox, and one task publishes them in order, each retried until the bus takes it
(the message id stores a retried publish once). The outbox is bounded where a bound can be
kept without failing a part: a station whose outbox holds `limit` messages refuses new
triggers (the PLC is told at once and may call again), while acks are always taken, since
refusing one would lose the record of a result the PLC already has. It therefore holds at
most `limit` messages plus one ack per part in flight."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from dataclasses import dataclass
from typing import Protocol

import structlog
from google.protobuf.message import Message
from opentelemetry.context import Context

from lineguard.runtime import tracing

log = structlog.get_logger("lineguard.gateway")

# How soon a message the bus refused is tried again (a refusal is quick; a publish the bus never
# answers has already waited the bus's publish timeout).
RETRY_S = 0.25
# Messages a station keeps for the bus before it refuses new triggers: at 10 parts/s (two
# messages a part) about 50 s of parts with the bus away.
OUTBOX_LIMIT = 1000


class Publish(Protocol):
    """ServiceContext.publish: `lg.<kind>.<line>.<station>`, the message id from inspection id + stage."""

    async def __call__(self, kind: str, message: Message, *, stage: str | None = None) -> None: ...


@dataclass(frozen=True)
class Outgoing:
    kind: str
    message: Message
    stage: str | None  # None: the kind is the stage
    queued: float  # monotonic
    trace: Context | None  # the span it was put in: its publish carries the part's trace


class Outbox:
    def __init__(self, publish: Publish, station: str, *, limit: int = OUTBOX_LIMIT, retry_s: float = RETRY_S):
        self.publish = publish
        self.station = station
        self.limit = limit
        self.retry_s = retry_s
        self._queue: deque[Outgoing] = deque()
        self._wake = asyncio.Event()

    def __len__(self) -> int:
        return len(self._queue)

    @property
    def full(self) -> bool:
        return len(self._queue) >= self.limit

    def put(self, kind: str, message: Message, stage: str | None = None) -> None:
        self._queue.append(Outgoing(kind, message, stage, time.monotonic(), tracing.current()))
        self._wake.set()

    async def run(self, stopping: asyncio.Event) -> None:
        """Publish the oldest message until the bus takes it, then the next, until `stopping` is set."""
        failing_since: float | None = None
        while not stopping.is_set():
            if not self._queue:
                self._wake.clear()
                await _first(self._wake, stopping)
                continue
            item = self._queue[0]
            try:
                with tracing.attached(item.trace):
                    await self.publish(item.kind, item.message, stage=item.stage)
            except Exception as exc:  # noqa: BLE001 - whatever the bus says, the message stays and is tried again
                if failing_since is None:
                    failing_since = time.monotonic()
                    log.warning(
                        "the bus does not take the station's messages; keeping them and retrying",
                        station=self.station,
                        kind=item.kind,
                        waiting=len(self._queue),
                        error=repr(exc),
                    )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), self.retry_s)
                continue
            self._queue.popleft()
            if failing_since is not None:
                log.info(
                    "the bus takes the station's messages again",
                    station=self.station,
                    after_s=round(time.monotonic() - failing_since, 2),
                    waiting=len(self._queue),
                )
                failing_since = None


async def _first(*events: asyncio.Event) -> None:
    waits = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()
