"""Which parts' images are taken: the capture service's frames, read by their headers only.

The capture service publishes a part's frame (`lg.frame.<line>.<station>`, message id `<inspection id>:frame`)
as soon as it has the image, before inference and OCR start on it. The gateway reads only the headers of
those messages (a headers-only durable consumer, `gateway-frame`: the subject names the station, the message
id the part; the image never travels to the gateway) and tells the station's link, which tells a PLC that
wants to know (OPC 40100's AcquisitionDone: the PLC may move the part on before its result). A frame the
gateway misses, or sees late, costs the PLC that early notice only: the result and its fail-safe rules do not
depend on it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import structlog
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from lineguard.bus import Bus
from lineguard.bus.permissions import durable_name
from lineguard.bus.pull import PullFeed
from lineguard.contracts import line_subjects, msg_id, stream_name
from lineguard.runtime.following import when_set

log = structlog.get_logger("lineguard.gateway")

KIND = "frame"
FETCH_BATCH = 64
RETRY_S = 0.5  # the bus away: how soon to follow again
ACK_EVERY_S = 1.0
_STAGE_SUFFIX = msg_id("", KIND)  # ":frame"

Captured = Callable[[str, str], Awaitable[None]]  # (station id, inspection id)


def captured_part(msg: Msg) -> tuple[str, str] | None:
    """(station id, inspection id) of a frame message by its subject and message id; None if it names none."""
    stored_id = (msg.headers or {}).get("Nats-Msg-Id", "")
    if not stored_id.endswith(_STAGE_SUFFIX) or len(stored_id) == len(_STAGE_SUFFIX):
        return None
    return msg.subject.rsplit(".", 1)[-1], stored_id[: -len(_STAGE_SUFFIX)]


async def watch_captures(bus: Bus, line: str, on_captured: Captured, stopping: asyncio.Event) -> None:
    """Hand `on_captured` each frame's station and part as it is stored, until `stopping`."""
    durable = durable_name("gateway", KIND)
    config = ConsumerConfig(
        name=durable,
        durable_name=durable,
        headers_only=True,
        # Frames stored before this consumer first existed are no news; later ones while the gateway was away are
        # of parts it no longer has in flight, and are passed over by the link.
        deliver_policy=DeliverPolicy.NEW,
        ack_policy=AckPolicy.ALL,  # one ack for all before it: nothing is redelivered, nothing is worth it
        filter_subject=line_subjects(KIND, line),
    )
    stream = stream_name(KIND)
    while not stopping.is_set():
        try:
            try:
                await bus.js.consumer_info(stream, durable)
            except NotFoundError:
                await bus.js.add_consumer(stream, config=config)
            # One pull request kept open (lineguard.bus.pull): an idle gateway asks every 2 s, a frame costs its
            # headers and, with others of its second, one ack (fetch asked twice a second, a request and a
            # "no messages" status more per frame).
            await _follow(PullFeed(bus.nc, stream, durable, FETCH_BATCH), on_captured, stopping)
        except Exception as exc:  # noqa: BLE001 - the bus is away or reconnecting, the consumer gone: try again
            log.debug("frame headers not followed", error=repr(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), RETRY_S)


async def _follow(feed: PullFeed, on_captured: Captured, stopping: asyncio.Event) -> None:
    await feed.open()
    closing = when_set(stopping, feed.close)
    acks = _LatestAck()
    try:
        while (msg := await feed.next()) is not None:
            part = captured_part(msg)
            acks.hold(msg)
            if part is None:
                log.warning("a frame without its part's message id; passed over", subject=msg.subject)
                continue
            try:
                await on_captured(*part)
            except Exception:  # one PLC's notice failing must not stop the others'
                log.exception("could not tell the PLC the image is taken", station=part[0], inspection_id=part[1])
    finally:
        closing.cancel()
        feed.close()
        await acks.flush()


class _LatestAck:
    """The last frame's headers acked ACK_EVERY_S after the first one not yet acked (AckPolicy.ALL: that one ack
    is for all before it), well inside the consumer's ack_wait."""

    def __init__(self) -> None:
        self._latest: Msg | None = None
        self._timer: asyncio.TimerHandle | None = None

    def hold(self, msg: Msg) -> None:
        self._latest = msg
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(ACK_EVERY_S, self._due)

    def _due(self) -> None:
        self._timer = None
        task = asyncio.ensure_future(self.flush())
        task.add_done_callback(lambda t: None if t.cancelled() else t.exception())

    async def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        msg, self._latest = self._latest, None
        if msg is not None:
            with contextlib.suppress(Exception):  # an ack lost: those frames come again, their parts passed over
                await msg.ack()
