"""A model over a folder of images, one JSON per image (`lineguard model predict`), so any
tool can score the predictions without lineguard.

Each JSON holds the image's file name and size, the model's id and version, the thresholds,
and the detections: class id and name, score, box corners in the image's pixels, and the
mask polygon where the model gives one (segmentation models)."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lineguard.imaging import ImageError, decode_image
from lineguard.modelops.datasets import IMAGE_SUFFIXES
from lineguard.vision.detect import detect, stored_input
from lineguard.vision.detections import Detections
from lineguard.vision.errors import UnpairedInput
from lineguard.vision.model import Detector, ModelCard

PREDICTION_FORMAT = "lineguard.prediction/1"


class PredictError(ValueError):
    """The source folder or output folder cannot be used; the message says why."""


@dataclass(frozen=True)
class Skipped:
    path: Path
    reason: str


@dataclass
class PredictSummary:
    written: list[Path] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    detections: int = 0


def list_images(source: Path) -> list[Path]:
    """Image files under `source` (any depth), in path order; PredictError when there are none
    or two would write the same JSON (same folder, same stem)."""
    source = Path(source)
    if not source.is_dir():
        raise PredictError(f"{source}: not a folder" if source.exists() else f"{source}: no such folder")
    images = sorted(p for p in source.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not images:
        raise PredictError(f"{source}: no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    seen: dict[Path, Path] = {}
    for image in images:
        key = image.with_suffix("")
        if key in seen:
            raise PredictError(f"{seen[key]} and {image} would both write {key.name}.json: rename one")
        seen[key] = image
    return images


def read_image(path: Path) -> np.ndarray:
    """The image as BGR pixels; ImageError naming the file and the cause."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ImageError(f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        return decode_image(data)
    except ImageError as exc:
        raise ImageError(f"{path}: {exc}") from None


def detection_records(detections: Detections, classes: Sequence[str]) -> list[dict[str, Any]]:
    """One JSON object per detection, its class id named from the model's `classes`."""
    records = []
    for i in range(len(detections)):
        class_id = int(detections.class_id[i])
        record: dict[str, Any] = {
            "class_id": class_id,
            "class_name": classes[class_id],
            "score": round(float(detections.confidence[i]), 5),
            "box": {k: round(float(v), 2) for k, v in zip(("x1", "y1", "x2", "y2"), detections.xyxy[i], strict=True)},
        }
        if detections.polygon is not None and detections.mask_px is not None:  # a segmentation model
            record["polygon"] = [[round(float(x), 2), round(float(y), 2)] for x, y in detections.polygon[i]]
            record["mask_px"] = int(detections.mask_px[i])
        records.append(record)
    return records


def prediction_record(
    image_name: str, width: int, height: int, card: ModelCard, detections: Detections, *, conf: float, iou: float
) -> dict[str, Any]:
    """One image's predictions as plain JSON data (boxes in pixels, x1 y1 top-left, x2 y2 bottom-right)."""
    return {
        "format": PREDICTION_FORMAT,
        "image": image_name,
        "width": int(width),
        "height": int(height),
        "model": {"id": card.model_id, "version": card.version, "classes": list(card.classes)},
        "thresholds": {"conf": conf, "iou": iou},
        "detections": detection_records(detections, card.classes),
    }


def output_path(source: Path, image: Path, out: Path) -> Path:
    """out/<the image's path under source, .json instead of its suffix>."""
    return Path(out) / Path(image).relative_to(source).with_suffix(".json")


def detect_file(
    detector: Detector, image_path: Path, *, conf: float, iou: float, reference: np.ndarray | None = None
) -> tuple[np.ndarray, Detections]:
    """An image file's pixels and what the model finds in them: a paired model compares it with `reference`
    or, without one, reads it as a paired dataset stores it. ImageError naming the file (a reference of
    another size than this image is this image's problem)."""
    pixels = read_image(image_path)
    try:
        image, given = (pixels, reference) if reference is not None else stored_input(detector, pixels)
        return image, detect(detector, image, conf_threshold=conf, iou_threshold=iou, reference=given).detections
    except ImageError as exc:
        raise type(exc)(f"{image_path}: {exc}") from None


def predict_folder(
    detector: Detector,
    source: Path,
    out: Path,
    *,
    conf: float,
    iou: float,
    images: list[Path] | None = None,
    reference: np.ndarray | None = None,
    on_image: Callable[[Path, Skipped | None], None] | None = None,
) -> PredictSummary:
    """Run the model over every image under `source`, writing one JSON per image under `out`.

    A paired model compares every image with `reference` (a golden image registered to them) or,
    without one, reads the paired inputs a paired dataset stores. An unreadable image is skipped and
    recorded with its cause, and the rest go on; UnpairedInput for an image a paired model cannot compare
    (no reference given and not a paired input) stops the run. on_image(path, skipped-or-None) is called
    after each image (for a progress bar)."""
    source, out = Path(source), Path(out)
    images = list_images(source) if images is None else images
    summary = PredictSummary()
    for image_path in images:
        skipped = None
        try:
            image, found = detect_file(detector, image_path, conf=conf, iou=iou, reference=reference)
        except UnpairedInput:
            raise  # not one bad image but the wrong kind of input for the model: the caller's to refuse
        except ImageError as exc:
            skipped = Skipped(image_path, str(exc))
            summary.skipped.append(skipped)
        else:
            height, width = image.shape[:2]
            record = prediction_record(image_path.name, width, height, detector.card, found, conf=conf, iou=iou)
            target = output_path(source, image_path, out)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(json.dumps(record, indent=2) + "\n")
            summary.written.append(target)
            summary.detections += len(found)
        if on_image is not None:
            on_image(image_path, skipped)
    return summary
