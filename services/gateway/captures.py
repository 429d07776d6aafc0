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
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from lineguard.bus import Bus
from lineguard.bus.permissions import durable_name
from lineguard.contracts import line_subjects, msg_id, stream_name

log = structlog.get_logger("lineguard.gateway")

KIND = "frame"
FETCH_BATCH = 64
RETRY_S = 0.5  # the bus away: how soon to fetch again
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
        durable_name=durable,
        headers_only=True,
        # Frames stored before this consumer first existed are no news; later ones while the gateway was away are
        # of parts it no longer has in flight, and are passed over by the link.
        deliver_policy=DeliverPolicy.NEW,
        ack_policy=AckPolicy.ALL,  # one ack a batch: nothing is redelivered, nothing is worth it
        filter_subject=line_subjects(KIND, line),
    )
    sub = await bus.js.pull_subscribe(
        line_subjects(KIND, line), durable=durable, stream=stream_name(KIND), config=config
    )
    try:
        while not stopping.is_set():
            try:
                msgs = await sub.fetch(FETCH_BATCH, timeout=0.5)
            except NatsTimeoutError:
                continue
            except Exception as exc:  # noqa: BLE001 - the bus is away or reconnecting: the next fetch tries again
                log.debug("frame headers not fetched", error=repr(exc))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), RETRY_S)
                continue
            for msg in msgs:
                part = captured_part(msg)
                if part is None:
                    log.warning("a frame without its part's message id; passed over", subject=msg.subject)
                    continue
                try:
                    await on_captured(*part)
                except Exception:  # one PLC's notice failing must not stop the others'
                    log.exception("could not tell the PLC the image is taken", station=part[0], inspection_id=part[1])
            with contextlib.suppress(Exception):  # an ack lost: the batch comes again, its parts passed over
                await msgs[-1].ack()
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()
