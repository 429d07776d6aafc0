"""The OCR service: frame in, codes out.

Frames are admitted by their part's deadline when they come (lineguard.runtime.admission: the frames admitted ahead
of one, at the recent time per read, must leave it time to be read) or refused at once with an OVERLOAD result,
which fails the part within milliseconds instead of at its deadline. Admitted frames wait in arrival order, their
acks deferred, and are read one at a time off the event loop, each checked again just before its read."""

from __future__ import annotations

import asyncio
import functools
import time

from lineguard.bus import BadMessage, Delivery, HandBack
from lineguard.bus.bigframes import fetching_images
from lineguard.contracts import copy_part, now_ns
from lineguard.imaging import FrameError
from lineguard.ocr.fields import SeenValues
from lineguard.ocr.text import warm_up
from lineguard.runtime import tracing
from lineguard.runtime.admission import OVERLOAD, AdmittedFrames
from lineguard.runtime.decided import SKIPPED, AlreadyDecided
from lineguard.runtime.service import ServiceContext
from lineguard.services.ocr.results import ocr_frame
from lineguard.v1.common_pb2 import Part
from lineguard.v1.frame_pb2 import Frame
from lineguard.v1.ocr_pb2 import OcrResult

# While the line refuses parts (lineguard.runtime.decided), a frame is read no sooner than this after it came. The
# model refuses a frame as it arrives, and that part's FAIL / OVERLOAD comes back here some 10-25 ms later on a
# loaded 2-core box: read at once, OCR had decoded the frame and read its codes by then, for nothing. The model is
# behind while the line refuses, so OCR's wait is off the part's critical path; otherwise OCR starts at once.
HOLD_WHILE_REFUSING_S = 0.03


def overload_result(part: Part) -> OcrResult:
    """The OCR result of a refused frame: nothing read, `refused` OVERLOAD (the part fails with it)."""
    return OcrResult(part=copy_part(part), completed_unix_ns=now_ns(), refused=OVERLOAD)


class Reader:
    """The OCR service's frame handler: admit or refuse, then read the admitted frames in order."""

    def __init__(self, ctx: ServiceContext, seen: SeenValues):
        self.ctx = ctx
        self.seen = seen  # DUPLICATE_SERIAL's window: this process's parts
        self.frames = AdmittedFrames(ctx, "ocr", overload_result)
        self.handle = self.frames.handle  # the frame consumer's handler: admit (deferred) or refuse at once

    async def run(self) -> None:
        """Read the admitted frames one at a time until the service stops; those left then are handed back."""
        while (admitted := await self.frames.next()) is not None:
            delivery, arrived = admitted
            try:
                if self.ctx.stopping.is_set():
                    raise HandBack("the service stopped before the frame was read")
                # Under the frame's consumer span, as if in its handler: what is published carries its trace.
                with tracing.attached(delivery.trace):
                    await self._read(delivery, arrived)
            except FrameError as exc:  # this frame can never be read
                await delivery.fail(BadMessage(str(exc)))
            except Exception as exc:  # noqa: BLE001 - deferred, so settled here by the bus's one failure policy
                await delivery.fail(exc)
            finally:
                self.frames.admitted -= 1

    async def _read(self, delivery: Delivery[Frame], arrived: float) -> None:
        # Nothing else is being read: the frames behind it wait in `waiting`.
        hold_s = arrived + HOLD_WHILE_REFUSING_S - time.time()
        if hold_s > 0 and self.frames.decided.refusing():
            await asyncio.sleep(hold_s)
        if self.ctx.is_stale(delivery) or not await self.frames.admits(delivery, 0, arrived):
            await delivery.ack()
            return
        started = time.perf_counter()
        try:
            # Decoding and reading take milliseconds: off the event loop, so heartbeats and acks keep flowing.
            go_on = functools.partial(self.frames.decided.check, delivery.inspection_id)
            result = await asyncio.to_thread(ocr_frame, delivery.message, self.ctx.config, self.seen, go_on=go_on)
        except AlreadyDecided:
            SKIPPED.labels(self.ctx.name).inc()  # its verdict stands: nothing to add, nothing sent
            await delivery.ack()
            return
        finally:
            self.frames.pace.observe(time.perf_counter() - started, 1)
        await self.ctx.publish("ocr", result)
        await delivery.ack()


async def setup(ctx: ServiceContext) -> None:
    if any(recipe.ocr.wants_text() for recipe in ctx.config.recipes.values()):
        await asyncio.to_thread(warm_up)
    reader = Reader(ctx, SeenValues())
    await reader.frames.follow_decisions()
    ctx.consume("frame", Frame, fetching_images(ctx.bus.js, reader.handle))
    ctx.run_task(reader.run())
