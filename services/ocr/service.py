"""The OCR service: frame in, codes out."""

from __future__ import annotations

import asyncio

from lineguard.bus import BadMessage, Delivery
from lineguard.bus.bigframes import fetching_images
from lineguard.imaging import FrameError
from lineguard.ocr.fields import SeenValues
from lineguard.ocr.text import warm_up
from lineguard.runtime.service import ServiceContext
from lineguard.services.ocr.results import ocr_frame
from lineguard.v1.frame_pb2 import Frame


async def setup(ctx: ServiceContext) -> None:
    seen = SeenValues()  # DUPLICATE_SERIAL's window: this process's parts
    if any(recipe.ocr.wants_text() for recipe in ctx.config.recipes.values()):
        await asyncio.to_thread(warm_up)

    async def handle(delivery: Delivery[Frame]) -> None:
        if ctx.is_stale(delivery):
            return
        try:
            # Decoding and reading take milliseconds: off the event loop, so
            # heartbeats and acks keep flowing meanwhile.
            result = await asyncio.to_thread(ocr_frame, delivery.message, ctx.config, seen)
        except FrameError as exc:
            raise BadMessage(str(exc)) from None
        await ctx.publish("ocr", result)

    ctx.consume("frame", Frame, fetching_images(ctx.bus.js, handle))
