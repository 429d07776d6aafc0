"""Synthetic identity labels with their truth: a serial as text, DataMatrix and QR, on paper or metal.

What a line's camera sees of a part's marking, made hard on purpose: rotation, perspective, blur, noise,
glare, low contrast, exposure changes, and dot-peened DataMatrix (separate round dots, one per module,
shaded as craters). Every image is drawn from its own seed (`seed`, `index`), so one image of a set can be
made again alone, and its truth (the JSON beside it) says what a reader must find."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
import zxingcpp

from lineguard.ocr.checksums import gs1_check_digit
from lineguard.ocr.gs1 import element_string

Surface = Literal["paper", "metal"]

CANVAS = (640, 400)  # width, height: the code region a recipe's code_roi would cut out
_FONT = cv2.FONT_HERSHEY_DUPLEX


@dataclass(frozen=True)
class LabelSettings:
    """How hard the set is. Each image draws its own values uniformly up to these."""

    surface: Surface = "paper"
    rotation_deg: float = 25.0  # |angle| up to this
    perspective: float = 0.05  # corner shift up to this share of the canvas
    blur_sigma: float = 1.2  # gaussian blur sigma up to this (px)
    noise_sigma: float = 8.0  # sensor noise sigma up to this (grey levels)
    glare: float = 0.4  # share of images with a specular highlight
    contrast_min: float = 0.25  # mark vs background, 1 = black on white; drawn in [contrast_min, 1]
    exposure: float = 0.3  # gain drawn in [1 - exposure, 1 + exposure]
    dot_peen: float | None = None  # share of DataMatrix codes dot-peened; default: metal 0.7, paper 0
    gs1: float = 0.3  # share of DataMatrix codes holding a GS1 element string instead of the bare serial
    module_px: tuple[float, float] = (4.0, 7.0)  # DataMatrix module size drawn in this range

    def dot_peen_share(self) -> float:
        if self.dot_peen is not None:
            return self.dot_peen
        return 0.7 if self.surface == "metal" else 0.0


@dataclass
class TruthCode:
    symbology: str  # zxing's name
    text: str  # what zxing returns as text (the HRI form for GS1)
    box: list[float]  # x1, y1, x2, y2 in the image
    gs1: dict[str, str] = field(default_factory=dict)  # AI -> value
    dot_peen: bool = False


@dataclass
class Truth:
    serial: str
    surface: Surface
    codes: list[TruthCode]
    text: str  # the printed line
    text_box: list[float]
    seed: int
    index: int
    drawn: dict[str, float]  # the values this image drew (angle, blur, contrast, ...)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> Truth:
        data = json.loads(text)
        data["codes"] = [TruthCode(**c) for c in data["codes"]]
        return cls(**data)


def make_serial(rng: np.random.Generator) -> str:
    """`LG-NNNNNNN-C`: seven digits and their GS1 mod 10 check digit (the `digits-mod10` checksum)."""
    digits = "".join(str(d) for d in rng.integers(0, 10, 7))
    return f"LG-{digits}-{gs1_check_digit(digits)}"


def _gs1_elements(rng: np.random.Generator, serial: str) -> dict[str, str]:
    body = "0" + "".join(str(d) for d in rng.integers(0, 10, 12))
    batch = "B" + "".join(str(d) for d in rng.integers(0, 10, 5))
    year = int(rng.integers(24, 27))
    made = f"{year:02d}{int(rng.integers(1, 13)):02d}{int(rng.integers(1, 29)):02d}"
    expiry = f"{year + 3:02d}{int(rng.integers(1, 13)):02d}{int(rng.integers(1, 29)):02d}"
    return {"01": body + str(gs1_check_digit(body)), "11": made, "17": expiry, "10": batch, "21": serial}


def _modules(content: str, fmt: zxingcpp.BarcodeFormat, gs1: bool = False) -> np.ndarray:
    """The symbol's dark modules as a bool matrix (no quiet zone)."""
    kwargs = {"gs1": True} if gs1 else {}
    image = np.asarray(zxingcpp.create_barcode(content, fmt, **kwargs).to_image(scale=1, add_quiet_zones=False))
    return image < 128


def _surface(rng: np.random.Generator, surface: Surface, w: int, h: int) -> np.ndarray:
    """The background's reflectance, float 0..255."""
    if surface == "paper":
        base = rng.uniform(205, 245)
        tilt = np.linspace(-1, 1, w)[None, :] * rng.uniform(-12, 12)
        return np.full((h, w), base, np.float32) + tilt.astype(np.float32)
    # Brushed metal: streaks along one direction, a broad light falloff.
    base = rng.uniform(110, 175)
    streaks = rng.normal(0, 18, (h, w)).astype(np.float32)
    streaks = np.asarray(cv2.GaussianBlur(streaks, (0, 0), sigmaX=25, sigmaY=0.6), np.float32)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    cx, cy = rng.uniform(0, w), rng.uniform(0, h)
    falloff = 30 * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * (0.6 * w) ** 2))
    return base + streaks * 1.5 + falloff - 15


def _draw_modules(
    mark: np.ndarray,
    highlight: np.ndarray,
    modules: np.ndarray,
    origin: tuple[float, float],
    module_px: float,
    rng: np.random.Generator,
    peened: bool,
) -> None:
    """Add the symbol's marking depth (0..1) into `mark` and, for peened dots, a crater's lit rim into
    `highlight`."""
    x0, y0 = origin
    shift = 4  # cv2 fixed point: 1/16 px
    k = 1 << shift
    if not peened:
        for r, c in zip(*np.nonzero(modules), strict=True):
            p1 = (int((x0 + c * module_px) * k), int((y0 + r * module_px) * k))
            p2 = (int((x0 + (c + 1) * module_px) * k) - 1, int((y0 + (r + 1) * module_px) * k) - 1)
            cv2.rectangle(mark, p1, p2, 1.0, -1, cv2.LINE_AA, shift)
        return
    radius = module_px * rng.uniform(0.32, 0.45)
    jitter = module_px * 0.08
    for r, c in zip(*np.nonzero(modules), strict=True):
        cx = x0 + (c + 0.5) * module_px + rng.normal(0, jitter)
        cy = y0 + (r + 0.5) * module_px + rng.normal(0, jitter)
        rad = max(1.0, radius * rng.uniform(0.85, 1.1))
        cv2.circle(mark, (int(cx * k), int(cy * k)), int(rad * k), 1.0, -1, cv2.LINE_AA, shift)
        # The rim facing the light shines: a thin crescent offset towards the light.
        hx, hy = cx - rad * 0.35, cy - rad * 0.35
        cv2.circle(highlight, (int(hx * k), int(hy * k)), int(rad * 0.45 * k), 1.0, -1, cv2.LINE_AA, shift)


def _homography(rng: np.random.Generator, settings: LabelSettings, angle: float, w: int, h: int) -> np.ndarray:
    turn = np.vstack([cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0), [0, 0, 1]])
    corners = np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float32)
    shift = rng.uniform(-settings.perspective, settings.perspective, (4, 2)) * [w, h]
    tilt = cv2.getPerspectiveTransform(corners, (corners + shift).astype(np.float32))
    return np.asarray(tilt @ turn)


def _warp_box(homography: np.ndarray, x: float, y: float, bw: float, bh: float) -> list[float]:
    """x1, y1, x2, y2 around the rectangle (x, y, bw, bh) once warped."""
    pts = np.array([[[x, y]], [[x + bw, y]], [[x + bw, y + bh]], [[x, y + bh]]], np.float32)
    out = cv2.perspectiveTransform(pts, homography)[:, 0]
    return [round(float(v), 1) for v in (*out.min(0), *out.max(0))]


def render(settings: LabelSettings, seed: int, index: int) -> tuple[np.ndarray, Truth]:
    """One label image (grey, uint8, CANVAS) and its truth."""
    rng = np.random.default_rng([seed, index])
    w, h = CANVAS
    serial = make_serial(rng)
    surface = settings.surface
    background = _surface(rng, surface, w, h)
    mark = np.zeros((h, w), np.float32)
    highlight = np.zeros((h, w), np.float32)

    # The DataMatrix at the left, the QR at the right, the text line below both.
    gs1 = bool(rng.random() < settings.gs1)
    elements = _gs1_elements(rng, serial) if gs1 else {}
    dm_text = element_string(elements) if gs1 else serial
    dm = _modules(dm_text, zxingcpp.BarcodeFormat.DataMatrix, gs1)
    peened = bool(rng.random() < settings.dot_peen_share())
    module_px = float(rng.uniform(*settings.module_px))
    module_px = min(module_px, 200 / dm.shape[0], 250 / dm.shape[1])  # rectangular symbols are wide
    dm_h, dm_w = dm.shape[0] * module_px, dm.shape[1] * module_px
    dm_origin = (150 - dm_w / 2, 170 - dm_h / 2)
    _draw_modules(mark, highlight, dm, dm_origin, module_px, rng, peened)

    qr = _modules(serial, zxingcpp.BarcodeFormat.QRCode)
    qr_px = min(float(rng.uniform(3.5, 6.0)), 190 / qr.shape[0])
    qr_side = qr.shape[0] * qr_px
    qr_origin = (470 - qr_side / 2, 170 - qr_side / 2)
    _draw_modules(mark, highlight, qr, qr_origin, qr_px, rng, False)

    scale = 1.0
    (tw, th), _ = cv2.getTextSize(serial, _FONT, scale, 2)
    tx, ty = (w - tw) // 2, 345
    ink = np.zeros((h, w), np.uint8)  # putText draws on 8-bit images only
    cv2.putText(ink, serial, (tx, ty), _FONT, scale, 255, 2, cv2.LINE_AA)
    np.maximum(mark, ink.astype(np.float32) / 255, out=mark)

    contrast = float(rng.uniform(settings.contrast_min, 1.0))
    if surface == "paper":
        image = background * (1 - contrast * 0.92 * mark)
    else:
        # Laser or peen marks on metal: darker than the brushed surface by `contrast`, peen rims brighter.
        image = background - contrast * background * 0.85 * mark + contrast * 70 * highlight * (1 - mark * 0.5)

    drawn = {"contrast": contrast, "module_px": module_px}
    if rng.random() < settings.glare:
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        gx, gy = rng.uniform(0.1 * w, 0.9 * w), rng.uniform(0.15 * h, 0.85 * h)
        sx, sy = rng.uniform(25, 90), rng.uniform(15, 60)
        amplitude = float(rng.uniform(40, 110))
        image = image + amplitude * np.exp(-((xx - gx) ** 2 / (2 * sx**2) + (yy - gy) ** 2 / (2 * sy**2)))
        drawn["glare"] = amplitude

    # Rotation about the centre, then a perspective tilt: one homography, applied to the truth boxes too.
    # Rotation about the centre, then a perspective tilt: one homography, applied to the truth boxes too.
    # Redrawn while it would push a code off the image: a code the camera does not see is no test of a reader.
    rects = [(*dm_origin, dm_w, dm_h), (*qr_origin, qr_side, qr_side)]
    for _ in range(20):
        angle = float(rng.uniform(-settings.rotation_deg, settings.rotation_deg))
        homography = _homography(rng, settings, angle, w, h)
        boxes = [_warp_box(homography, *rect) for rect in rects]
        if all(x1 >= 8 and y1 >= 8 and x2 <= w - 8 and y2 <= h - 8 for x1, y1, x2, y2 in boxes):
            break
    else:
        angle, homography = 0.0, np.eye(3)
        boxes = [_warp_box(homography, *rect) for rect in rects]
    fill = float(np.median(background))
    image = np.asarray(cv2.warpPerspective(image.astype(np.float32), homography, (w, h), borderValue=fill))

    sigma = float(rng.uniform(0, settings.blur_sigma))
    if sigma > 0.3:
        image = cv2.GaussianBlur(image, (0, 0), sigma)
    gain = float(rng.uniform(1 - settings.exposure, 1 + settings.exposure))
    noise = float(rng.uniform(0, settings.noise_sigma))
    image = image * gain + rng.normal(0, noise, image.shape).astype(np.float32)
    pixels = np.clip(image, 0, 255).astype(np.uint8)
    drawn.update(angle=angle, blur_sigma=sigma, gain=gain, noise_sigma=noise)

    codes = [
        TruthCode("DataMatrix", dm_text, boxes[0], elements, peened),
        TruthCode("QRCode", serial, boxes[1]),
    ]
    truth = Truth(serial, surface, codes, serial, _warp_box(homography, tx, ty - th, tw, th + 4), seed, index, drawn)
    return pixels, truth


def write_set(out: Path, count: int, seed: int, settings: LabelSettings) -> list[Path]:
    """`count` labels as OUT/label-NNNNN.png with label-NNNNN.json (the truth) beside each, and
    OUT/settings.json: what the set was made with, so a figure measured on it can name its settings."""
    out.mkdir(parents=True, exist_ok=True)
    meta = {"count": count, "seed": seed, "canvas": CANVAS, "settings": asdict(settings)}
    (out / "settings.json").write_text(json.dumps(meta, indent=1))
    written = []
    for index in range(count):
        pixels, truth = render(settings, seed, index)
        path = out / f"label-{index:05d}.png"
        cv2.imwrite(str(path), pixels)
        path.with_suffix(".json").write_text(truth.to_json())
        written.append(path)
    return written
