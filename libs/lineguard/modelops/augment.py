"""Lighting augmentation for training: what day and night shifts, ageing lamps and a changed exposure do to
the same part. Ultralytics' own HSV jitter (hsv_v, hsv_s) scales brightness and saturation; this adds an
offset brightness change and a contrast change about the image mean, which HSV alone does not cover.

Pure numpy / OpenCV on the uint8 image Ultralytics passes between its transforms; no torch."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from lineguard.vision.paired import recompose


@dataclass(frozen=True)
class LightingAugmentation:
    """The lighting part of a training run's augmentation, recorded in the run's config and the model card."""

    hsv_h: float = 0.015  # Ultralytics hue gain: small, colour of the part rarely shifts
    hsv_s: float = 0.7  # Ultralytics saturation gain: colour temperature of the light
    hsv_v: float = 0.4  # Ultralytics value gain: overall exposure, multiplicative
    brightness: float = 0.2  # +- this fraction of full scale added to every pixel
    contrast: float = 0.3  # contrast factor drawn from 1 +- this, about the image mean
    p: float = 0.5  # probability that an image gets the brightness / contrast change

    def ultralytics_args(self, paired: bool = False) -> dict[str, float]:
        if paired:
            # A paired input's channels are image / reference / difference, not colours: hue and saturation
            # would mix them, and exposure would change the reference too. BrightnessContrast lights the image.
            return {"hsv_h": 0.0, "hsv_s": 0.0, "hsv_v": 0.0}
        return {"hsv_h": self.hsv_h, "hsv_s": self.hsv_s, "hsv_v": self.hsv_v}


class BrightnessContrast:
    """An Ultralytics-style transform: labels dict in, labels dict out, only labels['img'] (uint8 HxWxC) changes.

    Random draws use Python's `random`, which Ultralytics seeds (seed, per worker), so a run with the same seed
    draws the same changes. On a paired input (lineguard.vision.paired) only the inspected image's channel is
    relit and the difference recomputed: the shift's light changes, the golden reference was taken once."""

    def __init__(self, brightness: float, contrast: float, p: float, paired: bool = False):
        self.brightness, self.contrast, self.p, self.paired = brightness, contrast, p, paired

    def __call__(self, labels: dict[str, Any]) -> dict[str, Any]:
        if self.p <= 0 or random.random() >= self.p:
            return labels
        image = labels["img"]
        alpha = random.uniform(1 - self.contrast, 1 + self.contrast)
        beta = random.uniform(-self.brightness, self.brightness) * 255
        if self.paired:
            image[:, :, 0] = adjust(np.ascontiguousarray(image[:, :, 0]), alpha, beta)
            labels["img"] = recompose(image)
        else:
            labels["img"] = adjust(image, alpha, beta)
        return labels


def adjust(image: np.ndarray, alpha: float, beta: float) -> np.ndarray:
    """out = (in - mean) * alpha + mean + beta, clipped to uint8, through one lookup table (cheap per image)."""
    mean = float(image.mean())
    table = np.clip((np.arange(256, dtype=np.float32) - mean) * alpha + mean + beta, 0, 255).astype(np.uint8)
    return cv2.LUT(image, table)
