"""Waiting in tests for something a service does in its own time, by polling, never by a fixed sleep."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable


async def wait_for(condition: Callable[[], object], timeout: float = 20.0, poll_s: float = 0.05) -> None:
    """Until `condition()` (a plain or async callable) is truthy, looking every `poll_s`; TimeoutError after
    `timeout` seconds."""
    async with asyncio.timeout(timeout):
        while True:
            result = condition()
            if inspect.isawaitable(result):
                result = await result
            if result:
                return
            await asyncio.sleep(poll_s)
