"""What an inspection keeps of its frame: plain functions from the frame and its verdict to encoded images.

A non-pass keeps the frame as the camera encoded it (`image`, not re-encoded: its sha256 is the camera's bytes)
and, when it has detections, an `overlay`, the frame with each one's box and label drawn; a pass keeps a
`thumbnail` (or, by its recipe's `retention.good_images`, the full image). A recipe that keeps a kind 0 days keeps
none of it."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import cv2
import numpy as np

from lineguard.config import RecipeSettings
from lineguard.config.seams import ArchiveSettings
from lineguard.imaging import check_encoded, content_type, decode_image
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
    """The images to keep of `frame` (ImageError when its bytes are no image).

    Decoded only as far as the kinds kept need: the frame as the camera encoded it is checked from its header (its
    size the header's: the row describes the file), a thumbnail alone is read reduced (reduction), an overlay whole.
    """
    kinds = kinds_kept(verdict, recipe)
    if not kinds:
        return []
    encoding = (frame.encoding or "png").lower()
    header = check_encoded(frame.data, expected_encoding=encoding)
    pixels: np.ndarray | None = None
    made = []
    for kind in kinds:
        if kind == "image":
            made.append(Rendered("image", frame.data, content_type(encoding), header.width, header.height))
            continue
        if kind == "overlay" and not boxes:
            # Nothing to draw (an OVERLOAD or TIMEOUT, a code's or a rule's FAIL): the overlay would be the image
            # again, as a JPEG, at a decode and an encode a part, most of them at overload.
            continue
        if kind == "overlay":
            pixels = decode_image(frame.data, expected_encoding=encoding) if pixels is None else pixels
            drawn = overlay(pixels, boxes)
        else:
            # An overlay's decode, when one is kept too; else a read reduced by what the thumbnail takes off anyway.
            source = pixels
            if source is None:
                factor = reduction(max(header.width, header.height), settings.thumbnail_px)
                source = decode_image(frame.data, expected_encoding=encoding, reduced=factor)
            drawn = thumbnail(source, settings.thumbnail_px)
        made.append(Rendered(kind, _jpeg(drawn, settings.jpeg_quality), "image/jpeg", *_size(drawn)))
    return made


def reduction(longest: int, thumbnail_px: int) -> int:
    """The largest of OpenCV's reduced reads (1, 2, 4, 8) that leaves the longest side at least `thumbnail_px`.

    On the 640 px boards, for a 256 px thumbnail: 2, a JPEG read in 0.5 ms of CPU instead of 1.1 and the resize
    from 320 px instead of 640 (benchmarks/results_cpu.py, docs/benchmarks.md)."""
    factor = 1
    while factor < 8 and longest // (factor * 2) >= thumbnail_px:
        factor *= 2
    return factor


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
    # Area averaging where a pixel of the thumbnail gathers 2 or more a side (no aliasing); above that, as after a
    # reduced read, bilinear is as good to the eye and costs a sixth of INTER_AREA's non-integer path.
    interpolation = cv2.INTER_AREA if factor <= 0.5 else cv2.INTER_LINEAR
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    return cv2.resize(pixels, size, interpolation=interpolation)


def _jpeg(pixels: np.ndarray, quality: int) -> bytes:
    ok, buffer = cv2.imencode(".jpg", pixels, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:  # pragma: no cover - OpenCV encodes any uint8 image
        raise ValueError(f"could not encode a {pixels.shape} image as JPEG")
    return buffer.tobytes()
