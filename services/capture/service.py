"""The capture service: trigger in, frame out."""

from __future__ import annotations

import asyncio

from lineguard.bus import BadMessage, Delivery
from lineguard.runtime.service import ServiceContext
from lineguard.services.capture.frames import CaptureError, StationCameras
from lineguard.v1.trigger_pb2 import Trigger

# Room for the Frame message around the image bytes, and the headers.
ENVELOPE_BYTES = 64 * 1024


class PayloadLimitError(RuntimeError):
    pass


async def setup(ctx: ServiceContext) -> None:
    server_limit = ctx.bus.nc.max_payload
    inline_limit = ctx.config.nats.inline_image_max_bytes
    if server_limit < inline_limit + ENVELOPE_BYTES:
        # Found at start, not frame by frame: every frame above the server's limit would fail.
        raise PayloadLimitError(
            f"the NATS server takes messages up to {server_limit} bytes, but nats.inline_image_max_bytes is "
            f"{inline_limit}: raise max_payload on the server or lower nats.inline_image_max_bytes")
    cameras = StationCameras.from_config(ctx.config)

    async def handle(delivery: Delivery[Trigger]) -> None:
        if ctx.is_stale(delivery):
            return
        try:
            # Decoding and encoding images takes milliseconds: off the event loop, so
            # heartbeats and acks keep flowing meanwhile.
            frame = await asyncio.to_thread(cameras.capture, delivery.message)
        except CaptureError as exc:
            raise BadMessage(str(exc)) from None
        await ctx.publish("frame", frame)

    ctx.consume("trigger", Trigger, handle)
