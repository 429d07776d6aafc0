"""The inference service: frame in, defects out."""

from __future__ import annotations

import asyncio

import structlog

from lineguard.bus import BadMessage, Delivery
from lineguard.runtime.service import ServiceContext
from lineguard.services.inference.detect import InferenceInputError, infer_frame, load_configured_model
from lineguard.vision.model import ModelLoadError
from lineguard.v1.frame_pb2 import Frame

log = structlog.get_logger("lineguard.inference")


async def setup(ctx: ServiceContext) -> None:
    # Once, before consuming: a model that does not load stops the service here,
    # rather than failing (and dead-lettering) every frame.
    try:
        detector = await asyncio.to_thread(load_configured_model, ctx.config.model)
    except ModelLoadError as exc:
        log.error("cannot load the model; the inference service cannot run", error=str(exc))
        raise
    card = detector.card
    log.info("model loaded", model=str(detector.path), model_id=card.model_id, model_version=card.version,
             classes=list(card.classes), input_size=card.input_size)

    async def handle(delivery: Delivery[Frame]) -> None:
        if ctx.is_stale(delivery):
            return
        try:
            # The model takes tens to hundreds of milliseconds: off the event loop, so
            # heartbeats and acks keep flowing meanwhile.
            result = await asyncio.to_thread(infer_frame, delivery.message, ctx.config, detector)
        except InferenceInputError as exc:
            raise BadMessage(str(exc)) from None
        await ctx.publish("inference", result)

    ctx.consume("frame", Frame, handle)
