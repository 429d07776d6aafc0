"""The inference service: frame in, defects out."""

from __future__ import annotations

import asyncio

import structlog

from lineguard.bus import BadMessage, Delivery
from lineguard.runtime.service import ServiceContext
from lineguard.services.inference.batching import FrameBatcher
from lineguard.imaging import FrameError
from lineguard.services.inference.detect import infer_frame
from lineguard.services.inference.holder import ModelHolder
from lineguard.vision.model import ModelLoadError
from lineguard.v1.frame_pb2 import Frame

log = structlog.get_logger("lineguard.inference")


async def setup(ctx: ServiceContext) -> None:
    # Once, before consuming: a model that does not load stops the service here,
    # rather than failing (and dead-lettering) every frame. Later promotions swap in (holder.py).
    try:
        holder = await ModelHolder.start(ctx)
    except ModelLoadError as exc:
        log.error("cannot load the model; the inference service cannot run", error=str(exc))
        raise
    detector = holder.current()
    card = detector.card
    log.info("model loaded", model=str(detector.path), model_id=card.model_id, model_version=card.version,
             classes=list(card.classes), input_size=card.input_size, backend=detector.runner.backend,
             device=detector.runner.device, max_batch=detector.max_batch, batch_size=ctx.config.model.batch_size)

    async def handle(delivery: Delivery[Frame]) -> None:
        if ctx.is_stale(delivery):
            return
        try:
            # The model takes tens to hundreds of milliseconds: off the event loop, so
            # heartbeats and acks keep flowing meanwhile.
            result = await asyncio.to_thread(infer_frame, delivery.message, ctx.config, holder.current())
        except FrameError as exc:
            raise BadMessage(str(exc)) from None
        await ctx.publish("inference", result)

    if ctx.config.model.batch_size > 1:
        batcher = FrameBatcher(ctx, holder.current)
        ctx.consume("frame", Frame, batcher.handle)
        ctx.run_task(batcher.run())
        ctx.on_stop(batcher.drain)
    else:
        ctx.consume("frame", Frame, handle)
