"""The micro-batcher on its own: batches up to a size, a lone item waits at most the wait, each item
gets its own outcome, a stop runs what is queued and refuses the rest."""

from __future__ import annotations

import asyncio
import time

import pytest

from lineguard.runtime.batching import MicroBatcher, Stopped


def doubling(delay_s: float = 0.0):
    def run(items: list[int]) -> list[int | BaseException]:
        time.sleep(delay_s)
        return [ValueError(f"item {i} is odd") if i % 2 else i * 2 for i in items]

    return run


async def test_items_arriving_together_run_in_batches_of_at_most_the_size() -> None:
    batcher = MicroBatcher(doubling(0.05), batch_size=4, max_wait_s=0.05)
    stopping = asyncio.Event()
    loop = asyncio.create_task(batcher.run(stopping))
    futures = [await batcher.submit(i * 2) for i in range(10)]
    assert await asyncio.gather(*futures) == [i * 4 for i in range(10)]
    stopping.set()
    await loop
    assert sum(batcher.batches) == 10 and max(batcher.batches) == 4
    assert len(batcher.batches) <= 4  # not one run per item


async def test_a_lone_item_runs_after_the_wait_rather_than_waiting_for_company() -> None:
    batcher = MicroBatcher(doubling(), batch_size=8, max_wait_s=0.05)
    stopping = asyncio.Event()
    loop = asyncio.create_task(batcher.run(stopping))
    started = time.perf_counter()
    assert await (await batcher.submit(4)) == 8
    waited = time.perf_counter() - started
    stopping.set()
    await loop
    assert batcher.batches == [1]
    assert 0.04 <= waited < 1.0


async def test_each_item_gets_its_own_outcome() -> None:
    batcher = MicroBatcher(doubling(), batch_size=4, max_wait_s=0.05)
    stopping = asyncio.Event()
    loop = asyncio.create_task(batcher.run(stopping))
    futures = [await batcher.submit(i) for i in (2, 3, 4)]
    outcomes = await asyncio.gather(*futures, return_exceptions=True)
    stopping.set()
    await loop
    assert outcomes[0] == 4 and outcomes[2] == 8
    assert isinstance(outcomes[1], ValueError) and str(outcomes[1]) == "item 3 is odd"


async def test_a_batch_that_fails_as_a_whole_fails_each_item_with_the_cause() -> None:
    def broken(items: list[int]) -> list[int]:
        raise RuntimeError("the model crashed")

    batcher = MicroBatcher(broken, batch_size=4, max_wait_s=0.01)
    stopping = asyncio.Event()
    loop = asyncio.create_task(batcher.run(stopping))
    futures = [await batcher.submit(i) for i in range(2)]
    outcomes = await asyncio.gather(*futures, return_exceptions=True)
    stopping.set()
    await loop
    assert [str(o) for o in outcomes] == ["the model crashed"] * 2


async def test_a_stop_runs_what_is_queued_then_refuses_new_items() -> None:
    batcher = MicroBatcher(doubling(), batch_size=2, max_wait_s=0.0)
    futures = [await batcher.submit(i) for i in (2, 4, 6)]  # queued before the loop starts
    stopping = asyncio.Event()
    stopping.set()
    await batcher.run(stopping)
    assert await asyncio.gather(*futures) == [4, 8, 12]
    with pytest.raises(Stopped):
        await batcher.submit(8)


async def test_an_idle_batcher_sleeps_until_an_item_or_the_stop_and_notices_either_at_once() -> None:
    batcher = MicroBatcher(doubling(), batch_size=1, max_wait_s=0.0)
    stopping = asyncio.Event()
    loop = asyncio.create_task(batcher.run(stopping))
    await asyncio.sleep(0.3)  # idle: no timer wakes it (the event loop holds no timer of the batcher's)
    assert not [h for h in asyncio.get_running_loop()._scheduled if not h.cancelled()]  # type: ignore[attr-defined]
    started = time.perf_counter()
    assert await (await batcher.submit(2)) == 4
    stopping.set()
    await asyncio.wait_for(loop, timeout=0.1)  # the stop, while idle, ends the loop at once
    assert time.perf_counter() - started < 0.1
