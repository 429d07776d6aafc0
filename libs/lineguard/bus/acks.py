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
    """Publishes awaiting their ack on one connection, by reply subject, oldest first."""

    def __init__(self, nc: Client, timeout_s: float, max_in_flight: int = MAX_IN_FLIGHT):
        self._nc = nc
        self._timeout_s = timeout_s
        self._window = asyncio.Semaphore(max_in_flight)
        # reply subject -> (future, subject, deadline); one timeout for all, so insertion order is deadline order
        # and one timer, armed for the oldest, expires them all (a timer per publish cost more than the rest).
        self._pending: dict[str, tuple[asyncio.Future[Msg], str, float]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._tokens = itertools.count()
        self._prefix = ""
        self._subscribing: asyncio.Task[None] | None = None

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    async def request(self, subject: str, payload: bytes, headers: dict[str, str]) -> Msg:
        """Publish with a reply inbox and return the stream's reply; PublishUnconfirmed if none came in time."""
        if not self._prefix:
            await self._subscribe()
        await self._window.acquire()
        reply = self._prefix + str(next(self._tokens))
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Msg] = loop.create_future()
        deadline = loop.time() + self._timeout_s
        self._pending[reply] = (future, subject, deadline)
        if self._timer is None:
            self._timer = loop.call_at(deadline, self._expire_due, loop)
        try:
            await self._nc.publish(subject, payload, reply=reply, headers=headers)
            return await future
        finally:
            self._pending.pop(reply, None)
            self._window.release()

    def _expire_due(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        now = loop.time()
        while self._pending:
            reply, (future, subject, deadline) = next(iter(self._pending.items()))
            if deadline > now:
                self._timer = loop.call_at(deadline, self._expire_due, loop)
                return
            del self._pending[reply]
            if not future.done():
                future.set_exception(PublishUnconfirmed(subject, self._timeout_s))

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
        pending = self._pending.pop(msg.subject, None)
        if pending is not None and not pending[0].done():
            pending[0].set_result(msg)
