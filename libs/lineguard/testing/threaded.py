"""An asyncio server run on a thread of its own, for tests and benchmarks that drive it from synchronous code
(a browser through Playwright's sync API, an HTTP client timing requests)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, Protocol


class Serves(Protocol):
    async def serve(self) -> None: ...

    def stop(self) -> None: ...


@contextlib.contextmanager
def serving_in_thread(server: Serves, timeout_s: float = 30.0) -> Iterator[asyncio.AbstractEventLoop]:
    """Run `server.serve()` on a new thread's event loop until the block ends; yields that loop, so the caller can
    hand it work with `call_in(loop, ...)`. A server that fails to serve raises its error when the block ends."""
    loop = asyncio.new_event_loop()
    failed: list[BaseException] = []

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(server.serve())
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            failed.append(exc)
        finally:
            loop.close()

    thread = threading.Thread(target=run, name="served", daemon=True)
    thread.start()
    try:
        yield loop
    finally:
        loop.call_soon_threadsafe(server.stop)
        thread.join(timeout_s)
    if failed:
        raise failed[0]
    if thread.is_alive():
        raise TimeoutError(f"the server did not stop within {timeout_s:g} s")


def call_in(loop: asyncio.AbstractEventLoop, work: Callable[[], Any] | Coroutine[Any, Any, Any]) -> Any:
    """Run a plain callable or a coroutine on `loop` (another thread's) and return its result."""
    if asyncio.iscoroutine(work):
        return asyncio.run_coroutine_threadsafe(work, loop).result(30)

    async def plain() -> Any:
        return work()

    return asyncio.run_coroutine_threadsafe(plain(), loop).result(30)
