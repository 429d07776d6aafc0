"""Reading what services published, for tests and benchmarks."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.errors import NotFoundError

from lineguard.bus import Bus
from lineguard.contracts import heartbeat_subject, stream_name
from lineguard.v1.heartbeat_pb2 import Heartbeat


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


async def settled(bus: Bus, kind: str, durable: str) -> bool:
    """Whether the durable consumer `durable` on `kind`'s stream has settled everything: no message left to deliver,
    none delivered and waiting for its ack (with lineguard.testing.waiting.wait_for: until a service caught up)."""
    info = await bus.js.consumer_info(stream_name(kind), durable)
    return info.num_pending == 0 and info.num_ack_pending == 0


async def stored(bus: Bus, subject: str, stream: str, wait_s: float = 1.0) -> list:
    """Every message `stream` holds on `subject` now (up to 1000)."""
    sub = await bus.js.pull_subscribe(subject, stream=stream)
    try:
        return await sub.fetch(1000, timeout=wait_s)
    except (NatsTimeoutError, TimeoutError):
        return []
    finally:
        await sub.unsubscribe()


async def heartbeat(
    bus: Bus, service: str, until: Callable[[Heartbeat], bool], *, line: str = "l1", timeout: float = 30.0
) -> Heartbeat:
    """`service`'s latest heartbeat, once it says what `until` wants (TimeoutError after `timeout` seconds)."""
    async with asyncio.timeout(timeout):
        while True:
            with contextlib.suppress(NotFoundError):  # none yet
                msg = await bus.js.get_last_msg(stream_name("heartbeat"), heartbeat_subject(line, service))
                beat = Heartbeat.FromString(msg.data or b"")
                if until(beat):
                    return beat
            await asyncio.sleep(0.05)
