"""What an inspection keeps of its frame: plain functions from the frame and its verdict to encoded images.

A non-pass keeps the frame as the camera encoded it (`image`, not re-encoded: its sha256 is the camera's bytes)
and an `overlay`, the frame with each detection's box and label drawn; a pass keeps a `thumbnail` (or, by its
recipe's `retention.good_images`, the full image). A recipe that keeps a kind 0 days keeps none of it."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import cv2
import numpy as np

from lineguard.config import RecipeSettings
from lineguard.config.seams import ArchiveSettings
from lineguard.imaging import content_type, decode_image
from lineguard.v1.frame_pb2 import Frame

_RED = (40, 40, 230)


@dataclass(frozen=True)
class Box:
    """A detection as drawn (the archive's overlay, the dashboard's tiles): class, score and box in image pixels, as
    the inspection's defects row has it; the outline when the model gives masks."""

    class_name: str
    score: float
    x1: float
    y1: float
    x2: float
    y2: float
    outline: tuple[tuple[float, float], ...] = ()

    @property
    def outline_points(self) -> str:
        """The SVG `points` of the outline."""
        return " ".join(f"{x:.1f},{y:.1f}" for x, y in self.outline)


@dataclass(frozen=True)
class Rendered:
    kind: str  # image, thumbnail or overlay
    data: bytes
    content_type: str
    width: int  # of the encoded image, pixels
    height: int

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def extension(self) -> str:
        return self.content_type.split("/")[1]


def kinds_kept(verdict: str, recipe: RecipeSettings | None) -> tuple[str, ...]:
    retention = recipe.retention if recipe is not None else RecipeSettings().retention
    if verdict == "PASS":
        return (retention.good_images,) if retention.good_days > 0 else ()
    return ("image", "overlay") if retention.defect_days > 0 else ()


def renderings(
    frame: Frame, verdict: str, boxes: list[Box], recipe: RecipeSettings | None, settings: ArchiveSettings
) -> list[Rendered]:
    """The images to keep of `frame` (ImageError when its bytes are no image)."""
    kinds = kinds_kept(verdict, recipe)
    if not kinds:
        return []
    encoding = (frame.encoding or "png").lower()
    pixels = decode_image(frame.data, expected_encoding=encoding)
    made = []
    for kind in kinds:
        if kind == "image":
            # The size of the pixels decoded from the stored bytes, not the frame's header: the row describes the file.
            made.append(Rendered("image", frame.data, content_type(encoding), *_size(pixels)))
        else:
            drawn = overlay(pixels, boxes) if kind == "overlay" else thumbnail(pixels, settings.thumbnail_px)
            made.append(Rendered(kind, _jpeg(drawn, settings.jpeg_quality), "image/jpeg", *_size(drawn)))
    return made


def _size(pixels: np.ndarray) -> tuple[int, int]:
    height, width = pixels.shape[:2]
    return int(width), int(height)


def overlay(pixels: np.ndarray, boxes: list[Box]) -> np.ndarray:
    """The frame with each detection's box and `class score` label drawn (a copy)."""
    out = pixels.copy()
    thick = max(1, round(max(out.shape[:2]) / 400))
    for box in boxes:
        top_left, bottom_right = (round(box.x1), round(box.y1)), (round(box.x2), round(box.y2))
        cv2.rectangle(out, top_left, bottom_right, _RED, thick)
        label = f"{box.class_name} {box.score:.2f}"
        scale = 0.4 * thick
        (w, h), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        y = max(h + base, top_left[1])
        cv2.rectangle(out, (top_left[0], y - h - base), (top_left[0] + w, y), _RED, -1)
        cv2.putText(out, label, (top_left[0], y - base), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1)
    return out


def thumbnail(pixels: np.ndarray, longest: int) -> np.ndarray:
    height, width = pixels.shape[:2]
    factor = longest / max(height, width)
    if factor >= 1:
        return pixels
    return cv2.resize(
        pixels, (max(1, round(width * factor)), max(1, round(height * factor))), interpolation=cv2.INTER_AREA
    )


def _jpeg(pixels: np.ndarray, quality: int) -> bytes:
    ok, buffer = cv2.imencode(".jpg", pixels, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:  # pragma: no cover - OpenCV encodes any uint8 image
        raise ValueError(f"could not encode a {pixels.shape} image as JPEG")
    return buffer.tobytes()
