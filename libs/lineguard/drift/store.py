"""Baselines in the MES database (table drift_baselines, migration 0005) and the values they are taken from.

Plain SQL over the documented schema (docs/mes-schema.md), so the CLI, the results service and the API read it
the same way. A baseline is taken from a good period of a station's own records, or from images (the training
set: the packaged sample boards by default) measured as capture measures a frame."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cv2
import sqlalchemy as sa

from lineguard.drift import Baseline, BaselineError, baseline_of, quality_features
from lineguard.imagequality import measure
from lineguard.imaging import ROI

TRAINING = "training"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


def _json(value: Any) -> Any:
    """A JSON column as SQLite (text) or PostgreSQL (decoded) hands it back through plain SQL."""
    return json.loads(value) if isinstance(value, str) else value


def period_rows(engine: sa.Engine, station: str, start: datetime, end: datetime) -> list[dict[str, float]]:
    """The features of the station's production records decided in [start, end): image quality as stored, the
    model's highest score and number of detections."""
    query = sa.text(
        "SELECT i.image_quality, COUNT(d.id) AS detections, MAX(d.score) AS max_score "
        "FROM inspections i LEFT JOIN defects d ON d.inspection_id = i.inspection_id "
        "WHERE i.station = :station AND i.decided_at >= :start AND i.decided_at < :end "
        "AND i.model_id IS NOT NULL GROUP BY i.inspection_id, i.image_quality"
    )
    rows: list[dict[str, float]] = []
    with engine.connect() as conn:
        for quality, detections, max_score in conn.execute(query, {"station": station, "start": start, "end": end}):
            row = {k: float(v) for k, v in (_json(quality) or {}).items()}
            row["detections"] = float(detections)
            row["max_score"] = float(max_score or 0.0)
            rows.append(row)
    return rows


def image_rows(paths: Iterable[Path], roi: ROI | None = None) -> list[dict[str, float]]:
    """The image quality of each image file, within `roi` as capture measures it."""
    rows = []
    for path in paths:
        pixels = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        if pixels is None:
            raise BaselineError(f"{path} is not a readable image")
        if roi is not None:
            pixels = pixels[roi.y : roi.y + roi.height, roi.x : roi.x + roi.width]
        rows.append(quality_features(measure(pixels).to_proto()))
    return rows


def folder_images(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise BaselineError(f"image folder {folder} does not exist")
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise BaselineError(f"image folder {folder} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    return paths


def training_baseline(folder: Path, bins: int, roi: ROI | None = None) -> Baseline:
    """The image-quality baseline of a training set's images (the model's features need a period of records)."""
    return baseline_of(TRAINING, image_rows(folder_images(folder), roi), bins, source=f"images in {folder}")


def store_baseline(engine: sa.Engine, station: str, baseline: Baseline) -> int:
    """Store `baseline` as the station's current one; its id."""
    table = sa.table(
        "drift_baselines",
        sa.column("id"),
        sa.column("station"),
        sa.column("created_at", sa.DateTime(timezone=True)),
        sa.column("source"),
        sa.column("samples"),
        sa.column("features", sa.JSON()),
    )
    with engine.begin() as conn:
        row = conn.execute(
            sa.insert(table)
            .values(
                station=station,
                created_at=datetime.now(UTC),
                source=baseline.source,
                samples=baseline.samples,
                features=baseline.to_json(),
            )
            .returning(table.c.id)
        ).one()
    return int(row.id)


def latest_baseline(engine: sa.Engine, station: str) -> Baseline | None:
    """The station's latest stored baseline, None when it has none."""
    query = sa.text(
        "SELECT id, source, samples, features FROM drift_baselines WHERE station = :station ORDER BY id DESC LIMIT 1"
    )
    with engine.connect() as conn:
        row = conn.execute(query, {"station": station}).first()
    if row is None:
        return None
    return Baseline.from_json(str(row.id), _json(row.features), int(row.samples), str(row.source))
