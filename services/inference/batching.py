"""The inference service's frame pipeline: admit a frame or refuse it when it arrives, prepare it while the model
runs the one before, run frames that arrive while the model is busy as one batch, settle each on its own.

The bus worker hands frames over one at a time. The handler admits the frame by its part's deadline
(lineguard.runtime.admission: the frames admitted ahead of it at the model's recent pace must leave it time to
be judged) or refuses
it at once with an OVERLOAD result, which fails the part within milliseconds instead of at its deadline; an admitted
frame waits in arrival order with its ack deferred (`delivery.defer()`), so the handler returns and every frame is
seen as it comes. A feeder takes the admitted frames in order, checks each again against the queue as it is then,
decodes and letterboxes it (in a thread: the model is meanwhile running the frames queued before it) and queues it;
a frame that can never be inspected is dead-lettered there with its reason. A loop takes up to `model.batch_size`
queued frames, waiting at most `batch_wait_ms` after the first for more (with batch_size 1 it never waits), and runs
them as one model call off the event loop. Each frame is then settled on its own: its result published and the frame
acked while the next batch already runs, or its failure settled by the bus's one failure policy (`delivery.fail`; a
frame the stopping service never ran is handed back). The queue for the model holds two batches at most; the
admitted frames before it are bounded by the deadline (and half the ack wait), not by a count."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
import structlog

from lineguard.bus import BadMessage, Delivery
from lineguard.imaging import FrameError
from lineguard.runtime import tracing
from lineguard.runtime.admission import AdmittedFrames
from lineguard.runtime.batching import MicroBatcher, Stopped
from lineguard.runtime.service import ServiceContext
from lineguard.services.inference.admission import overload_result
from lineguard.services.inference.detect import PreparedFrame, infer_prepared, prepare_frame
from lineguard.services.inference.shadow import ShadowModel
from lineguard.v1.frame_pb2 import Frame
from lineguard.v1.inference_pb2 import InferenceResult
from lineguard.vision.model import Detector

log = structlog.get_logger("lineguard.inference")
# A batch that starts this soon after the one before ran back to back with it (frames were waiting).
BACK_TO_BACK_S = 0.02


class FrameBatcher:
    """The inference service's frame handler: prepare, queue, run in batches, settle each frame."""

    def __init__(self, ctx: ServiceContext, detector: Callable[[], Detector], shadow: ShadowModel | None = None):
        self.ctx = ctx
        self.detector = detector  # a callable: the model in use when a batch runs (it may be swapped)
        settings = ctx.config.model
        self.batcher: MicroBatcher[PreparedFrame, InferenceResult] = MicroBatcher(
            self._infer,
            batch_size=settings.batch_size,
            max_wait_s=settings.batch_wait_ms / 1000,
            after=self._shadow_after(shadow) if shadow is not None else None,
        )
        self.settling: set[asyncio.Task[None]] = set()
        # Admission (lineguard.runtime.admission): frames admitted and not yet prepared, in arrival order; how many
        # are admitted and not yet run to the end (waiting, being prepared, queued, running); the model's pace.
        self.frames = AdmittedFrames(ctx, "inference", lambda part: overload_result(part, self.detector()))
        self.handle = self.frames.handle  # the frame consumer's handler: admit (deferred) or refuse at once
        self._last_run_end: float | None = None
        takes = detector().max_batch
        if takes is not None and takes < settings.batch_size:
            log.warning(
                f"the model takes batches of at most {takes}: each batch runs in pieces of that size; "
                "export it with a dynamic batch axis to batch for real",
                batch_size=settings.batch_size,
            )

    def warm_up(self) -> None:
        """Run the model twice on a blank input (blocking): its first run allocates what it needs, and the second
        gives admission the model's time per frame before the first part comes (a burst at start is judged by it)."""
        detector = self.detector()
        spec = detector.runner.input
        size = detector.card.input_size
        shape = [d if d is not None else default for d, default in zip(spec.shape, (1, 3, size, size), strict=True)]
        blank = np.zeros(shape, dtype=spec.dtype)
        detector.runner.run(blank)
        started = time.perf_counter()
        detector.runner.run(blank)
        self.frames.pace.observe(time.perf_counter() - started, shape[0])

    def _shadow_after(
        self, shadow: ShadowModel
    ) -> Callable[[list[PreparedFrame], Callable[[], bool]], Awaitable[None]]:
        # A live frame waiting to be prepared waits as much as one queued for the model: the candidate runs neither.
        def after(ran: list[PreparedFrame], queued: Callable[[], bool]) -> Awaitable[None]:
            return shadow.after_batch(ran, lambda: queued() or bool(self.frames.waiting))

        return after

    def _infer(self, frames: list[PreparedFrame]) -> list[InferenceResult | BaseException]:
        started = time.perf_counter()
        try:
            return self._infer_batch(frames)
        finally:
            ended = time.perf_counter()
            # Back to back with the batch before (frames were waiting): the pace is the cycle from that one's end,
            # the event loop's work between the two included (settling, the next frame's decode competing for the
            # cores), which is what a frame waiting in line waits for; otherwise the run alone.
            last = self._last_run_end
            begun = last if last is not None and started - last < BACK_TO_BACK_S else started
            self.frames.pace.observe(ended - begun, len(frames))
            self._last_run_end = ended

    def _infer_batch(self, frames: list[PreparedFrame]) -> list[InferenceResult | BaseException]:
        # One model for the whole batch; a frame prepared for the model it replaced is prepared again.
        detector, config = self.detector(), self.ctx.config
        outcomes: list[Any] = [None] * len(frames)
        ready = []
        for i, prepared in enumerate(frames):
            try:
                ready.append(
                    (i, prepared if prepared.detector is detector else prepare_frame(prepared.frame, config, detector))
                )
            except FrameError as exc:  # this frame only; the others still run
                outcomes[i] = exc
        if ready:
            for (i, _), result in zip(ready, infer_prepared([p for _, p in ready], config, detector), strict=True):
                outcomes[i] = result
        return outcomes

    async def _feed(self) -> None:
        """Prepare the admitted frames in order, each while the model runs the ones before it, and queue them for
        the model; a frame that can no longer be judged in time (the model slowed down) is refused here."""
        while (admitted := await self.frames.next()) is not None:
            delivery, arrived = admitted
            queued = False
            try:
                if self.ctx.stopping.is_set():
                    raise Stopped("the service stopped before the frame ran")
                # Under the frame's consumer span, as if in its handler: what is published carries its trace.
                with tracing.attached(delivery.trace):
                    queued = await self._prepare_and_queue(delivery, arrived)
            except Exception as exc:  # noqa: BLE001 - deferred, so settled here by the bus's one failure policy
                await delivery.fail(exc)
            finally:
                if not queued:
                    self.frames.admitted -= 1  # a queued frame counts until the model has run it (_settle)

    async def _prepare_and_queue(self, delivery: Delivery[Frame], arrived: float) -> bool:
        """True once the frame is queued for the model; False when it is skipped (stale) or refused, and acked."""
        ahead = self.frames.admitted - 1 - len(self.frames.waiting)  # those behind it wait in `waiting`
        if self.ctx.is_stale(delivery) or not await self.frames.admits(delivery, ahead, arrived):
            await delivery.ack()
            return False
        try:
            prepared = await asyncio.to_thread(prepare_frame, delivery.message, self.ctx.config, self.detector())
        except FrameError as exc:
            raise BadMessage(str(exc)) from None
        # Stopped, when the service is stopping, hands the frame back: another instance (or the restart) takes it.
        future = await self.batcher.submit(prepared)
        if self.batcher.closed and not future.done():  # queued after the stopping batcher emptied its queue
            future.set_exception(Stopped("the service stopped before the frame ran"))
        task = asyncio.create_task(self._settle(delivery, future))
        self.settling.add(task)
        task.add_done_callback(self.settling.discard)
        return True

    async def _settle(self, delivery: Delivery[Frame], future: asyncio.Future[InferenceResult]) -> None:
        try:
            try:
                # The handler's span ended when it queued the frame (deferred): the model's run is a step of its own.
                with tracing.step("inference", attributes={"lineguard.inspection_id": delivery.inspection_id}):
                    result = await future
            finally:
                self.frames.admitted -= 1  # no longer ahead of anyone
            await self.ctx.publish("inference", result)
            await delivery.ack()
        except FrameError as exc:  # this frame can never be inspected
            await delivery.fail(BadMessage(str(exc)))
        except Exception as exc:  # noqa: BLE001 - deferred, so settled here by the bus's one failure policy
            await delivery.fail(exc)

    async def run(self) -> None:
        await asyncio.gather(self.batcher.run(self.ctx.stopping), self._feed())

    async def drain(self) -> None:
        """Wait for every queued frame to be settled (on stop, before the bus closes)."""
        if self.settling:
            await asyncio.wait(set(self.settling), timeout=10)
