"""Retention of the archive's images: by age (each recipe's retention), and by the archive's budget in bytes.

Rows stay; a deleted image's row gets `deleted_at`, so a record says its image was removed rather than lost
(the API answers 410 Gone for it). The object is deleted first and its row marked after: a stop between the two
leaves a row that still counts against the budget, never a file the budget does not know of.

The budget (archive.max_bytes) is kept before each write (`make_room`): the oldest images go first, passes before
non-passes, until the new ones fit, so the archive never grows past it. An image larger than the whole budget is
refused (ValueError), nothing deleted for it."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

import structlog
from sqlalchemy import ColumnElement, Engine, and_, case, func, or_, select, update

from lineguard.config import RecipeSettings
from lineguard.config.model import ImageRetention
from lineguard.services.results.archive import ImageStore
from lineguard.services.results.schema import Inspection, InspectionImage

log = structlog.get_logger("lineguard.results.archive")
CHUNK = 500


def stored_bytes(engine: Engine) -> int:
    with engine.connect() as conn:
        used = conn.execute(
            select(func.coalesce(func.sum(InspectionImage.bytes), 0)).where(InspectionImage.deleted_at.is_(None))
        ).scalar_one()
    return int(used)


def make_room(engine: Engine, store: ImageStore, budget: int, incoming: int) -> int:
    """Delete the oldest images (passes first) until `incoming` more bytes fit in `budget`; how many went."""
    if incoming > budget:
        raise ValueError(f"{incoming} bytes of images do not fit the archive's whole budget of {budget} bytes")
    over = stored_bytes(engine) + incoming - budget
    deleted = 0
    while over > 0:
        passes_first = case((Inspection.verdict == "PASS", 0), else_=1)
        with engine.connect() as conn:
            oldest = conn.execute(
                select(InspectionImage.id, InspectionImage.uri, InspectionImage.bytes)
                .join(Inspection, Inspection.inspection_id == InspectionImage.inspection_id)
                .where(InspectionImage.deleted_at.is_(None))
                .order_by(passes_first, InspectionImage.stored_at, InspectionImage.id)
                .limit(CHUNK)
            ).all()
        if not oldest:
            break
        chosen = []
        for image_id, uri, size in oldest:
            if over <= 0:
                break
            chosen.append((image_id, uri))
            over -= size
        deleted += _delete(engine, store, chosen, "budget")
    return deleted


def expire(
    engine: Engine, store: ImageStore, recipes: Mapping[str, RecipeSettings], now: datetime | None = None
) -> int:
    """Delete every image past its recipe's age (defect_days for non-passes, good_days for passes); how many went.

    A recipe no longer configured keeps its images by the default retention."""
    now = now or datetime.now(UTC)
    default = RecipeSettings().retention
    ages = [(recipe_id, r.retention) for recipe_id, r in recipes.items()]
    known = [recipe_id for recipe_id, _ in ages]

    def past(retention: ImageRetention, recipe: ColumnElement[bool]) -> ColumnElement[bool]:
        good = now - timedelta(days=retention.good_days)
        defect = now - timedelta(days=retention.defect_days)
        return and_(
            recipe,
            or_(
                and_(Inspection.verdict == "PASS", InspectionImage.stored_at < good),
                and_(Inspection.verdict != "PASS", InspectionImage.stored_at < defect),
            ),
        )

    due = or_(
        *[past(retention, Inspection.recipe_id == recipe_id) for recipe_id, retention in ages],
        past(default, Inspection.recipe_id.not_in(known)),
    )
    deleted = 0
    while True:
        with engine.connect() as conn:
            found = conn.execute(
                select(InspectionImage.id, InspectionImage.uri)
                .join(Inspection, Inspection.inspection_id == InspectionImage.inspection_id)
                .where(InspectionImage.deleted_at.is_(None), due)
                .order_by(InspectionImage.id)
                .limit(CHUNK)
            ).all()
        if not found:
            return deleted
        deleted += _delete(engine, store, [(i, u) for i, u in found], "age")


def _delete(engine: Engine, store: ImageStore, images: list[tuple[int, str]], why: str) -> int:
    for _, uri in images:
        store.delete(uri)
    with engine.begin() as conn:
        conn.execute(
            update(InspectionImage)
            .where(InspectionImage.id.in_([i for i, _ in images]))
            .values(deleted_at=datetime.now(UTC))
        )
    if images:
        log.info("archived images deleted", count=len(images), by=why)
    return len(images)
