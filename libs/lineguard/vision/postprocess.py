"""YOLO11 detection / segmentation output to boxes (and masks) in source pixels: decode,
threshold, class-aware NMS (numpy only), undo the letterbox and the recipe's ROI crop.

The Ultralytics ONNX export without NMS gives one tensor (1, 4 + classes, anchors):
rows 0..3 are cx, cy, w, h in input pixels, then one score per class; a -seg model adds
M mask coefficient rows and a second output of prototype masks (lineguard.vision.masks)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from lineguard.vision.masks import Mask, box_mask, logits
from lineguard.vision.preprocess import Letterbox

MAX_DETECTIONS = 300


@dataclass(frozen=True)
class Detection:
    class_id: int
    class_name: str
    score: float
    x1: float
    y1: float
    x2: float
    y2: float
    mask: tuple[tuple[float, float], ...] = ()   # outline polygon in source pixels (segmentation only)
    mask_px: int | None = None                   # pixels in the mask (segmentation only)

    @property
    def area_px(self) -> float:
        """The mask's pixel count where there is a mask, else the box's area."""
        if self.mask_px is not None:
            return float(self.mask_px)
        return max(0.0, self.x2 - self.x1) * max(0.0, self.y2 - self.y1)


@dataclass(frozen=True)
class Candidates:
    """Boxes that passed the threshold: boxes (N, 4) x1 y1 x2 y2, scores (N,), class_ids (N,),
    mask coefficients (N, M) (M = 0 for detection)."""

    boxes: np.ndarray
    scores: np.ndarray
    class_ids: np.ndarray
    coefficients: np.ndarray


def decode(output: np.ndarray, num_classes: int, conf_threshold: float, mask_channels: int = 0) -> Candidates:
    """The anchors whose best class scores at least conf_threshold, as xyxy boxes in input pixels."""
    rows_expected = 4 + num_classes + mask_channels
    if output.ndim != 3 or output.shape[0] != 1 or output.shape[1] != rows_expected:
        masks = f" and {mask_channels} masks" if mask_channels else ""
        raise ValueError(f"expected output (1, {rows_expected}, anchors) for {num_classes} classes{masks}, "
                         f"got {tuple(output.shape)}")
    rows = output[0]
    class_scores = rows[4:4 + num_classes]
    class_ids = class_scores.argmax(axis=0)
    scores = class_scores[class_ids, np.arange(class_scores.shape[1])]
    keep = scores >= conf_threshold
    cx, cy, w, h = rows[:4, keep]
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1).astype(np.float32)
    return Candidates(boxes=boxes, scores=scores[keep].astype(np.float32), class_ids=class_ids[keep],
                      coefficients=rows[4 + num_classes:, keep].T)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy non-maximum suppression: indices of the boxes kept, best score first."""
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    x1, y1, x2, y2 = boxes.T
    areas = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    order = np.argsort(-np.asarray(scores), kind="stable")
    kept: list[int] = []
    while order.size:
        best, rest = order[0], order[1:]
        kept.append(int(best))
        inter_w = np.clip(np.minimum(x2[best], x2[rest]) - np.maximum(x1[best], x1[rest]), 0, None)
        inter_h = np.clip(np.minimum(y2[best], y2[rest]) - np.maximum(y1[best], y1[rest]), 0, None)
        inter = inter_w * inter_h
        union = areas[best] + areas[rest] - inter
        iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
        order = rest[iou <= iou_threshold]
    return np.asarray(kept, dtype=np.int64)


def class_aware_nms(boxes: np.ndarray, scores: np.ndarray, class_ids: np.ndarray, iou_threshold: float) -> np.ndarray:
    """NMS within each class only: a short over a spur is two defects, not one."""
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    if boxes.shape[0] == 0:
        return np.zeros(0, dtype=np.int64)
    # Shifting each class to its own region of the plane keeps classes from overlapping. The shift is the
    # span of all corners (raw boxes can have negative ones), so no two classes' regions can touch.
    span = float(boxes.max() - boxes.min()) + 1.0
    offset = (np.asarray(class_ids, dtype=np.float32) * span)[:, None]
    return nms(boxes + offset, scores, iou_threshold)


def postprocess(
    output: np.ndarray,
    class_names: Sequence[str],
    placement: Letterbox,
    *,
    conf_threshold: float,
    iou_threshold: float,
    offset: tuple[int, int] = (0, 0),
    max_detections: int = MAX_DETECTIONS,
    protos: np.ndarray | None = None,
) -> list[Detection]:
    """Detections in the full image's pixels, best score first.

    `offset` is the top-left of the region the model saw (the recipe's inspect_roi),
    added back so boxes land in the original frame. With `protos` (1, M, h, w), the
    output of a -seg model: each detection also gets its mask outline and pixel count."""
    mask_channels = 0 if protos is None else protos.shape[1]
    found = decode(output, len(class_names), conf_threshold, mask_channels)
    keep = class_aware_nms(found.boxes, found.scores, found.class_ids, iou_threshold)[:max_detections]
    boxes = placement.to_source(found.boxes[keep])
    # A box wholly in the padding clips to nothing.
    inside = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    keep, boxes = keep[inside], boxes[inside]
    masks = [None] * len(keep)
    if protos is not None:
        per_detection = logits(found.coefficients[keep], protos[0])
        masks = [box_mask(m, b, placement) for m, b in zip(per_detection, boxes, strict=True)]
    boxes[:, [0, 2]] += offset[0]
    boxes[:, [1, 3]] += offset[1]
    return [
        Detection(class_id=int(c), class_name=class_names[int(c)], score=float(s),
                  x1=float(b[0]), y1=float(b[1]), x2=float(b[2]), y2=float(b[3]),
                  **({} if m is None else _mask_fields(m, offset)))
        for b, s, c, m in zip(boxes, found.scores[keep], found.class_ids[keep], masks, strict=True)
    ]


def _mask_fields(mask: Mask, offset: tuple[int, int]) -> dict[str, Any]:
    outline = mask.outline() + np.float32(offset)
    return {"mask": tuple((float(x), float(y)) for x, y in outline), "mask_px": mask.area_px}
