"""The inference service's frame pipeline: prepare a frame while the model runs the one before,
run frames that arrive while the model is busy as one batch, settle each on its own.

The bus worker hands frames over one at a time. The handler decodes and letterboxes the
frame (in a thread: the model is meanwhile running the frames queued before it), queues it
and defers its ack (`delivery.defer()`); a frame that can never be inspected is dead-lettered
there with its reason. A loop takes up to `model.batch_size` queued frames, waiting at most
`batch_wait_ms` after the first for more (with batch_size 1 it never waits), and runs them as
one model call off the event loop. Each frame is then settled on its own: its result published
and the frame acked while the next batch already runs, or its failure settled by the bus's one
failure policy (`delivery.fail`; a frame the stopping batcher never ran is handed back). The
queue holds two batches at most, so a busy model slows fetching down rather than piling frames
up past their ack wait."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, TypeVar

import structlog

from lineguard.bus import BadMessage, Delivery, HandBack
from lineguard.imaging import FrameError
from lineguard.runtime import tracing
from lineguard.runtime.service import ServiceContext
from lineguard.services.inference.detect import PreparedFrame, infer_prepared, prepare_frame
from lineguard.services.inference.shadow import ShadowModel
from lineguard.v1.frame_pb2 import Frame
from lineguard.v1.inference_pb2 import InferenceResult
from lineguard.vision.model import Detector

T = TypeVar("T")
R = TypeVar("R")
log = structlog.get_logger("lineguard.inference")


class Stopped(HandBack):
    """The batcher stopped before this item ran; it is handed back to the bus, never dead-lettered."""


class MicroBatcher(Generic[T, R]):
    """Collects submitted items into batches of up to `batch_size`, runs each with `run_batch` in a thread.

    `run_batch(items)` returns one outcome per item: its result, or the exception that item failed with.
    `after(items, waiting)`, when given, runs once a batch's outcomes are handed over, before the next batch, with
    the items that succeeded and `waiting()`, whether more items wait (shadow mode runs its candidate there)."""

    def __init__(
        self,
        run_batch: Callable[[list[T]], Sequence[R | BaseException]],
        *,
        batch_size: int,
        max_wait_s: float,
        after: Callable[[list[T], Callable[[], bool]], Awaitable[None]] | None = None,
    ):
        self.run_batch = run_batch
        self.after = after
        self.batch_size = batch_size
        self.max_wait_s = max_wait_s
        self.queue: asyncio.Queue[tuple[T, asyncio.Future[R]]] = asyncio.Queue(maxsize=2 * batch_size)
        self.closed = False
        self.batches: list[int] = []  # the size of each batch run, for tests and metrics

    async def submit(self, item: T) -> asyncio.Future[R]:
        """Queue `item` (waiting while the queue is full); the future resolves to its outcome."""
        if self.closed:
            raise Stopped("the batcher has stopped")
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        await self.queue.put((item, future))
        return future

    async def run(self, stopping: asyncio.Event) -> None:
        """Run batches until `stopping` is set and every queued item has run."""
        try:
            while True:
                first = await self._first(stopping)
                if first is None:
                    return
                await self._run([first, *await self._more()])
        finally:
            self.closed = True
            while not self.queue.empty():
                _, future = self.queue.get_nowait()
                if not future.done():
                    future.set_exception(Stopped("the service stopped before the frame ran"))

    async def _first(self, stopping: asyncio.Event) -> tuple[T, asyncio.Future[R]] | None:
        while True:
            with contextlib.suppress(asyncio.QueueEmpty):
                return self.queue.get_nowait()
            if stopping.is_set():
                return None
            with contextlib.suppress(TimeoutError):
                # Bounded, so that a stop is noticed while idle.
                return await asyncio.wait_for(self.queue.get(), timeout=0.2)

    async def _more(self) -> list[tuple[T, asyncio.Future[R]]]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_wait_s
        more: list[tuple[T, asyncio.Future[R]]] = []
        while len(more) < self.batch_size - 1:
            try:
                more.append(self.queue.get_nowait())
                continue
            except asyncio.QueueEmpty:
                pass
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                more.append(await asyncio.wait_for(self.queue.get(), timeout=remaining))
            except TimeoutError:
                break
        return more

    async def _run(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        self.batches.append(len(batch))
        try:
            outcomes: Sequence[R | BaseException] = await asyncio.to_thread(self.run_batch, [i for i, _ in batch])
        except Exception as exc:  # noqa: BLE001 - the whole batch failed: every item gets the cause
            outcomes = [exc] * len(batch)
        for (_, future), outcome in zip(batch, outcomes, strict=True):
            if future.done():
                continue
            if isinstance(outcome, BaseException):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)
        if self.after is not None:
            ran = [
                item
                for (item, _), outcome in zip(batch, outcomes, strict=True)
                if not isinstance(outcome, BaseException)
            ]
            await self.after(ran, lambda: not self.queue.empty())


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
            after=shadow.after_batch if shadow is not None else None,
        )
        self.settling: set[asyncio.Task[None]] = set()
        takes = detector().max_batch
        if takes is not None and takes < settings.batch_size:
            log.warning(
                f"the model takes batches of at most {takes}: each batch runs in pieces of that size; "
                "export it with a dynamic batch axis to batch for real",
                batch_size=settings.batch_size,
            )

    def _infer(self, frames: list[PreparedFrame]) -> list[InferenceResult | BaseException]:
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

    async def handle(self, delivery: Delivery[Frame]) -> None:
        if self.ctx.is_stale(delivery):
            return
        try:
            prepared = await asyncio.to_thread(prepare_frame, delivery.message, self.ctx.config, self.detector())
        except FrameError as exc:
            raise BadMessage(str(exc)) from None
        # Stopped, when the service is stopping, hands the frame back: another instance (or the restart) takes it.
        future = await self.batcher.submit(prepared)
        delivery.defer()
        task = asyncio.create_task(self._settle(delivery, future))
        self.settling.add(task)
        task.add_done_callback(self.settling.discard)

    async def _settle(self, delivery: Delivery[Frame], future: asyncio.Future[InferenceResult]) -> None:
        try:
            # The handler's span ended when it queued the frame (deferred): the model's run is a step of its own.
            with tracing.step("inference", attributes={"lineguard.inspection_id": delivery.inspection_id}):
                result = await future
            await self.ctx.publish("inference", result)
            await delivery.ack()
        except FrameError as exc:  # this frame can never be inspected
            await delivery.fail(BadMessage(str(exc)))
        except Exception as exc:  # noqa: BLE001 - deferred, so settled here by the bus's one failure policy
            await delivery.fail(exc)

    async def run(self) -> None:
        await self.batcher.run(self.ctx.stopping)

    async def drain(self) -> None:
        """Wait for every queued frame to be settled (on stop, before the bus closes)."""
        if self.settling:
            await asyncio.wait(set(self.settling), timeout=10)
