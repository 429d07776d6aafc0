"""Print-quality grades of a decoded 2D symbol, in the spirit of ISO/IEC 15415 and AIM DPM (ISO/IEC TR 29158).

Measured on the grey image the camera gave, not on a verifier's calibrated one: grey levels stand for
reflectance (0-255 as 0-100%), the aperture is a blur of a fifth of a module, the lighting is the line's.
So the letters tell a trend (a marking laser or a peen stylus wearing, a lens going out of focus) and
compare parts of one station, not a certificate. The module grid comes from zxing's corners and the symbol
size it reports; unused error correction is zxing's own figure."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

LETTERS = "FDCBA"  # index = numeric grade 0..4

# (A, B, C, D) limits per parameter; "higher": the value must be at least the limit for that grade.
_LIMITS: dict[str, tuple[tuple[float, float, float, float], bool]] = {
    "symbol_contrast": ((0.70, 0.55, 0.40, 0.20), True),
    "modulation": ((0.50, 0.40, 0.30, 0.20), True),
    "axial_nonuniformity": ((0.06, 0.08, 0.10, 0.12), False),
    "grid_nonuniformity": ((0.38, 0.50, 0.63, 0.75), False),
    "unused_error_correction": ((0.62, 0.50, 0.37, 0.25), True),
    "fixed_pattern_damage": ((0.0, 0.02, 0.05, 0.10), False),
}


def letter(name: str, value: float) -> str:
    limits, higher = _LIMITS[name]
    for grade, limit in zip((4, 3, 2, 1), limits, strict=True):
        if (value >= limit) if higher else (value <= limit):
            return LETTERS[grade]
    return "F"


@dataclass(frozen=True)
class Grades:
    """Each parameter's value and letter, and the overall grade: the lowest letter (as ISO/IEC 15415 for a
    single image)."""

    values: dict[str, float]
    letters: dict[str, str]
    overall: str


def module_grid(symbology: str, version: str) -> tuple[int, int] | None:
    """Rows and columns of modules: DataMatrix "RxC", QR version "N" (17 + 4N); None for other symbols."""
    try:
        if symbology == "DataMatrix" and "x" in version:
            rows, cols = (int(v) for v in version.split("x"))
            return rows, cols
        if symbology == "QRCode" and version.isdigit():
            side = 17 + 4 * int(version)
            return side, side
    except ValueError:
        return None
    return None


def grade(
    grey: np.ndarray,
    outline: Sequence[tuple[float, float]],
    rows: int,
    cols: int,
    *,
    unused_ec: float | None = None,
    datamatrix: bool = True,
) -> Grades:
    """Grades of the symbol whose outer corners (top-left, top-right, bottom-right, bottom-left, in the
    symbol's own orientation) are `outline` in `grey`, with `rows` x `cols` modules."""
    corners = np.array(outline, np.float32)
    square = np.array([[0, 0], [cols, 0], [cols, rows], [0, rows]], np.float32)
    to_image = cv2.getPerspectiveTransform(square, corners)
    width = float(np.linalg.norm(corners[1] - corners[0]) + np.linalg.norm(corners[2] - corners[3])) / 2
    height = float(np.linalg.norm(corners[3] - corners[0]) + np.linalg.norm(corners[2] - corners[1])) / 2
    x_avg, y_avg = width / cols, height / rows
    module = (x_avg + y_avg) / 2

    # The aperture: a blur of a fifth of a module, then each module's centre.
    smooth = cv2.GaussianBlur(grey.astype(np.float32), (0, 0), max(0.5, module / 5))
    cc, rr = np.meshgrid(np.arange(cols) + 0.5, np.arange(rows) + 0.5)
    centres = cv2.perspectiveTransform(np.stack([cc, rr], -1).reshape(-1, 1, 2).astype(np.float32), to_image)
    centres = centres.reshape(rows, cols, 2)
    samples = cv2.remap(smooth, centres[..., 0], centres[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    r_max, r_min = float(samples.max()), float(samples.min())
    contrast = (r_max - r_min) / 255.0
    threshold = (r_max + r_min) / 2
    dark = samples < threshold
    spread = max(r_max - r_min, 1e-6)
    modulation = 2 * np.abs(samples - threshold) / spread

    values = {
        "symbol_contrast": contrast,
        # The module at the 5th percentile: a few weak modules are what error correction is for.
        "modulation": float(np.percentile(modulation, 5)),
        "axial_nonuniformity": float(abs(x_avg - y_avg) / module),
        "grid_nonuniformity": _grid_nonuniformity(smooth, centres, dark, module, threshold),
    }
    if unused_ec is not None:
        values["unused_error_correction"] = float(unused_ec)
    if datamatrix:
        values["fixed_pattern_damage"] = _finder_damage(dark)
    letters = {name: letter(name, value) for name, value in values.items()}
    overall = LETTERS[min(LETTERS.index(g) for g in letters.values())]
    return Grades({k: round(v, 4) for k, v in values.items()}, letters, overall)


def _grid_nonuniformity(
    smooth: np.ndarray, centres: np.ndarray, dark: np.ndarray, module: float, threshold: float
) -> float:
    """How far isolated dark modules' ink sits from the ideal grid point, in modules (95th percentile):
    a module with light 4-neighbours shows where the marking really put it."""
    padded = np.pad(dark, 1, constant_values=False)
    isolated = dark & ~padded[:-2, 1:-1] & ~padded[2:, 1:-1] & ~padded[1:-1, :-2] & ~padded[1:-1, 2:]
    half = max(1, round(module / 2))
    side = 2 * half + 1
    # Every isolated module's window at once (a loop of small numpy calls per module was 4 ms a code): the same
    # arithmetic, window by window, as the loop it replaces.
    points = centres[isolated].astype(np.float64)  # (n, 2) x, y
    x0 = np.round(points[:, 0]).astype(np.int64) - half
    y0 = np.round(points[:, 1]).astype(np.int64) - half
    inside = (x0 >= 0) & (y0 >= 0) & (y0 + side <= smooth.shape[0]) & (x0 + side <= smooth.shape[1])
    points, x0, y0 = points[inside], x0[inside], y0[inside]
    steps = np.arange(side)
    yy = (y0[:, None] + steps)[:, :, None]  # (n, side, 1)
    xx = (x0[:, None] + steps)[:, None, :]  # (n, 1, side)
    ink = np.clip(threshold - smooth[yy, xx], 0, None)
    total = ink.sum(axis=(1, 2)).astype(np.float64)
    inked = total > 0
    ink, total, points, xx, yy = ink[inked], total[inked], points[inked], xx[inked], yy[inked]
    dx = (ink * xx).sum(axis=(1, 2)) / total - points[:, 0]
    dy = (ink * yy).sum(axis=(1, 2)) / total - points[:, 1]
    offsets = np.hypot(dx, dy) / module
    return float(np.percentile(offsets, 95)) if len(offsets) else 0.0


def _finder_damage(dark: np.ndarray) -> float:
    """Share of the DataMatrix's fixed pattern that is wrong: the two solid edges of the L finder (the
    adjacent pair darkest) and the alternating clock track on the other two."""
    edges = {"top": dark[0, :], "bottom": dark[-1, :], "left": dark[:, 0], "right": dark[:, -1]}
    pairs = [("left", "bottom", "top", "right"), ("bottom", "right", "left", "top")]
    pairs += [("right", "top", "bottom", "left"), ("top", "left", "right", "bottom")]
    best = 1.0
    for solid_a, solid_b, clock_a, clock_b in pairs:
        wrong = int((~edges[solid_a]).sum() + (~edges[solid_b]).sum())
        total = len(edges[solid_a]) + len(edges[solid_b])
        for clock in (edges[clock_a], edges[clock_b]):
            alternating = np.arange(len(clock)) % 2 == 0
            wrong += int(min((clock != alternating).sum(), (clock == alternating).sum()))
            total += len(clock)
        best = min(best, wrong / total)
    return best
