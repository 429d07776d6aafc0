"""The one failure policy (`Delivery.fail`) on a real nats-server, without a worker around it: what the
bus worker, the inference batcher and the decision service each do with a message whose handling failed."""

from __future__ import annotations

import time
from itertools import pairwise

import pytest
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import AckPolicy, ConsumerConfig

from lineguard.bus import DEAD_REASON, DEAD_SUBJECT, BadMessage, Bus, Delivery, HandBack, Retry
from lineguard.contracts import dead_subject, msg_id, new_inspection_id, stream_name, subject
from lineguard.testing.streams import stored
from lineguard.v1.common_pb2 import Part
from lineguard.v1.trigger_pb2 import Trigger


class Consumer:
    """A pull consumer that never gives up itself, so that only the policy decides a message's end."""

    def __init__(self, bus: Bus, retry_forever: bool = False):
        self.bus = bus
        self.retry_forever = retry_forever
        self.sub = None

    async def start(self) -> Consumer:
        config = ConsumerConfig(durable_name="policy", ack_policy=AckPolicy.EXPLICIT, ack_wait=30, max_deliver=-1)
        self.sub = await self.bus.js.pull_subscribe(
            subject("trigger", "l1", "s1"), durable="policy", stream=stream_name("trigger"), config=config
        )
        return self

    async def next(self, timeout: float = 5.0) -> Delivery[Trigger] | None:
        try:
            [msg] = await self.sub.fetch(1, timeout=timeout)
        except (NatsTimeoutError, TimeoutError):
            return None
        return Delivery(Trigger.FromString(msg.data), msg, "trigger", self.bus, retry_forever=self.retry_forever)


async def send_one(bus: Bus) -> Trigger:
    message = Trigger(part=Part(inspection_id=new_inspection_id(), line="l1", station="s1", recipe_id="pcb-a"))
    await bus.publish(subject("trigger", "l1", "s1"), message, msg_id=msg_id(message.part.inspection_id, "trigger"))
    return message


async def dead_letters(bus: Bus) -> list:
    return await stored(bus, dead_subject("trigger"), stream_name("dead"))


async def test_a_failure_is_retried_after_the_delay_then_dead_lettered_with_the_reason(bus_factory) -> None:
    bus = await bus_factory("svc", max_deliver=3, nak_delay_s=0.4)
    sent = await send_one(bus)
    consumer = await Consumer(bus).start()
    outcomes, tries, times = [], [], []
    for _ in range(3):
        delivery = await consumer.next()
        assert delivery is not None and delivery.inspection_id == sent.part.inspection_id
        tries.append(delivery.num_delivered)
        times.append(time.monotonic())
        outcomes.append(await delivery.fail(ConnectionError("database unreachable")))
    assert outcomes == ["retry", "retry", "dead"] and tries == [1, 2, 3]
    assert all(later - earlier >= 0.35 for earlier, later in pairwise(times)), times  # nak'd with the delay
    assert await consumer.next(timeout=1.0) is None  # terminated: never again
    [dead] = await dead_letters(bus)
    assert dead.headers[DEAD_REASON] == "gave up after 3 deliveries: ConnectionError: database unreachable"
    assert dead.headers[DEAD_SUBJECT] == "lg.trigger.l1.s1"
    assert Trigger.FromString(dead.data) == sent


async def test_a_bad_message_is_dead_lettered_at_its_first_delivery(bus_factory) -> None:
    bus = await bus_factory("svc", max_deliver=5, nak_delay_s=0.05)
    await send_one(bus)
    consumer = await Consumer(bus).start()
    delivery = await consumer.next()
    assert delivery is not None
    assert await delivery.fail(BadMessage("unknown recipe 'pcb-z' (known: pcb-a)")) == "dead"
    assert await consumer.next(timeout=1.0) is None
    [dead] = await dead_letters(bus)
    assert dead.headers[DEAD_REASON] == "unknown recipe 'pcb-z' (known: pcb-a)"


@pytest.mark.parametrize("retry_forever", [True, False])
async def test_retry_forever_never_gives_up_on_retry_and_its_own_delay_counts(bus_factory, retry_forever: bool) -> None:
    # nak_delay_s is long: a redelivery within it shows that the Retry's own delay_s was the one used.
    bus = await bus_factory("svc", max_deliver=2, nak_delay_s=30)
    await send_one(bus)
    consumer = await Consumer(bus, retry_forever=retry_forever).start()
    outcomes = []
    for _ in range(6 if retry_forever else 2):
        delivery = await consumer.next()
        assert delivery is not None
        outcomes.append(await delivery.fail(Retry("database restarting", delay_s=0.02)))
    if retry_forever:
        assert outcomes == ["retry"] * 6 and delivery.num_delivered == 6
        assert await dead_letters(bus) == []
        last = await consumer.next()
        assert last is not None
        await last.ack()
    else:  # the same Retry from a worker not made to retry forever: given up at max_deliver
        assert outcomes == ["retry", "dead"]
        [dead] = await dead_letters(bus)
        assert dead.headers[DEAD_REASON] == "gave up after 2 deliveries: Retry: database restarting"
    assert await consumer.next(timeout=0.5) is None


async def test_a_message_handed_back_is_never_dead_lettered_and_comes_back_at_once(bus_factory) -> None:
    bus = await bus_factory("svc", max_deliver=2, nak_delay_s=30)
    await send_one(bus)
    consumer = await Consumer(bus).start()
    outcomes = []
    for _ in range(4):  # past max_deliver, and each one back well within nak_delay_s
        delivery = await consumer.next(timeout=2.0)
        assert delivery is not None
        outcomes.append(await delivery.fail(HandBack("the service stopped before the frame ran")))
    assert outcomes == ["retry"] * 4
    assert await dead_letters(bus) == []
