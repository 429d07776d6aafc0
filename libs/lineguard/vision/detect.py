"""Detecting defects in an image: crop, letterbox, run the model, map boxes back.

The library half of inference, shared by the inference service and the model tools
(`lineguard model predict / eval`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lineguard.contracts import now_ns
from lineguard.imaging import ROI, ImageError
from lineguard.vision.model import OnnxDetector
from lineguard.vision.postprocess import Detection, postprocess
from lineguard.vision.preprocess import preprocess


@dataclass(frozen=True)
class Timed:
    """Detections in frame pixels and the nanoseconds each stage began and ended at."""

    detections: list[Detection]
    marks: dict[str, tuple[int, int]]


def detect(detector: OnnxDetector, image: np.ndarray, *, conf_threshold: float, iou_threshold: float,
           roi: ROI | None = None) -> Timed:
    """Defects in a BGR image; with `roi`, only inside it (boxes still in the whole image's pixels)."""
    t0 = now_ns()
    region = image if roi is None else crop(image, roi)
    tensor, placement = preprocess(region, detector.card.input_size)
    t1 = now_ns()
    output = detector.run(tensor)
    t2 = now_ns()
    detections = postprocess(output, detector.card.classes, placement, conf_threshold=conf_threshold,
                             iou_threshold=iou_threshold, offset=(roi.x, roi.y) if roi else (0, 0))
    t3 = now_ns()
    return Timed(detections, {"preprocess": (t0, t1), "infer": (t1, t2), "postprocess": (t2, t3)})


def crop(image: np.ndarray, roi: ROI) -> np.ndarray:
    if roi.x < 0 or roi.y < 0 or roi.width <= 0 or roi.height <= 0:
        raise ImageError(f"region {roi.x},{roi.y} {roi.width}x{roi.height} is not a region of the image "
                         "(needs x, y >= 0 and a positive size)")
    return roi.crop(image)
