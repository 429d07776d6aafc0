"""Running items in batches: what arrives while the last batch runs (or within a short wait) runs as the next.

Used where a batch costs little more than one item: the inference service's model calls, the results
service's database writes. Each item gets its own outcome (a future), so one bad item fails alone."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from lineguard.bus import HandBack
from lineguard.runtime.following import when_set

T = TypeVar("T")
R = TypeVar("R")


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
        self._wake = asyncio.Event()  # set by submit() and by the stop: the idle run loop waits on it alone

    async def submit(self, item: T) -> asyncio.Future[R]:
        """Queue `item` (waiting while the queue is full); the future resolves to its outcome."""
        if self.closed:
            raise Stopped("the batcher has stopped")
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        await self.queue.put((item, future))
        self._wake.set()
        return future

    async def run(self, stopping: asyncio.Event) -> None:
        """Run batches until `stopping` is set and every queued item has run."""
        stop = when_set(stopping, self._wake.set)
        try:
            while True:
                first = await self._first(stopping)
                if first is None:
                    return
                await self._run([first, *await self._more()])
        finally:
            stop.cancel()
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
            # Woken by an item or by the stop, never by a timer: idle, the batcher does nothing at all.
            self._wake.clear()
            await self._wake.wait()

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
