"""Deadlines by id in one heap, and the loop that sleeps until the earliest is due.

A service with many things in flight, each with its own deadline (the decision service's
pending parts, the gateway's open inspections), sleeps until the earliest deadline rather
than polling every pending one on a timer: `add(id, when)` sets or moves one, `cancel(id)`
drops it, `run(stopping, on_due)` calls `on_due` with the ids whose time has come and is
woken at once when an earlier deadline is added or the service stops.

Times are in the clock's own units: `time.monotonic()` seconds by default, or wall-clock
nanoseconds for deadlines that count from a trigger time stamped on another machine
(`Deadlines(clock=time.time_ns, per_second=1e9)`)."""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, Generic, TypeVar

from lineguard.runtime.following import when_set

K = TypeVar("K", bound=Hashable)


class Deadlines(Generic[K]):
    def __init__(self, clock: Callable[[], float] = time.monotonic, per_second: float = 1.0):
        self.clock = clock
        self.per_second = per_second
        self._heap: list[tuple[float, int, K]] = []
        self._live: dict[K, tuple[float, int]] = {}  # each id's current (when, entry number)
        self._numbers = itertools.count()  # ties broken by insertion order; ids never compared
        self._wake = asyncio.Event()

    def __len__(self) -> int:
        return len(self._live)

    def __contains__(self, key: object) -> bool:
        return key in self._live

    def add(self, key: K, when: float) -> None:
        """Set `key`'s deadline to `when` (replacing the one it had); an earlier one than any wakes `run`."""
        current = self._live.get(key)
        if current is not None and current[0] == when:
            return
        earliest = self.next()
        number = next(self._numbers)
        self._live[key] = (when, number)
        heapq.heappush(self._heap, (when, number, key))
        if earliest is None or when < earliest:
            self._wake.set()
        self._compact()

    def cancel(self, key: K) -> None:
        """Drop `key`'s deadline, if it has one."""
        if self._live.pop(key, None) is not None:
            self._compact()

    def next(self) -> float | None:
        """The earliest deadline, None when there is none."""
        while self._heap and self._dropped(self._heap[0]):
            heapq.heappop(self._heap)  # cancelled or moved: its entry is dropped when it reaches the top
        return self._heap[0][0] if self._heap else None

    def due(self, now: float | None = None) -> list[K]:
        """Take every id whose deadline is `now` or earlier, earliest first."""
        now = self.clock() if now is None else now
        taken: list[K] = []
        while (earliest := self.next()) is not None and earliest <= now:
            _, _, key = heapq.heappop(self._heap)
            del self._live[key]
            taken.append(key)
        return taken

    async def run(self, stopping: asyncio.Event, on_due: Callable[[list[K]], Awaitable[Any]]) -> None:
        """Until `stopping` is set: sleep until the earliest deadline, then hand its id (and any due with it)
        to `on_due`, which may add and cancel deadlines itself."""
        stop = when_set(stopping, self._wake.set)
        try:
            while not stopping.is_set():
                # Cleared before looking, so a deadline added from here on wakes the wait below.
                self._wake.clear()
                due = self.due()
                if due:
                    await on_due(due)
                    continue
                earliest = self.next()
                timeout = None if earliest is None else max(0.0, (earliest - self.clock()) / self.per_second)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout)
        finally:
            stop.cancel()

    def _dropped(self, entry: tuple[float, int, K]) -> bool:
        live = self._live.get(entry[2])
        return live is None or live[1] != entry[1]

    def _compact(self) -> None:
        # Dropped entries wait in the heap until they reach its top; rebuilt once they outnumber the live ones.
        if len(self._heap) > 2 * len(self._live) + 64:
            self._heap = [(when, number, key) for key, (when, number) in self._live.items()]
            heapq.heapify(self._heap)
