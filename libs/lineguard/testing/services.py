"""Running a service in-process for tests and benchmarks (the real runtime, the real bus)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from lineguard.config import LineConfig
from lineguard.runtime.service import Setup, run_service


@dataclass
class RunningService:
    """A service running_service started; `stop()` stops it before the block ends (a test of how it drains)."""

    stopping: asyncio.Event
    task: asyncio.Task[None]

    async def stop(self, timeout_s: float = 30) -> None:
        """Tell it to stop and wait until it has (what it raised, raised here)."""
        self.stopping.set()
        await asyncio.wait_for(self.task, timeout=timeout_s)


@contextlib.asynccontextmanager
async def running_service(
    name: str, config: LineConfig, setup: Setup, timeout_s: float = 30
) -> AsyncIterator[RunningService]:
    """Start `setup` as service `name`, wait until it serves, stop it on exit."""
    stopping, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(run_service(name, config, setup, stopping=stopping, ready=ready))
    waiter = asyncio.create_task(ready.wait())
    done, _ = await asyncio.wait([task, waiter], timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        waiter.cancel()
        task.result()  # raises what stopped the service
        raise RuntimeError(f"service {name} stopped before it was ready")
    if waiter not in done:
        stopping.set()
        raise TimeoutError(f"service {name} not ready within {timeout_s}s")
    service = RunningService(stopping, task)
    try:
        yield service
    finally:
        await service.stop()
