"""Following a watched source (the registry's promotions, the line's shadow run) until the service stops, and
acting on the stop itself."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Literal, TypeVar

T = TypeVar("T")


async def until_stopped(stopping: asyncio.Event, items: AsyncIterator[T]) -> AsyncIterator[T]:
    """Each item of `items` as it comes, until `stopping` is set: a stop while waiting for the next one ends the
    iteration at once (the pending wait is cancelled), and `items` is closed either way."""
    stop = asyncio.ensure_future(stopping.wait())
    try:
        while not stopping.is_set():
            following = asyncio.ensure_future(anext(items))
            await asyncio.wait([following, stop], return_when=asyncio.FIRST_COMPLETED)
            if not following.done():
                following.cancel()
                with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                    await following
                return
            yield following.result()
    finally:
        stop.cancel()
        with contextlib.suppress(Exception):
            await items.aclose()  # type: ignore[attr-defined]


def when_set(event: asyncio.Event, then: Callable[[], None]) -> asyncio.Future[Literal[True]]:
    """Call `then()` once `event` is set (a stop waking a loop that waits on something else, with no timer);
    cancel the future returned to give up waiting."""
    waiting = asyncio.ensure_future(event.wait())
    waiting.add_done_callback(lambda done: None if done.cancelled() else then())
    return waiting
