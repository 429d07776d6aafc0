"""YOLO11 detection / segmentation output to boxes (and masks) in source pixels: decode,
threshold, class-aware NMS (numpy only), undo the letterbox and the recipe's ROI crop.

The Ultralytics ONNX export without NMS gives one tensor (1, 4 + classes, anchors):
rows 0..3 are cx, cy, w, h in input pixels, then one score per class; a -seg model adds
M mask coefficient rows and a second output of prototype masks (lineguard.vision.masks)."""

from __future__ import annotations

import numpy as np

from lineguard.vision.detections import Detections
from lineguard.vision.masks import box_mask, logits
from lineguard.vision.preprocess import Letterbox

MAX_DETECTIONS = 300


def decode(
    output: np.ndarray, num_classes: int, conf_threshold: float, mask_channels: int = 0
) -> tuple[Detections, np.ndarray]:
    """The anchors whose best class scores at least conf_threshold, as Detections in input pixels (before NMS),
    and their (N, M) mask coefficients (M = 0 for detection)."""
    rows_expected = 4 + num_classes + mask_channels
    if output.ndim != 3 or output.shape[0] != 1 or output.shape[1] != rows_expected:
        masks = f" and {mask_channels} masks" if mask_channels else ""
        raise ValueError(
            f"expected output (1, {rows_expected}, anchors) for {num_classes} classes{masks}, got {tuple(output.shape)}"
        )
    rows = output[0]
    class_scores = rows[4 : 4 + num_classes]
    class_ids = class_scores.argmax(axis=0)
    scores = class_scores[class_ids, np.arange(class_scores.shape[1])]
    keep = scores >= conf_threshold
    cx, cy, w, h = rows[:4, keep]
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1).astype(np.float32)
    found = Detections(xyxy=boxes, class_id=class_ids[keep], confidence=scores[keep].astype(np.float32))
    return found, rows[4 + num_classes :, keep].T


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
    num_classes: int,
    placement: Letterbox,
    *,
    conf_threshold: float,
    iou_threshold: float,
    offset: tuple[int, int] = (0, 0),
    max_detections: int = MAX_DETECTIONS,
    protos: np.ndarray | None = None,
) -> Detections:
    """Detections in the full image's pixels, best score first.

    `offset` is the top-left of the region the model saw (the recipe's inspect_roi),
    added back so boxes land in the original frame. With `protos` (1, M, h, w), the
    output of a -seg model: each detection also gets its mask outline and pixel count."""
    mask_channels = 0 if protos is None else protos.shape[1]
    found, coefficients = decode(output, num_classes, conf_threshold, mask_channels)
    keep = class_aware_nms(found.xyxy, found.confidence, found.class_id, iou_threshold)[:max_detections]
    boxes = placement.to_source(found.xyxy[keep])
    # A box wholly in the padding clips to nothing.
    inside = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    keep, boxes = keep[inside], boxes[inside]
    polygon, mask_px = None, None
    if protos is not None:
        per_detection = logits(coefficients[keep], protos[0])
        masks = [box_mask(m, b, placement) for m, b in zip(per_detection, boxes, strict=True)]
        polygon = tuple(m.outline() + np.asarray(offset, np.float32) for m in masks)
        mask_px = np.array([m.area_px for m in masks], dtype=np.int64)
    boxes[:, [0, 2]] += offset[0]
    boxes[:, [1, 3]] += offset[1]
    return Detections(
        xyxy=boxes, class_id=found.class_id[keep], confidence=found.confidence[keep], polygon=polygon, mask_px=mask_px
    )
