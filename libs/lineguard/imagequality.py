"""How good one image is for inspection: brightness, contrast, sharpness, saturation (docs/drift.md).

Measured by capture on every frame and again on the training images for the drift watch's baseline, so both sides
use this one function. It works on a gray copy at most QUALITY_SIDE pixels on its long side: the figures describe
the lighting and focus of the whole view, which a downscaled copy keeps, and it costs a fraction of a millisecond
instead of several on a 5 MP frame. Sharpness (variance of the Laplacian) depends on that scale: it is only
compared with figures measured the same way."""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from lineguard.v1.common_pb2 import ImageQuality

QUALITY_SIDE = 256
SATURATED_LEVEL = 250  # a pixel at or above this is taken as clipped (over-exposed)
# JPEG decodes at 1/2, 1/4 or 1/8 scale inside libjpeg, far cheaper than a full decode and a resize.
_REDUCED = (
    (8, cv2.IMREAD_REDUCED_GRAYSCALE_8),
    (4, cv2.IMREAD_REDUCED_GRAYSCALE_4),
    (2, cv2.IMREAD_REDUCED_GRAYSCALE_2),
)


@dataclass(frozen=True)
class Quality:
    brightness: float  # mean gray level, 0..255
    contrast: float  # standard deviation of the gray levels
    sharpness: float  # variance of the Laplacian at QUALITY_SIDE
    saturated: float  # share of pixels at SATURATED_LEVEL or above, 0..1

    def to_proto(self) -> ImageQuality:
        return ImageQuality(
            brightness=self.brightness, contrast=self.contrast, sharpness=self.sharpness, saturated=self.saturated
        )


def stored_figures(quality: ImageQuality) -> dict[str, float] | None:
    """As inspections.image_quality holds them, rounded to what they mean; None when a figure is not finite."""
    figures = {
        "brightness": round(quality.brightness, 2),
        "contrast": round(quality.contrast, 2),
        "sharpness": round(quality.sharpness, 2),
        "saturated": round(quality.saturated, 5),
    }
    return figures if all(map(math.isfinite, figures.values())) else None


def measure(pixels: np.ndarray) -> Quality:
    """The quality of decoded pixels: gray (H, W) or colour (H, W, 3|4, BGR), 8 or 16 bits."""
    # Every step-th pixel first (a view, then one small copy): a 5 MP frame is never converted or filtered whole.
    step = max(1, max(pixels.shape[:2]) // (2 * QUALITY_SIDE))
    gray = _gray8(np.ascontiguousarray(pixels[::step, ::step]) if step > 1 else pixels)
    height, width = gray.shape
    scale = QUALITY_SIDE / max(height, width)
    if scale < 1:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        gray = cv2.resize(gray, size, interpolation=cv2.INTER_AREA)
    mean, std = cv2.meanStdDev(gray)
    laplacian = cv2.Laplacian(gray, cv2.CV_32F)
    saturated = float(np.count_nonzero(gray >= SATURATED_LEVEL)) / gray.size
    return Quality(float(mean[0, 0]), float(std[0, 0]), float(laplacian.var()), saturated)


def measure_encoded(data: bytes, encoding: str, width: int = 0) -> Quality:
    """The quality of an encoded image (what a source hands over without its pixels). A JPEG is decoded at a
    reduced scale when its `width` says that still leaves QUALITY_SIDE pixels."""
    flag = cv2.IMREAD_GRAYSCALE
    if encoding == "jpeg" and width:
        flag = next((f for factor, f in _REDUCED if width // factor >= QUALITY_SIDE), flag)
    return measure(decode_gray(data, flag))


def decode_gray(data: bytes, flag: int = cv2.IMREAD_GRAYSCALE) -> np.ndarray:
    """The image's gray pixels; ValueError when it does not decode."""
    pixels = cv2.imdecode(np.frombuffer(data, np.uint8), flag)
    if pixels is None:
        raise ValueError("image quality: the image does not decode")
    return pixels


def _gray8(pixels: np.ndarray) -> np.ndarray:
    if pixels.dtype != np.uint8:  # a 10-16 bit mono camera: its top 8 bits
        pixels = (pixels.astype(np.float32) * (255.0 / max(float(np.iinfo(pixels.dtype).max), 1.0))).astype(np.uint8)
    if pixels.ndim == 2:
        return pixels
    if pixels.shape[2] == 1:
        return pixels[..., 0]
    return cv2.cvtColor(pixels, cv2.COLOR_BGRA2GRAY if pixels.shape[2] == 4 else cv2.COLOR_BGR2GRAY)
