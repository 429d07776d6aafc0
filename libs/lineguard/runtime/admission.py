"""Admission by deadline: a frame a service cannot finish before its part's deadline is refused when it arrives.

Skipping a frame only once its deadline has passed lets a backlog settle at the deadline: every frame then waits
almost the whole deadline, and nearly every one that runs finishes just late (an overload fails all parts, not
some). Instead the service decides when the frame arrives, from what it knows then: the part's deadline, the frames
admitted ahead of it (queued or running) and its stage's recent time per frame. A frame that cannot be finished in
time is refused at once with reason OVERLOAD (the decision service fails the part with it: never a pass), so the
frames that can be are, and the parts that cannot get their FAIL within milliseconds instead of at the deadline.
The rule is plain functions; the inference service (its model) and the OCR service (its reads) each apply it to
their own queue, and check a frame again just before they run it, against the queue as it is then."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import structlog
from google.protobuf.message import Message
from prometheus_client import Counter

from lineguard.bus import Delivery
from lineguard.reasons import OVERLOAD
from lineguard.runtime.decided import SKIPPED, DecidedParts
from lineguard.runtime.following import when_set
from lineguard.runtime.service import ServiceContext
from lineguard.v1.common_pb2 import Part
from lineguard.v1.frame_pb2 import Frame

log = structlog.get_logger("lineguard.runtime")

OVERLOADED = Counter(
    "lineguard_overload_refused_total",
    "Frames refused on arrival (or just before their run) because the service could not finish them by their part's "
    "deadline: each part failed at once with reason OVERLOAD",
    ["service"],
)
# Kept free after the stage's run for the rest of the part's path (the result's publish, the decision, the
# gateway's write to the PLC): at least this, or this share of the recipe's deadline, whichever is more. On a
# 2-core box loaded by other work that path's p99 reached a few hundred ms, and a part admitted on a tighter reserve
# was judged just late (a TIMEOUT where an OVERLOAD at once was due).
AFTER_RUN_S = 0.15
RESERVE_SHARE = 0.1
# How fast the estimate follows the stage's time per frame: a few runs' worth.
SMOOTHING = 0.2


@dataclass
class Pace:
    """A stage's recent wall time per frame (the model's batches, or OCR's reads, over their frames, smoothed); None
    before it ran."""

    per_frame_s: float | None = None
    # How far the runs stray from it (smoothed absolute deviation): a box whose other work comes and goes makes
    # the model's time jump, and admission plans with the mean plus this.
    spread_s: float = 0.0

    def observe(self, seconds: float, frames: int) -> None:
        if frames < 1:
            return
        took = seconds / frames
        if self.per_frame_s is None:
            self.per_frame_s = took
            return
        self.spread_s += SMOOTHING * (abs(took - self.per_frame_s) - self.spread_s)
        self.per_frame_s += SMOOTHING * (took - self.per_frame_s)

    @property
    def planned_s(self) -> float | None:
        """The time per frame admission plans with: the recent mean and its spread."""
        return None if self.per_frame_s is None else self.per_frame_s + self.spread_s


def reserve_s(deadline_ms: float) -> float:
    """What is kept free after the stage's run for the rest of the part's path, for a recipe's deadline."""
    return max(AFTER_RUN_S, RESERVE_SHARE * deadline_ms / 1000)


def can_finish(now_s: float, deadline_s: float, ahead: int, pace: Pace, reserve: float = AFTER_RUN_S) -> bool:
    """Whether a frame with `ahead` frames before it (admitted, not yet run to the end) can be judged by
    `deadline_s` (same clock as `now_s`): its own run and theirs at the stage's planned pace, plus `reserve` for
    the path after it. Before the stage's first run nothing is known: every frame is admitted."""
    planned = pace.planned_s
    if planned is None:
        return True
    return now_s + (ahead + 1) * planned + reserve <= deadline_s


def overload_text(ahead: int, pace: Pace, left_s: float) -> str:
    per_frame_ms = (pace.planned_s or 0.0) * 1000
    return (
        f"{OVERLOAD}: {ahead} frames ahead at {per_frame_ms:.0f} ms each cannot be judged in the "
        f"{max(left_s, 0.0) * 1000:.0f} ms left before the part's deadline"
    )


def part_deadline_s(part: Part, deadline_ms: float, arrived_s: float, ack_wait_s: float) -> float | None:
    """By when (wall clock, s) a frame of `part` that came at `arrived_s` must be finished: its recipe's deadline
    from the trigger, and within half the bus's ack wait from its arrival (a frame held longer is redelivered while
    it waits); None for a part without a trigger time."""
    if part.triggered_unix_ns <= 0:
        return None
    return min((part.triggered_unix_ns + deadline_ms * 1_000_000) / 1e9, arrived_s + ack_wait_s / 2)


async def admitted(
    ctx: ServiceContext,
    kind: str,
    part: Part,
    *,
    ahead: int,
    arrived_s: float,
    pace: Pace,
    refusal: Callable[[], Message],
) -> bool:
    """Whether `part`'s frame, which came at `arrived_s` with `ahead` frames before it, can be finished by its
    deadline at `pace`; if not, `refusal()` (the service's result with refused = OVERLOAD) is published on `kind`,
    counted and logged, and False. A part of no known deadline (ServiceContext.deadline_ms), or without a trigger
    time, is admitted: its own errors are settled when it runs."""
    deadline_ms = ctx.deadline_ms(part)
    if deadline_ms is None:
        return True
    deadline = part_deadline_s(part, deadline_ms, arrived_s, ctx.config.nats.ack_wait_s)
    if deadline is None:
        return True
    now = time.time()
    if can_finish(now, deadline, ahead, pace, reserve_s(deadline_ms)):
        return True
    OVERLOADED.labels(ctx.name).inc()
    log.warning(
        "frame refused: it cannot be finished by its deadline", reason=overload_text(ahead, pace, deadline - now)
    )
    await ctx.publish(kind, refusal())
    return False


class AdmittedFrames:
    """A frame service's admission (inference, OCR): each frame is admitted or refused (OVERLOAD) as it arrives; an
    admitted one waits in arrival order with its ack deferred, so the bus worker's handler returns at once and every
    frame is seen as it comes; the service's loop takes them with `next()`.

    `admitted` counts the frames waiting or still being worked on (the service lowers it when one is done); `pace`
    is the service's measured time per frame; `refusal(part)` makes its result with refused = OVERLOAD. A frame
    whose part is already decided (`decided`, once `follow_decisions()` ran) is skipped, unread and unanswered."""

    def __init__(self, ctx: ServiceContext, kind: str, refusal: Callable[[Part], Message]):
        self.ctx = ctx
        self.kind = kind
        self.refusal = refusal
        self.waiting: deque[tuple[Delivery[Frame], float]] = deque()  # with when each came (wall clock)
        self.admitted = 0
        self.pace = Pace()
        self._arrived = asyncio.Event()
        self._stop_watch: asyncio.Future[Literal[True]] | None = None
        self.decided = DecidedParts()

    async def follow_decisions(self) -> None:
        """Hear of the line's decisions from now on (lineguard.runtime.decided), until the service stops."""
        await self.decided.follow(self.ctx.bus.nc, self.ctx.config.line)
        self.ctx.on_stop(self.decided.stop)

    async def handle(self, delivery: Delivery[Frame]) -> None:
        """The consumer's handler: a stale frame is skipped, a refused one has its OVERLOAD result out (the worker
        acks it), an admitted one waits."""
        if self.ctx.is_stale(delivery):
            return
        arrived = time.time()
        if not await self.admits(delivery, self.admitted, arrived):
            return
        self.admitted += 1
        delivery.defer()
        self.waiting.append((delivery, arrived))
        self._arrived.set()

    async def admits(self, delivery: Delivery[Frame], ahead: int, arrived: float) -> bool:
        """Whether the frame's part can be judged by its deadline with `ahead` frames before it; if not, its
        OVERLOAD result is published (the part fails at once) and False. False too, with nothing published, for a
        part already decided: its verdict stands, whatever this service would find."""
        part = delivery.message.part
        if part.inspection_id in self.decided:
            SKIPPED.labels(self.ctx.name).inc()
            log.debug("frame skipped: its part is already decided", inspection_id=part.inspection_id)
            return False
        return await admitted(
            self.ctx,
            self.kind,
            part,
            ahead=ahead,
            arrived_s=arrived,
            pace=self.pace,
            refusal=lambda: self.refusal(part),
        )

    async def next(self) -> tuple[Delivery[Frame], float] | None:
        """The next admitted frame and when it came, waiting for one; None once the service stops with none left."""
        if self._stop_watch is None:
            self._stop_watch = when_set(self.ctx.stopping, self._arrived.set)
        while not self.waiting:
            if self.ctx.stopping.is_set():
                return None
            self._arrived.clear()
            # Woken by a frame or by the stop, never by a timer: an idle service wakes up for nothing (a 0.2 s
            # poll here cost each service CPU every second, paid per part at the line's rate).
            await self._arrived.wait()
        return self.waiting.popleft()
