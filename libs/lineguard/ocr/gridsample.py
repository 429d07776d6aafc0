"""A DataMatrix grid sampler of our own: a step of the reading ladder for marks zxing's detector loses.

A dot-peened mark at low contrast, under glare, with 4-5 px modules, or a long thin rectangular symbol
whose scalloped finder edge zxing's detector cannot follow: no preparation of the image makes zxing find
it (docs/ocr.md, the study of the misses). Here the symbol is found and sampled by us and zxing only
decodes: it gets a clean synthetic matrix image, one black or white square per module, and does the
Reed-Solomon correction, which is what keeps a wrong grid from ever returning a wrong value.

1. The mark map: how much darker each pixel is than its local background (a grey closing wider than a
   module, minus the image), so glare and light falloff drop out and each dot is a bump.
2. Candidates: at half size and blurred over about a module, the map is cut above the bare surface's
   noise (its median and spread), closed so a symbol's dots join into one blob; each blob's minimum-area
   rectangle, shrunk onto the dots inside it, is a rough outline.
3. The module counts along the outline's sides, from the frequency of the edges' comb; for each corner
   as the symbol's top-left and each DataMatrix size that fits the outline's pitch (those the counts
   agree with first): the fixed pattern that size must show (in every data region the solid L on the
   left and bottom, the alternating clock track on the top and right) is compared with the map sampled
   at those modules, and the four corners (a homography: rotation and slight perspective) are moved to
   make it fit best, coarsely for the best few, finely for the best two.
4. Every module centre sampled, cut at a few thresholds in turn (Otsu, a share of the local range,
   between the fixed pattern's dark and light modules), the fixed pattern drawn as the size says it is,
   and the clean matrix given to zxing; the first that decodes is the read.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import cache

import cv2
import numpy as np
import zxingcpp

# DataMatrix sizes (rows, cols) -> (region rows, region cols, data rows, data cols per region): ISO/IEC
# 16022 square and rectangular symbols and the ISO/IEC 21471 (DMRE) rectangles zxing writes and reads.
SIZES: dict[tuple[int, int], tuple[int, int, int, int]] = {
    **{(n, n): (1, 1, n - 2, n - 2) for n in (10, 12, 14, 16, 18, 20, 22, 24, 26)},
    **{(n, n): (2, 2, n // 2 - 2, n // 2 - 2) for n in (32, 36, 40, 44, 48, 52)},
    **{(n, n): (4, 4, n // 4 - 2, n // 4 - 2) for n in (64, 72, 80, 88, 96, 104)},
    **{(n, n): (6, 6, n // 6 - 2, n // 6 - 2) for n in (120, 132, 144)},
    **{
        (r, c): (1, nc, r - 2, c // nc - 2)
        for r, c, nc in (
            (8, 18, 1), (8, 32, 2), (12, 26, 1), (12, 36, 2), (16, 36, 2), (16, 48, 2),
            (8, 48, 2), (8, 64, 4), (8, 80, 4), (8, 96, 4), (8, 120, 6), (8, 144, 6), (12, 64, 4),
            (12, 88, 4), (16, 64, 4), (20, 36, 2), (20, 44, 2), (20, 64, 4), (22, 48, 2), (24, 48, 2),
            (24, 64, 4), (26, 40, 2), (26, 48, 2), (26, 64, 4),
        )
    },
}  # fmt: skip

MODULE_PX = (2.5, 12.0)  # module pitch the sampler looks for, in pixels of the region
_CANDIDATES = 4  # blobs considered: the largest; sampled most DataMatrix-like first
_COARSE = 4  # best (orientation, size) fits per blob refined coarsely
_FITS = 2  # of them, the best refined finely and decoded
# The fixed pattern's fit (dark minus light modules over their spread) below which a blob is not taken
# for a DataMatrix: read symbols fit at 2.5-5 after the coarse refinement, a QR code or a text line at 0.4-1.8.
_LEAST_FIT = 2.0


@cache
def fixed_pattern(rows: int, cols: int) -> tuple[np.ndarray, np.ndarray]:
    """(known, dark) bool matrices of a symbol's finder and clock modules, row 0 at the top."""
    regions_r, regions_c, data_r, data_c = SIZES[(rows, cols)]
    known = np.zeros((rows, cols), bool)
    dark = np.zeros((rows, cols), bool)
    for i in range(regions_r):
        for j in range(regions_c):
            r0, c0 = i * (data_r + 2), j * (data_c + 2)
            r1, c1 = r0 + data_r + 1, c0 + data_c + 1
            known[r0 : r1 + 1, [c0, c1]] = True
            known[[r0, r1], c0 : c1 + 1] = True
            dark[r0 : r1 + 1, c0] = True  # the L: left column and bottom row solid
            dark[r1, c0 : c1 + 1] = True
            dark[r0, c0 : c1 + 1 : 2] = True  # the clock track: top row from the left, right column
            dark[r0 + 1 : r1 + 1 : 2, c1] = True  # from the bottom
    return known, dark


@dataclass(frozen=True)
class Sampled:
    """A symbol read through the sampler: zxing's barcode of the synthetic image and the symbol's corners
    in the region (top-left, top-right, bottom-right, bottom-left as zxing names them)."""

    barcode: zxingcpp.Barcode
    corners: tuple[tuple[float, float], ...]


def mark_map(grey: np.ndarray, window: int = 15) -> np.ndarray:
    """Darkness above the local background (float32): a closing `window` px wide (wider than a module,
    so it fills the dots) minus the image; glare and falloff, being wider still, cancel out."""
    kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (window, window))
    background = cv2.morphologyEx(grey, cv2.MORPH_CLOSE, kernel)
    background = cv2.blur(background, (window, window))
    return np.asarray(cv2.subtract(background, grey), np.float32)


def candidates(grey: np.ndarray, mark: np.ndarray, limit: int = _CANDIDATES) -> list[np.ndarray]:
    """Rough outlines (4 x 2 corners, clockwise from the image's view) of blobs of joined marks that could
    be a symbol, largest first; `mark` is the region's mark map, for the outline's last fit."""
    # Found at half size (the downscale also averages the sensor noise, which would otherwise raise the
    # closing's background everywhere), the map blurred over about a module: a faint dot-peened symbol
    # is a patch of raised mean darkness well above the noise, where its single dots are not.
    half = cv2.resize(grey, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)
    smooth = cv2.GaussianBlur(mark_map(half, 9), (0, 0), 2.0)
    raised = ((smooth > _surface_level(smooth)) * 255).astype(np.uint8)
    joined = cv2.morphologyEx(raised, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (7, 7)))
    blobs = cv2.morphologyEx(joined, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3)))
    contours, _ = cv2.findContours(blobs, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    smallest = 4 * MODULE_PX[0]  # 8 modules at half size
    outlines = []
    for contour in sorted(contours, key=cv2.contourArea, reverse=True):
        (cx, cy), (w, h), angle = cv2.minAreaRect(contour)
        if min(w, h) < smallest or cv2.contourArea(contour) < 0.5 * w * h:
            continue
        corners = _tightened(mark, contour * 2, (2 * cx, 2 * cy), angle)
        if corners is None:
            continue
        order = np.argsort(np.arctan2(corners[:, 1] - 2 * cy, corners[:, 0] - 2 * cx))  # clockwise, y down
        outlines.append(corners[order].astype(np.float64))
        if len(outlines) == limit:
            break
    return outlines


def _surface_level(smooth: np.ndarray, tile: int = 160) -> np.ndarray:
    """Where a mark begins, per pixel: most of the region is bare surface, whose median and spread (in
    tiles of `tile` px, larger than a symbol, blended between tiles) say what noise and streaks look like,
    and a mark stands 2.5 spreads above them. Per tile, because a frame holds surfaces of different
    texture (a label on a smooth part); Otsu would split the darkest printed code from everything else."""
    h, w = smooth.shape
    rows, cols = max(1, round(h / tile)), max(1, round(w / tile))
    level = np.empty((rows, cols), np.float32)
    for i in range(rows):
        for j in range(cols):
            block = smooth[i * h // rows : (i + 1) * h // rows : 2, j * w // cols : (j + 1) * w // cols : 2]
            median = float(np.median(block))
            spread = 1.4826 * float(np.median(np.abs(block - median))) + 0.1
            level[i, j] = median + 2.5 * spread
    if level.size == 1:
        return level
    return np.asarray(cv2.resize(level, (w, h), interpolation=cv2.INTER_LINEAR))


def _tightened(mark: np.ndarray, contour: np.ndarray, centre: tuple[float, float], angle: float) -> np.ndarray | None:
    """The blob's rectangle shrunk onto its marks: the blurred map's blob is a few pixels wider than the
    symbol. The dots inside it (the mark map blurred a little, above Otsu's level there), in the
    rectangle's axes, from their 1st to their 99th percentile."""
    x, y, w, h = cv2.boundingRect(contour)
    x, y = max(0, x), max(0, y)
    crop = cv2.GaussianBlur(mark[y : y + h, x : x + w], (0, 0), 1.5)
    mask = np.zeros(crop.shape, np.uint8)
    cv2.drawContours(mask, [contour], -1, 255, -1, offset=(-x, -y))
    inside = crop[mask > 0]
    if inside.size < 20:
        return None
    top = max(float(inside.max()), 1.0)
    cut, _ = cv2.threshold((inside * (255.0 / top)).astype(np.uint8), 0, 255, cv2.THRESH_BINARY | cv2.THRESH_OTSU)
    ys, xs = np.nonzero((mask > 0) & (crop > cut * top / 255.0))
    if len(xs) < 20:
        return None
    theta = np.deg2rad(angle)
    ux, uy = np.cos(theta), np.sin(theta)
    dx, dy = xs + x - centre[0], ys + y - centre[1]
    u0, u1 = np.percentile(dx * ux + dy * uy, [1, 99])
    v0, v1 = np.percentile(-dx * uy + dy * ux, [1, 99])
    box = [(u0, v0), (u1, v0), (u1, v1), (u0, v1)]
    return np.array([(centre[0] + a * ux - b * uy, centre[1] + a * uy + b * ux) for a, b in box])


def _homographies(corners: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """(n, 3, 3) homographies taking grid coordinates (column, row; module edges at integers) to the
    image, one per set of four corners in `corners` (n, 4, 2): the unit square to each quadrilateral in
    closed form (Heckbert), batched, as the refinement tries many at once."""
    x0, x1, x2, x3 = (corners[:, k, 0] for k in range(4))
    y0, y1, y2, y3 = (corners[:, k, 1] for k in range(4))
    dx1, dx2, dx3 = x1 - x2, x3 - x2, x0 - x1 + x2 - x3
    dy1, dy2, dy3 = y1 - y2, y3 - y2, y0 - y1 + y2 - y3
    den = dx1 * dy2 - dx2 * dy1
    den = np.where(np.abs(den) < 1e-9, 1e-9, den)  # a degenerate quadrilateral: a useless fit, not a crash
    g = (dx3 * dy2 - dx2 * dy3) / den
    h = (dx1 * dy3 - dx3 * dy1) / den
    out = np.empty((corners.shape[0], 3, 3))
    out[:, 0] = np.stack([(x1 - x0 + g * x1) / cols, (x3 - x0 + h * x3) / rows, x0], axis=1)
    out[:, 1] = np.stack([(y1 - y0 + g * y1) / cols, (y3 - y0 + h * y3) / rows, y0], axis=1)
    out[:, 2] = np.stack([g / cols, h / rows, np.ones_like(g)], axis=1)
    return out


@cache
def _centres(rows: int, cols: int, fixed_only: bool) -> np.ndarray:
    """Grid coordinates of the module centres (row by row), homogeneous (m, 3): all, or the fixed
    pattern's."""
    where = fixed_pattern(rows, cols)[0] if fixed_only else np.ones((rows, cols), bool)
    r, c = np.nonzero(where)
    return np.stack([c + 0.5, r + 0.5, np.ones(len(r))], axis=1)


def _sample(field: np.ndarray, homographies: np.ndarray, points: np.ndarray) -> np.ndarray:
    """The field (bilinear) at the grid `points` (m, 3) under each homography: (n, m)."""
    mapped = homographies @ points.T[None]  # (n, 3, m)
    mapped = mapped.transpose(0, 2, 1)
    xy = (mapped[..., :2] / mapped[..., 2:]).astype(np.float32)
    # One map of (x, y) pairs: OpenCV takes None for the second map, its stub does not.
    return np.asarray(cv2.remap(field, xy, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE))  # type: ignore[call-overload]


def _fit_scores(field: np.ndarray, corners: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """How well the fixed pattern of `size` shows under each set of corners (n, 4, 2): the gap between the
    dark and the light fixed modules' mean darkness in units of their spread."""
    known, dark = fixed_pattern(*size)
    values = _sample(field, _homographies(corners, *size), _centres(*size, True))
    is_dark = dark[known]
    d, light = values[:, is_dark], values[:, ~is_dark]
    md, ml = d.mean(axis=1), light.mean(axis=1)
    spread = np.sqrt((((d - md[:, None]) ** 2).mean(axis=1) + ((light - ml[:, None]) ** 2).mean(axis=1)) / 2)
    return np.asarray((md - ml) / (spread + 1.0))


# One corner moved one step in one of 8 directions: (32, 4, 2) offsets, tried together.
_MOVES = np.array(
    [np.eye(4)[k][:, None] * (dx, dy) for k in range(4) for dx in (-1, 0, 1) for dy in (-1, 0, 1) if dx or dy]
)


def _refine(
    field: np.ndarray, corners: np.ndarray, size: tuple[int, int], steps: tuple[float, ...] = (0.5, 0.25, 0.125)
) -> tuple[np.ndarray, float]:
    """Move one corner at a time by the step (8 directions; the best of the 32 moves) while the fixed
    pattern fits better, in steps of half a module down to an eighth: a homography through rotation and
    slight perspective."""
    pitch = float(np.linalg.norm(corners[1] - corners[0])) / size[1]
    best = float(_fit_scores(field, corners[None], size)[0])
    for step in steps:
        for _ in range(6):
            trials = corners[None] + _MOVES * (step * pitch)
            scores = _fit_scores(field, trials, size)
            i = int(np.argmax(scores))
            if scores[i] <= best:
                break
            best, corners = float(scores[i]), trials[i]
    return corners, best


def module_counts(field: np.ndarray, corners: np.ndarray) -> tuple[float, float]:
    """How many modules lie along the top and along the left side of the outline: the region warped
    upright, the mean edge strength of each column (and row) is a comb with one tooth per module edge
    (dot-peened or printed alike), whose strongest frequency is the count."""
    top = float(np.linalg.norm(corners[1] - corners[0]))
    left = float(np.linalg.norm(corners[3] - corners[0]))
    w, h = max(16, round(top)), max(16, round(left))
    upright = np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float32)
    warp = cv2.getPerspectiveTransform(corners.astype(np.float32), upright)
    flat = cv2.warpPerspective(field, warp, (w, h), flags=cv2.INTER_LINEAR)
    counts = []
    for axis, length in ((1, w), (0, h)):
        edges = np.abs(np.diff(flat, axis=axis)).mean(axis=1 - axis)
        power = np.abs(np.fft.rfft(edges - edges.mean()))
        low, high = max(4, int(length / MODULE_PX[1])), min(len(power) - 1, int(length / MODULE_PX[0]) + 1)
        if high <= low:
            counts.append(0.0)
            continue
        k = low + int(np.argmax(power[low : high + 1]))
        # The peak between its neighbours (parabolic), for a fractional count.
        if 0 < k < len(power) - 1:
            a, b, c = power[k - 1], power[k], power[k + 1]
            k = k + 0.5 * (a - c) / (a - 2 * b + c) if a - 2 * b + c else k
        counts.append(float(k))
    return counts[0], counts[1]


def _agrees(count: float, modules: int) -> bool:
    """A module count measured on the outline fits a size: the outline runs from the first dot's edge to
    the last one's, so it spans up to about two modules fewer than the symbol."""
    return modules - 2.5 <= count <= modules + 0.5


def _sizes_for(corners: np.ndarray) -> list[tuple[int, int]]:
    """The sizes whose module pitch along both sides of this outline (top-left first) is plausible and
    nearly the same (square modules, give or take perspective)."""
    top = float(np.linalg.norm(corners[1] - corners[0]))
    left = float(np.linalg.norm(corners[3] - corners[0]))
    out = []
    for rows, cols in SIZES:
        px, py = top / cols, left / rows
        if MODULE_PX[0] <= px <= MODULE_PX[1] and abs(px - py) <= 0.25 * max(px, py):
            out.append((rows, cols))
    return out


def matrix_image(bits: np.ndarray, scale: int = 4, quiet: int = 2) -> np.ndarray:
    """The module matrix (True = dark) as a clean black-on-white image with a quiet zone."""
    image = np.where(bits, 0, 255).astype(np.uint8)
    image = np.pad(image, quiet, constant_values=255)
    return np.kron(image, np.ones((scale, scale), np.uint8))


def _local_thresholds(values: np.ndarray, shares: tuple[float, ...], reach: int = 3) -> list[np.ndarray]:
    """Per module, the level a share of the way from the lightest to the darkest modules within `reach`
    modules (their 10th and 90th percentiles): a mark whose depth changes across the symbol (light
    falloff, a worn stylus, a part under glare that saturates) is cut at its own depth. Below halfway
    suits dots best: their depth varies, the bare surface between them does not."""
    padded = np.pad(values, reach, mode="edge")
    windows = np.lib.stride_tricks.sliding_window_view(padded, (2 * reach + 1, 2 * reach + 1))
    high, low = np.percentile(windows, [90, 10], axis=(2, 3))
    return [low + share * (high - low) for share in shares]


def _decode(
    field: np.ndarray, corners: np.ndarray, size: tuple[int, int], scale: int = 4, quiet: int = 2
) -> Sampled | None:
    """Sample every module under the fitted corners, threshold, draw clean and let zxing decode it; a
    few thresholds in turn (Reed-Solomon tells a wrong one: it does not decode)."""
    rows, cols = size
    homography = _homographies(corners[None], rows, cols)
    values = _sample(field, homography, _centres(rows, cols, False))[0].reshape(size)
    known, dark = fixed_pattern(rows, cols)
    level = (values[known & dark].mean() + values[known & ~dark].mean()) / 2
    scaled = np.clip(values * (255.0 / max(float(values.max()), 1.0)), 0, 255).astype(np.uint8)
    otsu = cv2.threshold(scaled, 0, 255, cv2.THRESH_BINARY | cv2.THRESH_OTSU)[0] * max(float(values.max()), 1.0) / 255
    local = _local_thresholds(values, (0.4, 0.5, 0.3))
    for threshold in (otsu, local[0], level, *local[1:], level * 0.85, level * 1.15):
        # The finder and clock modules drawn as the size says they are: zxing finds the symbol's size and
        # orientation by them, and a wrong module there would cost the read where one in the data costs
        # a little of the error correction.
        bits = np.where(known, dark, values > threshold)
        image = matrix_image(bits, scale, quiet)
        # zxing-cpp 3 takes a tuple of formats but its stub still asks for BarcodeFormats (as in codes.py).
        found = zxingcpp.read_barcodes(
            image,
            formats=(zxingcpp.BarcodeFormat.DataMatrix,),  # type: ignore[arg-type]
            try_rotate=False,
            try_downscale=False,
            is_pure=True,
        )
        if found and found[0].valid:
            pos = found[0].position
            # zxing's corners on the synthetic image, in grid units, back through the fitted homography.
            grid = np.array(
                [
                    (p.x / scale - quiet, p.y / scale - quiet)
                    for p in (pos.top_left, pos.top_right, pos.bottom_right, pos.bottom_left)
                ]
            )
            grid = np.rint(grid * 2) / 2  # zxing puts them on module edges, give or take a pixel
            mapped = np.hstack([grid, np.ones((4, 1))]) @ homography[0].T
            xy = mapped[:, :2] / mapped[:, 2:]
            return Sampled(found[0], tuple((float(x), float(y)) for x, y in xy))
    return None


@dataclass
class _Blob:
    """A candidate symbol: its neighbourhood of the mark map, its outline there, where that lies in the
    region, the blurred fields made for it, and its (orientation, size) fits ranked."""

    crop: np.ndarray
    outline: np.ndarray
    offset: tuple[int, int]
    fields: dict[float, np.ndarray]
    fits: list[tuple[int, float, int, tuple[int, int], np.ndarray]]


def _blob(mark: np.ndarray, outline: np.ndarray, margin: int = 12) -> _Blob:
    """The outline's (orientation, size) fits: sizes the measured module counts agree with first (where
    some size agrees on both sides, those agreeing on neither are not scored), then by how well the fixed
    pattern shows under the rough outline."""
    x, y, w, h = cv2.boundingRect(outline.astype(np.float32))
    x0, y0 = max(0, x - margin), max(0, y - margin)
    blob = _Blob(mark[y0 : y + h + margin, x0 : x + w + margin], outline - (x0, y0), (x0, y0), {}, [])
    along_top, along_left = module_counts(_field(blob.crop, 5.0, blob.fields), blob.outline)
    options = []
    for start in range(4):
        corners = np.roll(blob.outline, -start, axis=0)
        counts = (along_top, along_left) if start % 2 == 0 else (along_left, along_top)
        for size in _sizes_for(corners):
            options.append((_agrees(counts[0], size[1]) + _agrees(counts[1], size[0]), start, size))
    floor = 1 if any(agree == 2 for agree, _, _ in options) else 0
    for agree, start, size in options:
        if agree >= floor:
            corners = np.roll(blob.outline, -start, axis=0)
            field = _field(blob.crop, float(np.linalg.norm(corners[1] - corners[0])) / size[1], blob.fields)
            blob.fits.append((agree, float(_fit_scores(field, corners[None], size)[0]), start, size, field))
    blob.fits.sort(key=lambda f: f[:2], reverse=True)
    return blob


def read_sampled(grey: np.ndarray, deadline: float | None = None, *, first: bool = False) -> list[Sampled]:
    """DataMatrix symbols in the grey region found and sampled by the steps above (at most one per blob),
    the blobs most like a DataMatrix first (a label's QR code and text line are blobs too). With a
    `deadline` (time.perf_counter()), no blob after the first is started past it; with `first`, none after
    the first symbol read (the ladder wants one)."""
    mark = mark_map(grey)
    blobs = [_blob(mark, outline) for outline in candidates(grey, mark)]
    blobs.sort(key=lambda b: b.fits[0][:2] if b.fits else (-1, 0.0), reverse=True)
    out: list[Sampled] = []
    for index, blob in enumerate(blobs):
        # Like any other step, once started the sampler finishes its first (most DataMatrix-like) blob;
        # the deadline stops it before the next ones.
        if index and deadline is not None and time.perf_counter() >= deadline:
            break
        # The rough outline misses by up to a module or so, which the quick score does not forgive: the
        # best few fits are refined coarsely (half-module steps) before they are ranked, the best finely.
        coarse = []
        for _, _, start, size, field in blob.fits[:_COARSE]:
            corners, score = _refine(field, np.roll(blob.outline, -start, axis=0), size, (0.5,))
            coarse.append((score, corners, size, field))
        coarse.sort(key=lambda f: f[0], reverse=True)
        for score, corners, size, field in coarse[:_FITS]:
            if score < _LEAST_FIT:
                break
            corners, _ = _refine(field, corners, size, (0.25, 0.125))
            sampled = _decode(field, corners, size)
            if sampled:
                x0, y0 = blob.offset
                out.append(Sampled(sampled.barcode, tuple((cx + x0, cy + y0) for cx, cy in sampled.corners)))
                if first:
                    return out
                break
    return out


def _field(mark: np.ndarray, pitch: float, cache: dict[float, np.ndarray]) -> np.ndarray:
    """The mark map blurred over a sixth of a module (the sampling aperture: it averages a dot's
    dark crater with its lit rim, not with the neighbours), once per quarter-pixel sigma."""
    sigma = round(max(0.5, 0.15 * pitch) * 4) / 4
    if sigma not in cache:
        cache[sigma] = np.asarray(cv2.GaussianBlur(mark, (0, 0), sigma), np.float32)
    return cache[sigma]
