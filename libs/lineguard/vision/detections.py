"""The one form of a model's detections, from post-processing to `lineguard model predict / eval`; the
inference service turns it into protobuf only at its edge (services/inference/detect.py, to_proto).

supervision's shape (arrays, one row per detection, validated once), without supervision itself: its
`mask` is a full-frame (N, H, W) array, which lineguard never builds (vision/masks.py resamples each mask
inside its box only), and it would pull in opencv-python beside this project's opencv-python-headless.
Class names are not carried: a class id indexes the model's classes (its card)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True, eq=False)
class Detections:
    """N detections in one image's pixels (x1, y1 top-left, x2, y2 bottom-right), best score first
    where postprocess made them.

    xyxy        (N, 4) float32   box corners
    class_id    (N,) int64       index into the model's classes, >= 0
    confidence  (N,) float32     the class's score
    polygon     N arrays (K, 2) float32, x y: each mask's outline (K = 0 for an empty mask); segmentation only
    mask_px     (N,) int64       pixels in each mask; segmentation only, given with polygon

    Arrays are converted to these dtypes; ValueError for shapes that do not agree, values that are not
    numbers (NaN / inf), a negative or non-integer class id, or a polygon without mask_px (or the reverse).
    Select rows as with numpy: `detections[detections.confidence >= 0.5]`, `detections[:3]`, `detections[i]`
    (a Detections of one). There is no iteration over rows: read the arrays."""

    xyxy: np.ndarray
    class_id: np.ndarray
    confidence: np.ndarray
    polygon: tuple[np.ndarray, ...] | None = None
    mask_px: np.ndarray | None = None

    # Without this Python would iterate through __getitem__, one Detections of one at a time.
    __iter__ = None

    def __post_init__(self) -> None:
        xyxy = np.asarray(self.xyxy, dtype=np.float32)
        if xyxy.ndim != 2 or xyxy.shape[1] != 4:
            raise ValueError(f"xyxy must be (N, 4) box corners, got shape {xyxy.shape}")
        n = xyxy.shape[0]
        confidence = _rows("confidence", self.confidence, n, np.float32)
        class_id = _ids("class_id", self.class_id, n)
        _finite("xyxy", xyxy)
        _finite("confidence", confidence)
        polygon, mask_px = self.polygon, self.mask_px
        if (polygon is None) != (mask_px is None):
            raise ValueError("polygon and mask_px come together (a segmentation model's masks) or not at all")
        if polygon is not None and mask_px is not None:
            if len(polygon) != n:
                raise ValueError(f"polygon holds {len(polygon)} outlines for {n} detections")
            polygon = tuple(_outline(i, p) for i, p in enumerate(polygon))
            mask_px = _ids("mask_px", mask_px, n)
        for name, value in (
            ("xyxy", xyxy),
            ("class_id", class_id),
            ("confidence", confidence),
            ("polygon", polygon),
            ("mask_px", mask_px),
        ):
            object.__setattr__(self, name, value)

    @classmethod
    def empty(cls) -> Detections:
        return cls(
            xyxy=np.zeros((0, 4), np.float32), class_id=np.zeros(0, np.int64), confidence=np.zeros(0, np.float32)
        )

    def __len__(self) -> int:
        return int(self.xyxy.shape[0])

    def __getitem__(self, index: int | slice | Sequence[int] | Sequence[bool] | np.ndarray) -> Detections:
        # numpy resolves the index once (IndexError out of range or for a mask of another length).
        rows = np.atleast_1d(np.arange(len(self))[index])
        return Detections(
            xyxy=self.xyxy[rows],
            class_id=self.class_id[rows],
            confidence=self.confidence[rows],
            polygon=None if self.polygon is None else tuple(self.polygon[i] for i in rows),
            mask_px=None if self.mask_px is None else self.mask_px[rows],
        )

    @property
    def area_px(self) -> np.ndarray:
        """(N,) float64 px²: each mask's pixel count where there are masks, else each box's area."""
        if self.mask_px is not None:
            return self.mask_px.astype(np.float64)
        boxes = self.xyxy.astype(np.float64)
        return np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)


def _rows(name: str, value: Any, n: int, dtype: npt.DTypeLike) -> np.ndarray:
    array = np.asarray(value, dtype=dtype)
    if array.shape != (n,):
        raise ValueError(f"{name} must be ({n},) for {n} boxes, got shape {array.shape}")
    return array


def _ids(name: str, value: Any, n: int) -> np.ndarray:
    array = np.asarray(value)
    # A float id (a class read from a score column, say) is a mistake to name, not to round.
    if array.size and array.dtype.kind not in "iu":
        raise ValueError(f"{name} must be integers, got {array.dtype}")
    array = _rows(name, array, n, np.int64)
    if (array < 0).any():
        raise ValueError(f"{name} must be >= 0, got {int(array.min())}")
    return array


def _finite(name: str, array: np.ndarray) -> None:
    broken = int(array.size - np.count_nonzero(np.isfinite(array)))
    if broken:
        raise ValueError(f"{name} holds {broken} values that are not numbers (NaN / inf)")


def _outline(i: int, points: Any) -> np.ndarray:
    array = np.asarray(points, dtype=np.float32)
    if array.size == 0:
        array = array.reshape(0, 2)
    if array.ndim != 2 or array.shape[1] != 2:
        raise ValueError(f"polygon[{i}] must be (K, 2) x y points, got shape {array.shape}")
    _finite(f"polygon[{i}]", array)
    return array
