"""The bus against a real nats-server: ids, acks, retries and dead letters."""

from __future__ import annotations

import asyncio

import nats
import pytest
import structlog
from nats.js.api import PubAck

from lineguard.bus import (
    DEAD_REASON,
    DEAD_SUBJECT,
    BadMessage,
    Delivery,
    PublishRefused,
    PublishUnconfirmed,
    Retry,
    Worker,
)
from lineguard.bus.acks import PendingAcks
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


async def test_publishes_in_flight_to_a_full_stream_each_get_the_servers_refusal(bus_factory) -> None:
    # All in flight at once: each refused one is told why at once (not a timeout), each acked one is stored.
    bus = await bus_factory(stream_max_bytes=8 * 1024, publish_timeout_s=60)
    async with asyncio.timeout(10):
        results = await asyncio.gather(
            *(bus.publish(subject("decision", "l1", "s1"), bytes(1500), msg_id=f"d{i}") for i in range(20)),
            return_exceptions=True,
        )
    stored = [r for r in results if isinstance(r, PubAck)]
    refused = [r for r in results if isinstance(r, PublishRefused)]
    assert len(stored) + len(refused) == 20 and stored and refused
    assert all("maximum bytes exceeded" in r.reason and r.subject == "lg.decision.l1.s1" for r in refused)
    info = await bus.js.stream_info(stream_name("decision"))
    assert info.state.messages == len(stored)
    assert sorted(a.seq for a in stored) == list(range(1, len(stored) + 1))


async def test_the_same_message_id_in_flight_at_once_is_stored_once(bus_factory) -> None:
    bus = await bus_factory()
    msg = trigger(1)
    acks = await asyncio.gather(
        *(bus.publish(subject("trigger", "l1", "s1"), msg, msg_id=msg.part.inspection_id) for _ in range(5))
    )
    assert sum(not a.duplicate for a in acks) == 1
    assert {a.seq for a in acks} == {1}
    info = await bus.js.stream_info(stream_name("trigger"))
    assert info.state.messages == 1


async def test_a_subject_no_stream_takes_is_refused_with_that_reason(bus_factory) -> None:
    bus = await bus_factory(publish_timeout_s=60)
    async with asyncio.timeout(10):
        with pytest.raises(PublishRefused, match="no stream takes this subject"):
            await bus.publish("nowhere.l1.s1", b"x", msg_id="x")


async def test_publishes_in_flight_are_bounded_and_an_unanswered_one_is_unconfirmed(nats_url) -> None:
    # A subscriber that never answers stands for a stream that stopped acking.
    nc = await nats.connect(nats_url)
    try:
        await nc.subscribe("silent.stream")
        acks = PendingAcks(nc, timeout_s=0.5, max_in_flight=3)
        tasks = [asyncio.create_task(acks.request("silent.stream", b"x", {"Nats-Msg-Id": f"s{i}"})) for i in range(8)]
        await asyncio.sleep(0.2)
        assert acks.in_flight == 3
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert all(isinstance(r, PublishUnconfirmed) for r in results)
        assert "publish to silent.stream unconfirmed: no ack from the stream within 0.5 s" in str(results[0])
        assert acks.in_flight == 0
    finally:
        await nc.close()


async def test_a_server_stopped_mid_publish_fails_what_it_did_not_store(fresh_nats, bus_factory) -> None:
    bus = await bus_factory(publish_timeout_s=1.0)
    decisions = subject("decision", "l1", "s1")

    async def publish(i: int) -> PubAck:
        await asyncio.sleep(i * 0.002)  # spread over a second: some before the stop, some during, some after
        return await bus.publish(decisions, f"decision {i}".encode(), msg_id=f"d{i}")

    tasks = [asyncio.create_task(publish(i)) for i in range(500)]
    await asyncio.sleep(0.3)
    await asyncio.to_thread(fresh_nats.stop)
    results = await asyncio.gather(*tasks, return_exceptions=True)
    acked = {i: r for i, r in enumerate(results) if isinstance(r, PubAck)}
    failed = [r for r in results if not isinstance(r, PubAck)]
    assert acked and failed
    # A publish the server never acked surfaces as an error, whichever way the connection went: no ack in time,
    # refused by a server whose JetStream had stopped first, or the connection's own error.
    assert all(isinstance(r, (PublishUnconfirmed, PublishRefused, nats.errors.Error)) for r in failed), failed[:3]

    fresh_nats.start()  # the same port and store: what was acked must be there
    async with asyncio.timeout(20):
        while not bus.nc.is_connected:
            await asyncio.sleep(0.05)
    for i, ack in acked.items():
        stored_msg = await bus.js.get_msg(stream_name("decision"), ack.seq)
        assert stored_msg.data == f"decision {i}".encode()
        assert stored_msg.headers["Nats-Msg-Id"] == f"d{i}"


async def test_the_handler_logs_under_its_inspection_id(bus_factory) -> None:
    bus = await bus_factory("svc")
    bound: list[dict] = []

    async def handle(d: Delivery[Trigger]) -> None:
        bound.append(structlog.contextvars.get_contextvars())

    messages = [trigger(1), trigger(2)]
    for m in messages:
        await bus.publish(subject("trigger", "l1", "s1"), m, msg_id=m.part.inspection_id)
    worker = Worker(bus, kind="trigger", line="l1", message_type=Trigger, handler=handle)
    await run_until(worker, lambda: len(bound) == 2)
    assert bound == [{"inspection_id": m.part.inspection_id} for m in messages]
