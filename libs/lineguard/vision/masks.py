"""YOLO11-seg masks in numpy: prototype masks x coefficients -> a binary mask per detection in
source pixels -> its outline polygon and pixel count.

The -seg export has two outputs: (1, 4 + classes + M, anchors), whose last M rows are each
anchor's mask coefficients, and (1, M, h, w) prototype masks at a quarter of the input
size. A detection's mask is sigmoid(coefficients . prototypes) > 0.5, cropped to its box,
upsampled to the letterboxed input and the letterbox undone. Here the upsampling and the
un-letterboxing are one bilinear resampling straight from the prototype grid to the source
pixels inside the box (the mapping of torch's interpolate(align_corners=False) + undoing
the letterbox, pixel centres included), so no full-size mask is ever built. As Ultralytics
does, the logits are resampled and the threshold applied after: sigmoid(x) > 0.5 exactly
where x > 0, so the sigmoid itself never needs computing."""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from lineguard.vision.preprocess import Letterbox

THRESHOLD = 0.0  # on logits: sigmoid(x) > 0.5 <=> x > 0


@dataclass(frozen=True)
class Mask:
    """One detection's mask: `pixels` (h, w) bool, its top-left (x, y) in source pixels."""

    pixels: np.ndarray
    x: int
    y: int

    @property
    def area_px(self) -> int:
        return int(self.pixels.sum())

    def outline(self) -> np.ndarray:
        """(K, 2) x, y source pixels of the largest outer contour; empty (0, 2) for an empty mask."""
        contours, _ = cv2.findContours(self.pixels.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        if not contours:
            return np.zeros((0, 2), np.float32)
        # contourArea is 0 for one-pixel-wide shapes; the point count breaks the tie.
        largest = max(contours, key=lambda c: (cv2.contourArea(c), len(c)))
        return largest.reshape(-1, 2).astype(np.float32) + np.array([self.x, self.y], np.float32)


def logits(coefficients: np.ndarray, protos: np.ndarray) -> np.ndarray:
    """(N, M) coefficients, (M, h, w) prototypes -> (N, h, w) mask logits (sigmoid of which is the probability)."""
    m, h, w = protos.shape
    if coefficients.ndim != 2 or coefficients.shape[1] != m:
        raise ValueError(f"expected (N, {m}) mask coefficients for {m} prototypes, got {coefficients.shape}")
    return (coefficients.astype(np.float32) @ protos.reshape(m, h * w).astype(np.float32)).reshape(-1, h, w)


def box_mask(logit: np.ndarray, box: np.ndarray, placement: Letterbox) -> Mask:
    """The part of one (h, w) logit map inside `box` (x1, y1, x2, y2 source pixels) above the threshold."""
    x0, y0 = max(0, math.floor(box[0])), max(0, math.floor(box[1]))
    x1, y1 = min(placement.src_width, math.ceil(box[2])), min(placement.src_height, math.ceil(box[3]))
    if x1 <= x0 or y1 <= y0:
        return Mask(np.zeros((0, 0), bool), x0, y0)
    # Source pixel centre (x + 0.5) -> input (x + 0.5) * scale + pad -> prototype (input * h / size) - 0.5,
    # the same half-pixel convention as cv2.resize and torch's interpolate(align_corners=False).
    ratio_x = logit.shape[1] / placement.size
    ratio_y = logit.shape[0] / placement.size
    ax, ay = placement.scale * ratio_x, placement.scale * ratio_y
    bx = ((x0 + 0.5) * placement.scale + placement.pad_x) * ratio_x - 0.5
    by = ((y0 + 0.5) * placement.scale + placement.pad_y) * ratio_y - 0.5
    to_proto = np.array([[ax, 0, bx], [0, ay, by]], np.float32)
    window = cv2.warpAffine(
        logit.astype(np.float32),
        to_proto,
        (x1 - x0, y1 - y0),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_REPLICATE,
    )
    return Mask(window > THRESHOLD, x0, y0)
