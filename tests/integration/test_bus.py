"""The bus against a real nats-server: ids, acks, retries and dead letters."""

from __future__ import annotations

import asyncio

import pytest

from lineguard.bus import DEAD_REASON, DEAD_SUBJECT, BadMessage, Delivery, PublishRefused, Retry, Worker
from lineguard.contracts import dead_subject, msg_id, new_inspection_id, stream_name, subject
from lineguard.testing.streams import stored
from lineguard.v1.common_pb2 import Part
from lineguard.v1.trigger_pb2 import Trigger


def trigger(seq: int) -> Trigger:
    return Trigger(part=Part(inspection_id=new_inspection_id(), line="l1", station="s1", recipe_id="r", sequence=seq))


async def run_until(worker: Worker, condition, timeout: float = 10.0) -> None:
    stopping = asyncio.Event()
    task = asyncio.create_task(worker.run(stopping))
    try:
        async with asyncio.timeout(timeout):
            while not condition():
                await asyncio.sleep(0.02)
    finally:
        stopping.set()
        await task


async def dead_letters(bus, kind: str) -> list:
    return await stored(bus, dead_subject(kind), stream_name("dead"))


async def test_provisioning_is_idempotent(bus_factory) -> None:
    bus = await bus_factory("a")
    await bus_factory("b")  # a second service provisions the same streams again
    info = await bus.js.stream_info(stream_name("frame"))
    assert info.config.subjects == ["lg.frame.>"]


async def test_publish_with_same_id_is_stored_once(bus_factory) -> None:
    bus = await bus_factory()
    msg = trigger(1)
    first = await bus.publish(subject("trigger", "l1", "s1"), msg, msg_id=msg_id(msg.part.inspection_id, "trigger"))
    again = await bus.publish(subject("trigger", "l1", "s1"), msg, msg_id=msg_id(msg.part.inspection_id, "trigger"))
    assert not first.duplicate and again.duplicate
    info = await bus.js.stream_info(stream_name("trigger"))
    assert info.state.messages == 1


async def test_worker_hands_each_message_once_and_acks(bus_factory) -> None:
    bus = await bus_factory("svc")
    seen: list[int] = []

    async def handle(d: Delivery[Trigger]) -> None:
        seen.append(d.message.part.sequence)

    for i in range(20):
        m = trigger(i)
        await bus.publish(subject("trigger", "l1", "s1"), m, msg_id=msg_id(m.part.inspection_id, "t"))
    worker = Worker(bus, kind="trigger", line="l1", message_type=Trigger, handler=handle)
    await run_until(worker, lambda: len(seen) >= 20)
    assert seen == list(range(20))
    info = await bus.js.consumer_info(stream_name("trigger"), "svc-trigger")
    assert info.num_ack_pending == 0 and info.num_pending == 0


async def test_undecodable_message_is_dead_lettered_and_the_next_one_served(bus_factory) -> None:
    bus = await bus_factory("svc")
    seen: list[str] = []

    async def handle(d: Delivery[Trigger]) -> None:
        seen.append(d.inspection_id)

    await bus.publish(subject("trigger", "l1", "s1"), b"\xff\xff not protobuf", msg_id="garbage")
    good = trigger(2)
    await bus.publish(subject("trigger", "l1", "s1"), good, msg_id="good")
    worker = Worker(bus, kind="trigger", line="l1", message_type=Trigger, handler=handle)
    await run_until(worker, lambda: bool(seen))
    assert seen == [good.part.inspection_id]
    dead = await dead_letters(bus, "trigger")
    assert len(dead) == 1
    assert dead[0].data == b"\xff\xff not protobuf"  # nothing lost: the original bytes
    assert "undecodable trigger message" in dead[0].headers[DEAD_REASON]
    assert dead[0].headers[DEAD_SUBJECT] == "lg.trigger.l1.s1"


async def test_bad_message_from_handler_goes_to_dead_letter_with_reason(bus_factory) -> None:
    bus = await bus_factory("svc")
    handled: list[int] = []

    async def handle(d: Delivery[Trigger]) -> None:
        if d.message.part.recipe_id == "nope":
            raise BadMessage("unknown recipe 'nope'")
        handled.append(d.message.part.sequence)

    bad = trigger(1)
    bad.part.recipe_id = "nope"
    for m in (bad, trigger(2)):
        await bus.publish(subject("trigger", "l1", "s1"), m, msg_id=m.part.inspection_id)
    worker = Worker(bus, kind="trigger", line="l1", message_type=Trigger, handler=handle)
    await run_until(worker, lambda: handled == [2])
    dead = await dead_letters(bus, "trigger")
    assert [d.headers[DEAD_REASON] for d in dead] == ["unknown recipe 'nope'"]


async def test_failing_handler_is_retried_then_dead_lettered(bus_factory) -> None:
    bus = await bus_factory("svc", max_deliver=3, nak_delay_s=0.05)
    attempts: list[int] = []

    async def handle(d: Delivery[Trigger]) -> None:
        attempts.append(d.num_delivered)
        raise ConnectionError("database unreachable")

    m = trigger(1)
    await bus.publish(subject("trigger", "l1", "s1"), m, msg_id=m.part.inspection_id)
    worker = Worker(bus, kind="trigger", line="l1", message_type=Trigger, handler=handle)
    await run_until(worker, lambda: len(attempts) >= 3)
    await asyncio.sleep(0.3)
    assert attempts == [1, 2, 3]
    dead = await dead_letters(bus, "trigger")
    assert len(dead) == 1
    assert "gave up after 3 deliveries: ConnectionError: database unreachable" in dead[0].headers[DEAD_REASON]


async def test_message_without_inspection_id_is_rejected(bus_factory) -> None:
    bus = await bus_factory("svc")

    async def handle(d: Delivery[Trigger]) -> None:
        pytest.fail("a message without an inspection id must not reach the handler")

    await bus.publish(subject("trigger", "l1", "s1"), Trigger(source="x"), msg_id="no-id")
    worker = Worker(bus, kind="trigger", line="l1", message_type=Trigger, handler=handle)
    dead: list = []

    async def poll() -> None:
        dead.extend(await dead_letters(bus, "trigger"))

    stopping = asyncio.Event()
    task = asyncio.create_task(worker.run(stopping))
    for _ in range(50):
        await poll()
        if dead:
            break
    stopping.set()
    await task
    assert "has no part.inspection_id" in dead[0].headers[DEAD_REASON]


async def test_retry_forever_worker_never_dead_letters_a_failing_message(bus_factory) -> None:
    bus = await bus_factory("svc", max_deliver=2, nak_delay_s=0.02)
    attempts: list[int] = []

    async def handle(d: Delivery[Trigger]) -> None:
        attempts.append(d.num_delivered)
        if len(attempts) < 5:
            raise Retry("database restarting", delay_s=0.02)

    m = trigger(1)
    await bus.publish(subject("trigger", "l1", "s1"), m, msg_id=m.part.inspection_id)
    worker = Worker(bus, kind="trigger", line="l1", message_type=Trigger, handler=handle, retry_forever=True)
    await run_until(worker, lambda: len(attempts) >= 5)
    assert attempts == [1, 2, 3, 4, 5]
    assert await dead_letters(bus, "trigger") == []


async def test_retry_forever_still_dead_letters_an_unexpected_error(bus_factory) -> None:
    bus = await bus_factory("svc", max_deliver=2, nak_delay_s=0.02)
    attempts: list[int] = []

    async def handle(d: Delivery[Trigger]) -> None:
        attempts.append(d.num_delivered)
        raise ValueError("value too long for column serial")  # not transient: retrying cannot help

    m = trigger(1)
    await bus.publish(subject("trigger", "l1", "s1"), m, msg_id=m.part.inspection_id)
    worker = Worker(bus, kind="trigger", line="l1", message_type=Trigger, handler=handle, retry_forever=True)
    await run_until(worker, lambda: len(attempts) >= 2)
    await asyncio.sleep(0.3)
    dead = await dead_letters(bus, "trigger")
    assert attempts == [1, 2] and len(dead) == 1
    assert "ValueError: value too long" in dead[0].headers[DEAD_REASON]


async def test_part_whose_station_cannot_be_a_subject_is_dead_lettered(bus_factory) -> None:
    bus = await bus_factory("svc")
    handled: list[int] = []

    async def handle(d: Delivery[Trigger]) -> None:
        handled.append(d.message.part.sequence)

    bad = trigger(1)
    bad.part.station = "s1.extra"
    for m in (bad, trigger(2)):
        await bus.publish(subject("trigger", "l1", "s1"), m, msg_id=m.part.inspection_id)
    worker = Worker(bus, kind="trigger", line="l1", message_type=Trigger, handler=handle)
    await run_until(worker, lambda: handled == [2])
    [dead] = await dead_letters(bus, "trigger")
    assert "station id 's1.extra' cannot be part of a NATS subject" in dead.headers[DEAD_REASON]


async def test_a_full_stream_of_records_refuses_new_ones_and_a_full_frame_stream_drops_its_oldest(bus_factory) -> None:
    # Decisions are what the MES must get: a full stream refuses (the publisher retries, then dead-letters with
    # the reason) rather than silently dropping the oldest unwritten ones. Frames are worthless past their
    # deadline: the oldest make room.
    bus = await bus_factory(stream_max_bytes=8 * 1024)
    record = bytes(1500)
    with pytest.raises(PublishRefused, match=r"publish to lg.decision.l1.s1 refused: maximum bytes exceeded"):
        for i in range(10):
            await bus.publish(subject("decision", "l1", "s1"), record, msg_id=f"d{i}")
    decisions = await bus.js.stream_info(stream_name("decision"))
    assert decisions.state.first_seq == 1 and decisions.config.discard == "new"
    for i in range(10):
        await bus.publish(subject("frame", "l1", "s1"), record, msg_id=f"f{i}")
    frames = await bus.js.stream_info(stream_name("frame"))
    assert frames.state.first_seq > 1 and frames.state.last_seq == 10
