"""Reading what services published, for tests and benchmarks."""

from __future__ import annotations

import asyncio
import contextlib

from nats.errors import TimeoutError as NatsTimeoutError

from lineguard.bus import Bus


async def collect(bus: Bus, subject: str, stream: str, count: int, timeout: float = 20.0) -> list:
    """The first `count` messages on `subject` in `stream`, waiting up to `timeout` for them to arrive."""
    sub = await bus.js.pull_subscribe(subject, stream=stream)
    got: list = []
    try:
        async with asyncio.timeout(timeout):
            while len(got) < count:
                with contextlib.suppress(NatsTimeoutError, TimeoutError):
                    got += await sub.fetch(count - len(got), timeout=0.5)
    finally:
        await sub.unsubscribe()
    return got


async def stored(bus: Bus, subject: str, stream: str, wait_s: float = 1.0) -> list:
    """Every message `stream` holds on `subject` now (up to 1000)."""
    sub = await bus.js.pull_subscribe(subject, stream=stream)
    try:
        return await sub.fetch(1000, timeout=wait_s)
    except (NatsTimeoutError, TimeoutError):
        return []
    finally:
        await sub.unsubscribe()
