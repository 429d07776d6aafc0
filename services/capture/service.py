"""The capture service: trigger in, frame out."""

from __future__ import annotations

import asyncio

from lineguard.bus import BadMessage, Delivery
from lineguard.runtime.service import ServiceContext
from lineguard.services.capture.frames import CaptureError, StationCameras
from lineguard.v1.trigger_pb2 import Trigger


async def setup(ctx: ServiceContext) -> None:
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
