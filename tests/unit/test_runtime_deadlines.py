"""The deadline scheduler: ids taken in deadline order, cancel and move, and a loop that sleeps until the
earliest deadline, woken by an earlier one or by the stop."""

from __future__ import annotations

import asyncio
import time

from lineguard.runtime.deadlines import Deadlines


def test_ids_are_taken_in_deadline_order_each_once() -> None:
    d: Deadlines[str] = Deadlines()
    for key, when in (("c", 3.0), ("a", 1.0), ("b", 2.0), ("a2", 1.0)):
        d.add(key, when)
    assert d.next() == 1.0 and len(d) == 4
    assert d.due(0.5) == []
    assert d.due(2.0) == ["a", "a2", "b"]  # ties in the order added
    assert d.due(2.0) == [] and d.next() == 3.0 and "c" in d
    assert d.due(10.0) == ["c"] and d.next() is None and len(d) == 0


def test_cancel_and_move() -> None:
    d: Deadlines[str] = Deadlines()
    d.add("a", 1.0)
    d.add("b", 2.0)
    d.cancel("a")
    d.cancel("never-added")
    assert "a" not in d and d.next() == 2.0
    d.add("b", 5.0)  # moved later: its old deadline no longer counts
    d.add("c", 3.0)
    assert d.due(4.0) == ["c"]
    assert d.due(5.0) == ["b"]


def test_cancelled_entries_do_not_pile_up_behind_a_live_one() -> None:
    # The decision service cancels nearly every deadline it adds (the part was decided in time).
    d: Deadlines[int] = Deadlines()
    d.add(-1, 0.0)
    for i in range(10_000):
        d.add(i, 1000.0 + i)
        d.cancel(i)
    assert len(d) == 1 and d.next() == 0.0
    assert len(d._heap) <= 2 + 64 + 1
    assert d.due(1e9) == [-1]


async def test_the_loop_sleeps_until_the_earliest_deadline() -> None:
    d: Deadlines[str] = Deadlines()
    stopping = asyncio.Event()
    fired: list[tuple[str, float]] = []
    start = time.monotonic()

    async def on_due(keys: list[str]) -> None:
        fired.extend((k, time.monotonic() - start) for k in keys)

    d.add("late", start + 0.3)
    d.add("early", start + 0.1)
    d.add("gone", start + 0.2)
    d.cancel("gone")
    loop = asyncio.create_task(d.run(stopping, on_due))
    await asyncio.sleep(0.45)
    stopping.set()
    await loop
    assert [k for k, _ in fired] == ["early", "late"]
    assert 0.1 <= fired[0][1] < 0.25 and fired[1][1] >= 0.3  # never early; on time give or take the box's load


async def test_an_earlier_deadline_added_wakes_the_sleeper() -> None:
    d: Deadlines[str] = Deadlines()
    stopping = asyncio.Event()
    fired: list[float] = []
    start = time.monotonic()

    async def on_due(keys: list[str]) -> None:
        fired.append(time.monotonic() - start)

    d.add("far", start + 60)
    loop = asyncio.create_task(d.run(stopping, on_due))
    await asyncio.sleep(0.05)  # the loop is asleep until "far"
    d.add("near", time.monotonic() + 0.05)
    await asyncio.sleep(0.3)
    stopping.set()
    await loop
    assert len(fired) == 1 and 0.1 <= fired[0] < 0.3 and "far" in d


async def test_the_stop_wakes_the_loop_at_once_and_due_ids_may_add_more() -> None:
    d: Deadlines[str] = Deadlines()
    stopping = asyncio.Event()
    fired: list[str] = []

    async def on_due(keys: list[str]) -> None:
        fired.extend(keys)
        if "first" in keys:
            d.add("again", time.monotonic() + 0.02)  # e.g. the gateway's retry of an ack the bus refused

    d.add("first", time.monotonic() + 0.02)
    loop = asyncio.create_task(d.run(stopping, on_due))
    await asyncio.sleep(0.2)
    assert fired == ["first", "again"]
    d.add("next-hour", time.monotonic() + 3600)
    stopped = time.monotonic()
    stopping.set()
    await asyncio.wait_for(loop, timeout=1)
    assert time.monotonic() - stopped < 0.25


async def test_another_clock_in_its_own_units() -> None:
    # The decision service's: wall-clock nanoseconds, the unit of the trigger time a deadline counts from.
    d: Deadlines[str] = Deadlines(clock=time.time_ns, per_second=1_000_000_000)
    stopping = asyncio.Event()
    fired: list[str] = []

    async def on_due(keys: list[str]) -> None:
        fired.extend(keys)
        stopping.set()

    d.add("part", time.time_ns() + 50_000_000)
    started = time.monotonic()
    await asyncio.wait_for(d.run(stopping, on_due), timeout=2)
    assert fired == ["part"] and 0.04 <= time.monotonic() - started < 0.5
