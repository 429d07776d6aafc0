"""Keeping each inspected part's images, off the part's path to the PLC.

The frame travels once, capture to inference and OCR, on the frame stream (inline, JetStream file storage).
The results service reads the same stored messages through a durable consumer of its own (results-frame),
after the fact: capture publishes nothing more, no service on the part's path waits for it, and a slow or
absent archive only lets its own consumer fall behind (the stream keeps frames for nats.stream_max_age_s).

For each frame: its inspection's row (verdict, recipe, defects) is read; a frame whose decision is not
written yet comes back later (Retry: the frame usually arrives first), and one whose row is still missing
archive.decision_wait_s after its trigger, while the database answers, is dead-lettered with the reason.
Then the images its recipe keeps (images.py) are stored, room made first within the budget
(retention.make_room), and their rows written in one transaction: a frame delivered again finds its rows
and stores nothing; one that stopped between storing and its rows stores the same keys again."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import structlog
from sqlalchemy import Engine, insert, select
from sqlalchemy.exc import DBAPIError

from lineguard.bus import BadMessage, Delivery, Retry
from lineguard.bus.bigframes import fetching_images
from lineguard.config import LineConfig
from lineguard.config.seams import ArchiveSettings
from lineguard.imaging import ImageError
from lineguard.runtime.service import ServiceContext
from lineguard.services.results.archive import ImageStore, open_store
from lineguard.services.results.archive.images import Box, Rendered, renderings
from lineguard.services.results.archive.retention import expire, make_room
from lineguard.services.results.schema import Defect, Inspection, InspectionImage
from lineguard.services.results.writer import BACKOFF_MAX_S, database_failure
from lineguard.v1.frame_pb2 import Frame

log = structlog.get_logger("lineguard.results.archive")


class NotDecidedYet(LookupError):
    """The frame's inspection has no row yet."""


def image_key(frame: Frame, image: Rendered) -> str:
    """`<line>/<station>/<yyyy>/<mm>/<dd>/<inspection id>/<kind>.<ext>`: one folder a part, by trigger day."""
    part = frame.part
    day = datetime.fromtimestamp(part.triggered_unix_ns / 1e9, UTC)
    return f"{part.line}/{part.station}/{day:%Y/%m/%d}/{part.inspection_id}/{image.kind}.{image.extension}"


@dataclass
class Archiver:
    engine: Engine
    store: ImageStore
    settings: ArchiveSettings
    config: LineConfig

    def archive(self, frame: Frame) -> list[str]:
        """Store the images `frame`'s inspection keeps and their rows; the kinds stored ([] when none, or done)."""
        inspection_id = frame.part.inspection_id
        with self.engine.connect() as conn:
            found = conn.execute(
                select(Inspection.verdict, Inspection.recipe_id).where(Inspection.inspection_id == inspection_id)
            ).first()
            if found is None:
                raise NotDecidedYet(f"inspection {inspection_id} has no row yet")
            if conn.execute(select(InspectionImage.id).where(InspectionImage.inspection_id == inspection_id)).first():
                return []  # delivered again: its images are kept already
            boxes = [
                Box(*row)
                for row in conn.execute(
                    select(Defect.class_name, Defect.score, Defect.x1, Defect.y1, Defect.x2, Defect.y2)
                    .where(Defect.inspection_id == inspection_id)
                    .order_by(Defect.id)
                )
            ]
        verdict, recipe_id = found
        images = renderings(frame, verdict, boxes, self.config.recipes.get(recipe_id), self.settings)
        if not images:
            return []
        make_room(self.engine, self.store, self.settings.max_bytes, sum(len(i.data) for i in images))
        now = datetime.now(UTC)
        rows = [
            {
                "inspection_id": inspection_id,
                "kind": image.kind,
                "uri": self.store.put(image_key(frame, image), image.data, image.content_type),
                "content_type": image.content_type,
                "bytes": len(image.data),
                "sha256": image.sha256,
                "width": image.width,
                "height": image.height,
                "stored_at": now,
                "deleted_at": None,
            }
            for image in images
        ]
        with self.engine.begin() as conn:
            conn.execute(insert(InspectionImage), rows)
        return [image.kind for image in images]

    async def handle(self, delivery: Delivery[Frame]) -> None:
        frame = delivery.message
        if frame.part.simulated:  # a golden part of a self-test (docs/drift.md): no record, so no images either
            return
        try:
            kinds = await asyncio.to_thread(self.archive, frame)
        except NotDecidedYet as exc:
            waited_s = time.time() - frame.part.triggered_unix_ns / 1e9
            if waited_s > self.settings.decision_wait_s:
                raise BadMessage(
                    f"{exc} {waited_s:.0f} s after its trigger (archive.decision_wait_s="
                    f"{self.settings.decision_wait_s:g}): its images are not kept"
                ) from None
            raise Retry(str(exc), delay_s=self._backoff(delivery)) from None
        except ImageError as exc:
            raise BadMessage(f"frame of inspection {frame.part.inspection_id}: {exc}") from None
        except DBAPIError as exc:
            raise database_failure(exc, delivery, self.config.nats.nak_delay_s) from exc
        except OSError as exc:  # the folder's disk, the object store's network: the store away, not the frame
            raise Retry(f"image archive unavailable: {exc}", delay_s=self._backoff(delivery)) from exc
        if kinds:
            log.debug("images kept", kinds=kinds)

    def _backoff(self, delivery: Delivery[Frame]) -> float:
        return min(self.config.nats.nak_delay_s * 2 ** min(delivery.num_delivered - 1, 16), BACKOFF_MAX_S)


def keep_images(ctx: ServiceContext, engine: Engine) -> Archiver:
    """Consume the line's frames into the archive (archive.enabled) and run its retention until the service stops."""
    settings = ctx.config.archive
    archiver = Archiver(engine, open_store(settings), settings, ctx.config)
    # Never given up on while the database or the store is away; a frame without a decision is, after its wait.
    ctx.consume("frame", Frame, fetching_images(ctx.bus.js, archiver.handle), retry_forever=True)

    async def retention() -> None:
        while not ctx.stopping.is_set():
            try:
                await asyncio.to_thread(expire, engine, archiver.store, ctx.config.recipes)
            except Exception as exc:  # noqa: BLE001 - the database or the object store away: a service task must not end
                log.warning("retention pass failed; next pass retries", error=str(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(ctx.stopping.wait(), timeout=settings.retention_every_s)

    ctx.run_task(retention())
    return archiver
