"""The worker's pull feed against a real nats-server: one open request per batch, not one per message; what
comes while it stops is handed back at once; a consumer deleted under it stops it with the reason."""

from __future__ import annotations

import asyncio
import functools
import time

import pytest
from nats.aio.msg import Msg

from lineguard.bus import Delivery, Worker
from lineguard.bus.pull import ConsumerGone
from lineguard.contracts import msg_id, stream_name, subject
from lineguard.testing import waiting
from lineguard.testing.records import triggered_part
from lineguard.v1.trigger_pb2 import Trigger

SUBJECT = subject("trigger", "l1", "s1")


async def publish(bus, seq: int) -> None:
    message = Trigger(part=triggered_part(seq))
    await bus.publish(SUBJECT, message, msg_id=msg_id(message.part.inspection_id, "trigger"))


# The shared wait, looking as often as a hop takes: the first test compares its request count with the time taken.
wait_for = functools.partial(waiting.wait_for, timeout=10.0, poll_s=0.01)


async def test_messages_one_at_a_time_cost_one_pull_request_per_batch(bus_factory) -> None:
    bus = await bus_factory("svc", fetch_batch=8)
    requests: list[Msg] = []

    async def on_request(msg: Msg) -> None:
        requests.append(msg)

    # The pull requests the worker sends, seen by a plain subscriber on the server's API subject.
    await bus.nc.subscribe(f"$JS.API.CONSUMER.MSG.NEXT.{stream_name('trigger')}.svc-trigger", cb=on_request)
    seen: list[int] = []

    async def handle(d: Delivery[Trigger]) -> None:
        seen.append(d.message.part.sequence)

    worker = Worker(bus, kind="trigger", line="l1", message_type=Trigger, handler=handle)
    await worker.start()
    stopping = asyncio.Event()
    task = asyncio.create_task(worker.run(stopping))
    started = time.monotonic()
    for seq in range(1, 25):  # one at a time, each handled before the next is published: a line's pace
        await publish(bus, seq)
        await wait_for(lambda s=seq: len(seen) >= s)
    elapsed = time.monotonic() - started
    stopping.set()
    await task
    assert seen == list(range(1, 25))
    # 24 messages in batches of 8, and one more each time a request ran out its second unused; `fetch` sent 24+.
    assert len(requests) <= 24 / 8 + elapsed + 2, (len(requests), elapsed)


async def test_what_comes_while_the_worker_stops_is_handed_back_at_once(bus_factory) -> None:
    bus = await bus_factory("svc", ack_wait_s=30)
    handled: list[int] = []
    in_handler = asyncio.Event()
    release = asyncio.Event()

    async def handle(d: Delivery[Trigger]) -> None:
        handled.append(d.message.part.sequence)
        in_handler.set()
        await release.wait()

    worker = Worker(bus, kind="trigger", line="l1", message_type=Trigger, handler=handle)
    await worker.start()
    stopping = asyncio.Event()
    task = asyncio.create_task(worker.run(stopping))
    await publish(bus, 1)
    await asyncio.wait_for(in_handler.wait(), 10)
    await publish(bus, 2)  # delivered through the open request while the first is in hand
    await asyncio.sleep(0.3)
    stopping.set()
    await publish(bus, 3)  # after the stop: stays with the consumer
    release.set()
    await asyncio.wait_for(task, 10)
    assert handled == [1]
    # The one held handed back (nak), not left waiting 30 s for its ack, and not redelivered into the stopping
    # worker's request until the server gave up on it: a new worker gets both at once.
    again: list[int] = []

    async def handle_again(d: Delivery[Trigger]) -> None:
        again.append(d.message.part.sequence)

    second = Worker(bus, kind="trigger", line="l1", message_type=Trigger, handler=handle_again)
    stopping = asyncio.Event()
    task = asyncio.create_task(second.run(stopping))
    try:
        await wait_for(lambda: sorted(again) == [2, 3], timeout=5)
    finally:
        stopping.set()
        await task


async def test_a_consumer_deleted_under_the_worker_stops_it_with_the_reason(bus_factory) -> None:
    bus = await bus_factory("svc")

    async def handle(d: Delivery[Trigger]) -> None:
        return None

    worker = Worker(bus, kind="trigger", line="l1", message_type=Trigger, handler=handle)
    await worker.start()
    task = asyncio.create_task(worker.run(asyncio.Event()))
    await asyncio.sleep(0.2)  # its request is open
    await bus.js.delete_consumer(stream_name("trigger"), "svc-trigger")
    with pytest.raises(ConsumerGone, match=r"(?i)consumer deleted"):
        await asyncio.wait_for(task, 10)


async def test_a_worker_takes_up_its_messages_again_after_the_server_restarts(bus_factory, fresh_nats) -> None:
    """The open request dies with the server: the worker asks again (taken as lost, or refused while JetStream comes
    back) and handles what is published after the restart, within the 5 s the chaos test allows."""
    bus = await bus_factory("svc")
    seen: list[int] = []

    async def handle(d: Delivery[Trigger]) -> None:
        seen.append(d.message.part.sequence)

    worker = Worker(bus, kind="trigger", line="l1", message_type=Trigger, handler=handle)
    await worker.start()
    stopping = asyncio.Event()
    task = asyncio.create_task(worker.run(stopping))
    try:
        await publish(bus, 1)
        await wait_for(lambda: seen == [1])
        await asyncio.to_thread(fresh_nats.stop)
        await asyncio.to_thread(fresh_nats.start)
        await wait_for(lambda: bus.nc.is_connected)
        back = time.monotonic()
        await publish(bus, 2)
        await wait_for(lambda: seen == [1, 2], timeout=10)
        assert time.monotonic() - back < 5
    finally:
        stopping.set()
        await task
