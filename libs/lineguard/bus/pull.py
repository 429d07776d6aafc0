"""A durable pull consumer's messages as they come, through one pull request kept open ahead of the handler.

nats-py's `fetch` asks anew for each batch, and when fewer messages wait than the batch (a line's usual case: one
part at a time) the server ends the request with a "no messages" status after them: every delivery cost a request
and a status more, for the server and the client, and an idle consumer asked twice a second. Here one request for
`batch` messages stays open for `expires_s`, and the next is sent when it is used up or ends (the server's status:
expired, or ended for a reason of its own), or when it is taken as lost (no status by its expiry and a grace: the
connection dropped, the server restarted), so a delivery costs the message and its ack. Each request has a reply
subject of its own (`<inbox>.<n>`), so the late end of a request taken as lost does not start a second one.

At the stop the subscription goes first, drained: the server drops a request whose reply subject nobody reads any
more (nats-server 2.10+), so what arrives later stays with the consumer for the next reader; what it sent before it
took the UNSUB still comes in (the drain's round trip), and the reader hands back (nak) all it holds, which the
server does not redeliver to this feed. Letting the open request run out instead would have it redeliver each
message handed back into the same request, until the server's max_deliver dropped it."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

log = structlog.get_logger("lineguard.bus")

# Long enough that an idle consumer asks once every 2 s (fetch asked twice a second); a lost request (the server
# restarted) is noticed after EXPIRES_S + LOST_GRACE_S.
EXPIRES_S = 2.0
# After its expiry, how long a request's end (the server's status) may take to arrive before it counts as lost.
LOST_GRACE_S = 1.0
STATUS = "Status"
DESCRIPTION = "Description"
HEARTBEAT = "100"
EXPIRED = "408"
# How soon a request the server ended for another reason than its expiry is sent again.
RETRY_S = 0.5
# How long a stop waits for the server to confirm the UNSUB (what it sent before comes first).
DRAIN_S = 2.0
# The server's 409s that no new request cures: the consumer is gone, or is not a pull consumer.
FATAL = ("consumer deleted", "consumer is push based")


class ConsumerGone(RuntimeError):
    """The server says the consumer can deliver no more (deleted, or not a pull consumer)."""


class PullFeed:
    """The messages of durable consumer `durable` on `stream`, in order, through `next()`."""

    def __init__(self, nc: Client, stream: str, durable: str, batch: int, expires_s: float = EXPIRES_S):
        self._nc = nc
        self._next_subject = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}"
        self._batch = batch
        self._expires_s = expires_s
        # The request, one JSON body for all (expires in ns, a little under the local timer so the server ends first).
        self._body = json.dumps({"batch": batch, "expires": int(expires_s * 1e9) - 100_000}).encode()
        self._inbox = ""
        self._sub: Subscription | None = None
        self._queue: asyncio.Queue[Msg | BaseException | None] = asyncio.Queue()
        self._left = 0  # messages the open request may still deliver
        self._generation = 0  # the open request's number, its reply subject's last token
        self._timer: asyncio.TimerHandle | None = None
        self._closing = False

    async def open(self) -> None:
        self._inbox = self._nc.new_inbox() + "."
        self._sub = await self._nc.subscribe(self._inbox + "*", cb=self._on_msg)
        await self._request()

    async def next(self) -> Msg | None:
        """The next message; None once the feed is closed. Raises ConsumerGone when the server says so."""
        item = await self._queue.get()
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self) -> None:
        """No more messages: the subscription goes (and with it the open request); next() gives what came before,
        then None."""
        if self._closing:
            return
        self._closing = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._sub is None:
            self._queue.put_nowait(None)
            return
        sub, self._sub = self._sub, None
        task = asyncio.ensure_future(self._drain(sub))
        task.add_done_callback(_quiet)

    async def _drain(self, sub: Subscription) -> None:
        """UNSUB, then a round trip: what the server sent before it took the UNSUB still reaches the queue (and is
        handed back by the reader) instead of being dropped on arrival and left to its ack_wait; then the end."""
        try:
            await asyncio.wait_for(sub.drain(), DRAIN_S)
        except Exception:  # noqa: BLE001 - the connection is away or slow: nothing more will come on it
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        finally:
            self._queue.put_nowait(None)

    async def _request(self) -> None:
        if self._closing:
            return
        loop = asyncio.get_running_loop()
        self._generation += 1
        self._left = self._batch
        if self._timer is not None:
            self._timer.cancel()
        self._timer = loop.call_at(loop.time() + self._expires_s + LOST_GRACE_S, self._lost, self._generation)
        try:
            await self._nc.publish(self._next_subject, self._body, reply=self._inbox + str(self._generation))
        except Exception as exc:  # noqa: BLE001 - the connection is away: the lost-timer asks again
            log.debug("pull request not sent", subject=self._next_subject, error=repr(exc))

    def _lost(self, generation: int) -> None:
        if generation != self._generation:
            return
        self._timer = None
        task = asyncio.ensure_future(self._request())
        task.add_done_callback(_quiet)

    async def _on_msg(self, msg: Msg) -> None:
        headers = msg.headers
        status = headers.get(STATUS) if headers and not msg.reply else None
        if status is None:
            self._queue.put_nowait(msg)
            self._left -= 1
            if self._left <= 0:
                await self._request()
            return
        if status == HEARTBEAT or msg.subject != self._inbox + str(self._generation):
            return  # a request already given up on, ending late
        description = (headers or {}).get(DESCRIPTION, "")
        if status == "409" and description.lower().startswith(FATAL):
            self._queue.put_nowait(ConsumerGone(f"{self._next_subject}: {status} {description}"))
            self.close()
            return
        if status == EXPIRED:
            await self._request()
            return
        # Ended otherwise (404, a 409 such as max waiting or leadership change, 503 while JetStream comes back after a
        # restart): asked again after a pause, not at once, which against a server not ready would be a busy loop.
        self._generation += 1  # what the lost-timer was for is over
        if self._timer is not None:
            self._timer.cancel()
        loop = asyncio.get_running_loop()
        self._timer = loop.call_at(loop.time() + RETRY_S, self._lost, self._generation)


def _quiet(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()
