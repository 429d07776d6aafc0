"""The inference service: frame in, defects out."""

from __future__ import annotations

import asyncio

import structlog

from lineguard.bus.bigframes import fetching_images
from lineguard.runtime.service import ServiceContext
from lineguard.services.inference.batching import FrameBatcher
from lineguard.services.inference.holder import ModelHolder
from lineguard.services.inference.shadow import start_shadow
from lineguard.v1.frame_pb2 import Frame
from lineguard.vision.model import ModelLoadError

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
    log.info(
        "model loaded",
        model=str(detector.path),
        model_id=card.model_id,
        model_version=card.version,
        classes=list(card.classes),
        input_size=card.input_size,
        backend=detector.runner.backend,
        device=detector.runner.device,
        max_batch=detector.max_batch,
        batch_size=ctx.config.model.batch_size,
    )

    # A candidate in shadow (lineguard model shadow start) runs between live batches; it never reaches the PLC.
    shadow = await start_shadow(ctx, holder)
    pipeline = FrameBatcher(ctx, holder.current, shadow)
    await pipeline.frames.follow_decisions()
    await asyncio.to_thread(pipeline.warm_up)  # before consuming: admission knows the model's pace from the start
    ctx.consume("frame", Frame, fetching_images(ctx.bus.js, pipeline.handle))
    ctx.run_task(pipeline.run())
    ctx.on_stop(pipeline.drain)
