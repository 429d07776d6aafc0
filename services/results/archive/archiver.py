"""Keeping each inspected part's images, off the part's path to the PLC.

The frame travels once, capture to inference and OCR, on the frame stream (inline, JetStream file storage).
The results service reads the same stored messages through a durable consumer of its own (results-frame),
after the fact: capture publishes nothing more, no service on the part's path waits for it, and a slow or
absent archive only lets its own consumer fall behind (the stream keeps frames for nats.stream_max_age_s).

For each frame: its inspection's row (verdict, recipe, defects) is read; a frame whose decision is not
written yet (the frame usually arrives first) waits for it here, then comes back later (Retry), and one whose row
is still missing archive.decision_wait_s after its trigger, while the database answers, is dead-lettered with the
reason.
Then the images its recipe keeps (images.py) are stored, room made first within the budget
(retention.make_room), and their rows written in one transaction: a frame delivered again finds its rows
and stores nothing; one that stopped between storing and its rows stores the same keys again.

What it costs per part (benchmarks/results_cpu.py): a frame whose decision is not written yet waits here,
unacked, and its row is looked for again a few times (DECISION_LOOKS_S) before it is handed back to the bus: a
hand-back meant the ~60 KiB frame fetched and decoded again and a warning logged, for nearly every part. The
budget's sum over every image row (retention.stored_bytes, a scan that grows with the archive) is read once per
BUDGET_FRESH_S, not once per frame; in between the archiver counts what it stores itself, an upper bound because
retention only deletes, and make_room (the exact sum, and deletions) runs whenever that bound says the new images
do not fit."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

import structlog
from sqlalchemy import Engine, bindparam, exists, insert, select
from sqlalchemy.exc import DBAPIError

from lineguard.bus import BadMessage, Delivery, Retry
from lineguard.bus.bigframes import fetching_images
from lineguard.config import LineConfig, RecipeSettings
from lineguard.config.seams import ArchiveSettings
from lineguard.imaging import ImageError
from lineguard.runtime.service import ServiceContext
from lineguard.services.results.archive import ImageStore, open_store
from lineguard.services.results.archive.images import Box, Rendered, kinds_kept, renderings
from lineguard.services.results.archive.retention import expire, make_room, stored_bytes
from lineguard.services.results.schema import Defect, Inspection, InspectionImage
from lineguard.services.results.writer import database_failure, retry_delay
from lineguard.v1.frame_pb2 import Frame

log = structlog.get_logger("lineguard.results.archive")

# The pauses before each look for a waiting frame's row: a decision follows its frame by its inference (some
# 0.1-1 s) and its writer's batch; 3.75 s in all, well inside the consumer's ack_wait (30 s by default).
DECISION_LOOKS_S = (0.25, 0.5, 1.0, 2.0)
# Frames held here at once, waiting for their rows (each ~60 KiB); beyond it a frame is handed back as before.
WAITING_MAX = 64
# How old the budget's count may be before the exact sum is read again. Between reads the count is this
# process's own: other replicas' images are seen at the next read (make_room never was a lock between them).
BUDGET_FRESH_S = 5.0
# A frame this young when it comes has no decision yet, nearly always: its first look waits DECISION_LOOKS_S[0].
FRESH_FRAME_S = 1.0

# Built once: the statements of every frame, cached compiled by SQLAlchemy, with no statement built a frame.
_FIND = select(
    Inspection.verdict,
    Inspection.recipe_id,
    exists().where(InspectionImage.inspection_id == Inspection.inspection_id),
).where(Inspection.inspection_id == bindparam("id"))
_DEFECTS = (
    select(Defect.class_name, Defect.score, Defect.x1, Defect.y1, Defect.x2, Defect.y2)
    .where(Defect.inspection_id == bindparam("id"))
    .order_by(Defect.id)
)
_INSERT_IMAGES = insert(InspectionImage)  # built a frame, it cost 0.2 ms of CPU in the insert's 1.2


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
    waiting: set[asyncio.Task[None]] = field(default_factory=set)
    # The archive's bytes as last summed plus what was stored since (None: to be read), and when it was read.
    _used: int | None = None
    _used_at: float = 0.0
    _budget_lock: threading.Lock = field(default_factory=threading.Lock)

    def archive(self, frame: Frame) -> list[str]:
        """Store the images `frame`'s inspection keeps and their rows; the kinds stored ([] when none, or done)."""
        inspection_id = frame.part.inspection_id
        recipe: RecipeSettings | None = None
        with self.engine.connect() as conn:
            found = conn.execute(_FIND, {"id": inspection_id}).first()
            if found is None:
                raise NotDecidedYet(f"inspection {inspection_id} has no row yet")
            verdict, recipe_id, kept = found
            if kept:
                return []  # delivered again: its images are kept already
            recipe = self.config.recipes.get(recipe_id)
            # Only an overlay draws the defects: a pass's thumbnail needs no read of them.
            boxes = (
                [Box(*row) for row in conn.execute(_DEFECTS, {"id": inspection_id})]
                if "overlay" in kinds_kept(verdict, recipe)
                else []
            )
        images = renderings(frame, verdict, boxes, recipe, self.settings)
        if not images:
            return []
        incoming = sum(len(i.data) for i in images)
        self._make_room(incoming)
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
            conn.execute(_INSERT_IMAGES, rows)
        return [image.kind for image in images]

    def _make_room(self, incoming: int) -> None:
        """Room for `incoming` bytes within the budget; counts them as stored (the caller stores them next)."""
        budget = self.settings.max_bytes
        with self._budget_lock:
            if self._used is None or time.monotonic() - self._used_at > BUDGET_FRESH_S:
                self._used, self._used_at = stored_bytes(self.engine), time.monotonic()
            if self._used + incoming <= budget:
                self._used += incoming
                return
            # Maybe over: the exact sum and the deletions; after them at most budget - incoming are kept.
            make_room(self.engine, self.store, budget, incoming)
            self._used = budget

    async def handle(self, delivery: Delivery[Frame]) -> None:
        frame = delivery.message
        if frame.part.simulated:  # a golden part of a self-test (docs/drift.md): no record, so no images either
            return
        may_wait = delivery.num_delivered == 1 and len(self.waiting) < WAITING_MAX
        if not (may_wait and time.time() - frame.part.triggered_unix_ns / 1e9 < FRESH_FRAME_S):
            try:
                await self._archive(delivery)
                return
            except NotDecidedYet as exc:
                if not may_wait:
                    raise self._not_decided(exc, delivery) from None
        delivery.defer()  # settled by the wait, once its row is there or the looks are spent
        task = asyncio.create_task(self._wait_for_decision(delivery))
        self.waiting.add(task)
        task.add_done_callback(self.waiting.discard)

    async def _wait_for_decision(self, delivery: Delivery[Frame]) -> None:
        last = NotDecidedYet(f"inspection {delivery.inspection_id} has no row yet")
        try:
            for pause in DECISION_LOOKS_S:
                await asyncio.sleep(pause)
                try:
                    await self._archive(delivery)
                except NotDecidedYet as exc:
                    last = exc
                    continue
                await delivery.ack()
                return
            raise self._not_decided(last, delivery)
        except asyncio.CancelledError:
            await delivery.nak()  # the service stopping: back to the bus now, not after ack_wait
            raise
        except Exception as exc:  # noqa: BLE001 - deferred, so settled here by the bus's one failure policy
            await delivery.fail(exc)

    async def _archive(self, delivery: Delivery[Frame]) -> None:
        """Archive the frame off the event loop; its failures as the bus's policy takes them (NotDecidedYet as is)."""
        frame = delivery.message
        try:
            kinds = await asyncio.to_thread(self.archive, frame)
        except ImageError as exc:
            raise BadMessage(f"frame of inspection {frame.part.inspection_id}: {exc}") from None
        except DBAPIError as exc:
            raise database_failure(exc, delivery, self.config.nats.nak_delay_s) from exc
        except OSError as exc:  # the folder's disk, the object store's network: the store away, not the frame
            raise Retry(f"image archive unavailable: {exc}", delay_s=self._backoff(delivery)) from exc
        if kinds:
            log.debug("images kept", kinds=kinds)

    def _not_decided(self, exc: NotDecidedYet, delivery: Delivery[Frame]) -> BadMessage | Retry:
        waited_s = time.time() - delivery.message.part.triggered_unix_ns / 1e9
        if waited_s > self.settings.decision_wait_s:
            return BadMessage(
                f"{exc} {waited_s:.0f} s after its trigger (archive.decision_wait_s="
                f"{self.settings.decision_wait_s:g}): its images are not kept"
            )
        return Retry(str(exc), delay_s=self._backoff(delivery))

    async def stop(self) -> None:
        """Hand the waiting frames back (the service stopping, the workers stopped, the bus still open)."""
        for task in list(self.waiting):
            task.cancel()
        await asyncio.gather(*self.waiting, return_exceptions=True)

    def _backoff(self, delivery: Delivery[Frame]) -> float:
        return retry_delay(delivery, self.config.nats.nak_delay_s)


def keep_images(ctx: ServiceContext, engine: Engine) -> Archiver:
    """Consume the line's frames into the archive (archive.enabled) and run its retention until the service stops."""
    settings = ctx.config.archive
    archiver = Archiver(engine, open_store(settings), settings, ctx.config)
    # Never given up on while the database or the store is away; a frame without a decision is, after its wait.
    ctx.consume("frame", Frame, fetching_images(ctx.bus.js, archiver.handle), retry_forever=True)
    ctx.on_stop(archiver.stop)

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
