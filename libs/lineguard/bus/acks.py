"""Stream acks of the publishes in flight, each matched to its publisher by its reply subject.

This is nats-py's `js.publish_async` (publish with a reply inbox, an ack future per message, one wildcard
subscription resolving them) with its ack callback done right: nats-py 2.16's callback calls
`APIError.from_error`, which raises, so a stream's refusal (full, duplicate-window trouble) escaped the
callback and its future never resolved; a full stream read as a timeout. Here the callback only hands the
reply over and the publisher reads it, so a refusal is reported with the server's reason. The publisher
still waits for its own ack; a bounded window keeps a stalled server from collecting unbounded futures.
"""

from __future__ import annotations

import asyncio
import itertools

from nats.aio.client import Client
from nats.aio.msg import Msg

# Publishes awaiting their stream ack at once, per connection; the next waits for a slot. Far above what
# a line needs (a few messages per part), low enough that a server that stopped answering holds little.
MAX_IN_FLIGHT = 1024


class PublishUnconfirmed(TimeoutError):
    """No ack within the publish timeout (server gone, connection lost): the message may or may not be stored."""

    def __init__(self, subject: str, timeout_s: float):
        super().__init__(
            f"publish to {subject} unconfirmed: no ack from the stream within {timeout_s:g} s "
            "(it may or may not be stored; a retry with the same msg_id is stored once)"
        )
        self.subject = subject


class PendingAcks:
    """Publishes awaiting their ack on one connection, by reply subject."""

    def __init__(self, nc: Client, max_in_flight: int = MAX_IN_FLIGHT):
        self._nc = nc
        self._window = asyncio.Semaphore(max_in_flight)
        self._futures: dict[str, asyncio.Future[Msg]] = {}
        self._tokens = itertools.count()
        self._prefix = ""
        self._subscribing: asyncio.Task[None] | None = None

    @property
    def in_flight(self) -> int:
        return len(self._futures)

    async def request(self, subject: str, payload: bytes, headers: dict[str, str], timeout_s: float) -> Msg:
        """Publish with a reply inbox and return the stream's reply; PublishUnconfirmed if none came in time."""
        if not self._prefix:
            await self._subscribe()
        async with self._window:
            reply = self._prefix + str(next(self._tokens))
            loop = asyncio.get_running_loop()
            future: asyncio.Future[Msg] = loop.create_future()
            self._futures[reply] = future
            timer = loop.call_later(timeout_s, _expire, future, subject, timeout_s)
            try:
                await self._nc.publish(subject, payload, reply=reply, headers=headers)
                return await future
            finally:
                timer.cancel()
                self._futures.pop(reply, None)

    async def _subscribe(self) -> None:
        # One subscription for the connection's lifetime (nats-py renews it on reconnect); concurrent first
        # publishes share the one subscribe.
        if self._subscribing is None:
            self._subscribing = asyncio.ensure_future(self._open())
        await asyncio.shield(self._subscribing)

    async def _open(self) -> None:
        prefix = self._nc.new_inbox() + "."
        await self._nc.subscribe(prefix + "*", cb=self._on_reply)
        self._prefix = prefix

    async def _on_reply(self, msg: Msg) -> None:
        future = self._futures.pop(msg.subject, None)
        if future is not None and not future.done():
            future.set_result(msg)


def _expire(future: asyncio.Future[Msg], subject: str, timeout_s: float) -> None:
    if not future.done():
        future.set_exception(PublishUnconfirmed(subject, timeout_s))
