"""Finding the printed line inside the recipe's text box: its angle, its tight box, and two images of it
sized for the recogniser (PP-OCR's 48 px high input).

The recogniser reads a line well when the line is level and fills most of its input's height. The text box
a recipe gives is the line's upright bounding box with a margin, so a line turned by 20 degrees fills a
third of it, and brushed-metal streaks, noise and glare fill the rest. Measured on the generated metal set
(docs/ocr.md), reading that box levelled by the minimum-area rectangle of its Otsu-cut ink (which the
streaks and noise spread over the whole box) gave 85.7% exact serials; the same recogniser on the line
found as here gave 100%.

1. **Ink map**: a grey closing wider than a stroke minus the image (the black-hat): how much darker each
   pixel is than its surroundings. Light falloff, glare and exposure are wider than the kernel and cancel.
2. **Angle**: the turn at which the ink's row sums are most peaked (projection-profile energy), 2 degrees
   apart within +-40, then 0.25 degrees about the best: a line of text is the one thing in the box whose
   rows are all ink or all not, and noise has no preferred direction.
3. **Band and extent**: the rows about the peak row sum above 30% of its height over the median row; the
   columns of that band, smoothed over half a character, above twice the background's ink (the rows
   outside the band), joined across gaps narrower than 1.5 line heights (a thin "-" between digits), the
   group with the most ink taken (a corner of a neighbouring code in the box is a separate group).
4. **Images**: the band cut with margins so the text fills `FILL` of the height, turned level, as
   (a) the grey image stretched to the full range and (b) the ink map inverted (dark text on white): the
   flat variant, whose background has no glare, streak or light falloff left; both 48 px high (the
   recogniser's input) and condensed to SQUEEZE of their width."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

FILL = 0.75  # share of the recogniser's input height the text's band fills
HEIGHT = 48  # px: PP-OCR's recogniser input height (rapidocr's rec_image_shape)
# Width over height as the recogniser is given the line, against the image's own: PP-OCR reads a line
# condensed to 0.65 better than as printed (generated harsh metal set: 296 of 300 plain readings right
# against 289), and a line of 12 characters then fits its 320 px minimum width (40 steps, the same cost
# as any shorter input) instead of ~420 px
SQUEEZE = 0.65
_KERNEL = 15  # ink map closing, px: wider than a stroke, narrower than the light's variations
_MIN_HEIGHT = 6  # px: a band lower than this is no line of text


@dataclass(frozen=True)
class LineCrop:
    angle: float  # degrees, as cv2.getRotationMatrix2D takes it (counter-clockwise), that levels the line
    box: tuple[int, int, int, int]  # x1, y1, x2, y2 of the cut in the levelled canvas
    text_height: int  # px, the band's height before resizing
    grey: np.ndarray  # levelled, stretched grey, uint8
    flat: np.ndarray  # levelled ink map inverted, uint8 (dark text on white)


def ink_map(grey: np.ndarray, kernel: int = _KERNEL) -> np.ndarray:
    """float32: how much darker each pixel is than its surroundings (black-hat), smoothed over a pixel, the
    box's median taken off. The image is padded by replication first: a closing at the border would see
    the outside as dark and light the border rows up as ink."""
    padded = cv2.copyMakeBorder(grey, kernel, kernel, kernel, kernel, cv2.BORDER_REPLICATE)
    element = cv2.getStructuringElement(cv2.MORPH_RECT, (kernel, kernel))
    hat = cv2.morphologyEx(padded, cv2.MORPH_BLACKHAT, element)[kernel:-kernel, kernel:-kernel]
    ink = cv2.GaussianBlur(hat.astype(np.float32), (0, 0), 1.0)
    return np.maximum(ink - float(np.median(ink)), 0.0)


def skew_angle(ink: np.ndarray, limit: float = 40.0) -> float:
    """The turn (degrees) after which the ink's row sums are most peaked."""
    small = cv2.resize(ink, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)
    h, w = small.shape
    centre = (w / 2, h / 2)

    def energy(angle: float) -> float:
        turned = cv2.warpAffine(small, cv2.getRotationMatrix2D(centre, float(angle), 1.0), (w, h))
        rows = turned.sum(axis=1)
        return float(rows @ rows)

    coarse = max(np.arange(-limit, limit + 1e-6, 2.0), key=energy)
    return float(max(np.arange(coarse - 1.75, coarse + 1.76, 0.25), key=energy))


def _band(rows: np.ndarray, inside: np.ndarray) -> tuple[int, int]:
    peak = int(np.argmax(rows))
    base = float(np.median(rows[inside])) if inside.any() else 0.0
    cut = base + 0.3 * (float(rows[peak]) - base)
    top = peak
    while top > 0 and rows[top - 1] > cut:
        top -= 1
    bottom = peak
    while bottom < len(rows) - 1 and rows[bottom + 1] > cut:
        bottom += 1
    return top, bottom


def _extent(cols: np.ndarray, cut: float, inside: np.ndarray, gap: float) -> tuple[int, int] | None:
    on = np.flatnonzero((cols > cut) & inside)
    if not len(on):
        return None
    breaks = np.flatnonzero(np.diff(on) > gap)
    starts = np.concatenate(([on[0]], on[breaks + 1]))
    ends = np.concatenate((on[breaks], [on[-1]]))
    best = max(range(len(starts)), key=lambda i: float(cols[starts[i] : ends[i] + 1].sum()))
    return int(starts[best]), int(ends[best])


def _sized(image: np.ndarray, height: int, squeeze: float) -> np.ndarray:
    """Condensed at its own height (area averaging, no aliasing of the strokes), then scaled to `height`
    as rapidocr itself scales its input (bilinear)."""
    h, w = image.shape
    narrow = cv2.resize(image, (max(4, round(w * squeeze)), h), interpolation=cv2.INTER_AREA)
    return cv2.resize(narrow, (max(8, round(narrow.shape[1] * height / h)), height), interpolation=cv2.INTER_LINEAR)


def find_line(grey: np.ndarray, fill: float = FILL, height: int = HEIGHT, squeeze: float = SQUEEZE) -> LineCrop | None:
    """The one printed line in `grey` (a text box), levelled and cut tight, `height` px high with its
    width scaled by `squeeze` on top; None when no band of text is found (the caller reads the box as it
    is)."""
    if grey.ndim != 2 or min(grey.shape) < _MIN_HEIGHT:
        return None
    ink = ink_map(grey)
    angle = skew_angle(ink)
    h, w = grey.shape
    # Turned about the centre into a square canvas that holds the whole box at any angle.
    side = int(np.hypot(h, w)) + 2
    turn = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
    turn[0, 2] += side / 2 - w / 2
    turn[1, 2] += side / 2 - h / 2
    level_ink = cv2.warpAffine(ink, turn, (side, side), flags=cv2.INTER_LINEAR, borderValue=0)
    seen: np.ndarray = cv2.warpAffine(np.ones_like(ink), turn, (side, side), flags=cv2.INTER_NEAREST, borderValue=0) > 0
    # Row sums, not means: a canvas corner holds a few pixels of the box, and a dark neighbour there would
    # have the highest mean.
    top, bottom = _band(level_ink.sum(axis=1), np.asarray(seen.any(axis=1)))
    band = bottom - top + 1
    if band < _MIN_HEIGHT:
        return None
    outside = np.ones(side, bool)
    outside[max(0, top - band) : bottom + band + 1] = False
    background = seen[outside]
    per_px = float(level_ink[outside][background].mean()) if background.any() else 0.0
    window = max(3, band // 2)
    cols = np.convolve(level_ink[top : bottom + 1].sum(axis=0), np.ones(window) / window, mode="same")
    extent = _extent(cols, max(2.0 * per_px * band, 0.08 * float(cols.max())), np.asarray(seen.any(axis=0)), 1.5 * band)
    if extent is None or extent[1] - extent[0] < 2 * band:
        return None
    left, right = extent
    margin_y = (band / fill - band) / 2
    margin_x = 0.5 * band
    x1, x2 = int(max(0, left - margin_x)), int(min(side, right + margin_x + 1))
    y1, y2 = int(max(0, top - margin_y)), int(min(side, bottom + margin_y + 1))
    # Only the cut turned, not the canvas: the same pixels (the turn's origin moved to the cut's corner; 16 of
    # 511,494 differ by one grey level, fixed-point rounding), and a replicated border's warp of the whole canvas
    # was 3.4 ms of the 8 the line took.
    cut_turn = turn.copy()
    cut_turn[:, 2] -= (x1, y1)
    level = cv2.warpAffine(grey, cut_turn, (x2 - x1, y2 - y1), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    cut_grey = _sized(level, height, squeeze)
    cut_ink = _sized(level_ink[y1:y2, x1:x2], height, squeeze)
    low, high = np.percentile(cut_grey, (1, 99))
    stretched = np.clip((cut_grey.astype(np.float32) - low) * (255.0 / max(high - low, 8.0)), 0, 255)
    deepest = float(np.percentile(cut_ink, 99.5))
    flat = 255.0 - np.clip(cut_ink * (255.0 / max(deepest, 1e-3)), 0, 255)
    return LineCrop(angle, (x1, y1, x2, y2), band, stretched.astype(np.uint8), flat.astype(np.uint8))
