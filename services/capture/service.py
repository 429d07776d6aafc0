"""The capture service: trigger in, frame out."""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict

from lineguard.bus import BadMessage, Delivery
from lineguard.bus.bigframes import frames_bucket, offload
from lineguard.runtime.service import ServiceContext
from lineguard.services.capture.frames import CaptureError, StationCameras
from lineguard.v1.frame_pb2 import Frame
from lineguard.v1.trigger_pb2 import Trigger

# Room for the Frame message around the image bytes, and the headers.
ENVELOPE_BYTES = 64 * 1024
# Frames grabbed but not yet on the bus, kept for their trigger's redelivery (oldest dropped beyond this).
UNSENT_KEPT = 16
CAMERA_REPORT_S = 0.5


class PayloadLimitError(RuntimeError):
    pass


async def setup(ctx: ServiceContext) -> None:
    server_limit = ctx.bus.nc.max_payload
    inline_limit = ctx.config.nats.inline_image_max_bytes
    if server_limit < inline_limit + ENVELOPE_BYTES:
        # Found at start, not frame by frame: every frame above the server's limit would fail.
        raise PayloadLimitError(
            f"the NATS server takes messages up to {server_limit} bytes, but nats.inline_image_max_bytes is "
            f"{inline_limit}: raise max_payload on the server or lower nats.inline_image_max_bytes"
        )
    bucket = await frames_bucket(ctx.bus.js)  # for frames over inline_limit (lineguard.bus.bigframes)
    cameras = StationCameras.from_config(ctx.config)
    ctx.on_stop(lambda: asyncio.to_thread(cameras.close))
    if cameras.watched():  # a simulator or a folder cannot go away: no loop waking twice a second for nothing
        ctx.run_task(report_cameras(ctx, cameras))
    # A trigger whose frame could not be published comes back (nak, redelivery): it gets the image grabbed
    # the first time, not a new grab, which could show the next part (or read the camera's next buffer).
    unsent: OrderedDict[str, Frame] = OrderedDict()

    async def handle(delivery: Delivery[Trigger]) -> None:
        if ctx.is_stale(delivery):
            return
        inspection_id = delivery.message.part.inspection_id
        frame = unsent.get(inspection_id)
        if frame is None:
            try:
                # Decoding and encoding images takes milliseconds: off the event loop, so
                # heartbeats and acks keep flowing meanwhile.
                frame = await asyncio.to_thread(cameras.capture, delivery.message)
            except CaptureError as exc:
                raise BadMessage(str(exc)) from None
            unsent[inspection_id] = frame
            while len(unsent) > UNSENT_KEPT:
                unsent.popitem(last=False)
        try:
            # In place once stored: a redelivery publishes the same key, nothing is stored twice.
            await offload(bucket, frame, inline_limit)
        except ValueError as exc:
            raise BadMessage(str(exc)) from None
        await ctx.publish("frame", frame)
        unsent.pop(inspection_id, None)

    ctx.consume("trigger", Trigger, handle)


async def report_cameras(ctx: ServiceContext, cameras: StationCameras) -> None:
    """The heartbeat says which stations' cameras cannot grab and why (degraded), within a second of it."""
    while not ctx.stopping.is_set():
        problems = cameras.problems()
        ctx.degraded = bool(problems)
        ctx.detail = "; ".join(f"station {station}: {problem}" for station, problem in sorted(problems.items()))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(ctx.stopping.wait(), timeout=CAMERA_REPORT_S)
