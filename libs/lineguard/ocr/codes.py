"""Machine-readable codes in an image (zxing-cpp), in full-image pixel coordinates, through a reading ladder.

zxing reads a clean printed code at once. A dot-peened or laser-etched mark on metal often is not read:
separate dots instead of joined modules, low contrast, glare. The ladder then tries further preparations
of the region, cheapest first, and stops as soon as the codes wanted are read or the part's time budget is
spent. Which steps are on it was measured (`lineguard ocr eval --steps all`, docs/ocr.md): each kept
step reads codes the ones before it miss, for the milliseconds it costs."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import cv2
import numpy as np
import zxingcpp

from lineguard.imaging import ROI
from lineguard.ocr.grades import Grades, grade, module_grid
from lineguard.ocr.gridsample import Sampled, read_sampled
from lineguard.ocr.gs1 import GS1Error, parse

# DataMatrix and QR for serials, every 1D symbology for labels; the other 2D
# symbologies (Aztec, PDF417, MaxiCode) are left out: they only cost time here.
READ_FORMATS = (
    zxingcpp.BarcodeFormat.DataMatrix,
    zxingcpp.BarcodeFormat.QRCode,
    zxingcpp.BarcodeFormat.MicroQRCode,
    zxingcpp.BarcodeFormat.RMQRCode,
    zxingcpp.BarcodeFormat.AllLinear,
)

DEFAULT_BUDGET_MS = 40.0


def formats_named(names: Sequence[str]) -> tuple[zxingcpp.BarcodeFormat, ...]:
    """zxing formats from their names ("DataMatrix", "QRCode", "Code128", "EAN13", ...); ValueError names an
    unknown one."""
    out = []
    for name in names:
        try:
            out.append(zxingcpp.barcode_format_from_str(name))
        except ValueError:
            raise ValueError(
                f"unknown code format {name!r} (zxing-cpp names: DataMatrix, QRCode, Code128, ...)"
            ) from None
    return tuple(out)


@dataclass(frozen=True)
class FoundCode:
    symbology: str  # zxing's name: "DataMatrix", "QRCode", "Code128", ...
    text: str  # "" when the bytes are not text (see error)
    outline: tuple[tuple[float, float], ...]  # corners: top-left, top-right, bottom-right, bottom-left
    gs1: dict[str, str] = field(default_factory=dict)  # application identifier -> value, for a GS1 symbol
    error: str = ""  # why the content is unusable though the symbol decoded (binary bytes, broken GS1)
    step: str = ""  # the ladder step that read it
    version: str = ""  # zxing's symbol size: DataMatrix "RxC", QR "N"
    unused_ec: float | None = None  # share of the error correction left unused (zxing), 0..1
    grades: Grades | None = None  # print quality (lineguard.ocr.grades), for DataMatrix and QR

    @property
    def box(self) -> tuple[float, float, float, float]:
        """x1, y1, x2, y2 around the outline."""
        xs = [x for x, _ in self.outline]
        ys = [y for _, y in self.outline]
        return min(xs), min(ys), max(xs), max(ys)


Prepare = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Step:
    """One rung: a preparation of the grey region, the zxing binarizer to read it with, and the scale the
    preparation resized it by (outlines are mapped back). Or a reader of its own (`sample`: the grid
    sampler, DataMatrix only), which finds the symbol itself and lets zxing decode a clean matrix."""

    name: str
    prepare: Prepare | None = None
    scale: float = 1.0
    binarizer: zxingcpp.Binarizer = zxingcpp.Binarizer.LocalAverage
    sample: Callable[[np.ndarray, float | None, bool], list[Sampled]] | None = None


_DISC3 = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))
_DISC5 = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))
_CLAHE = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8))


def _resize(grey: np.ndarray, scale: float) -> np.ndarray:
    if scale == 1.0:
        return grey
    return cv2.resize(grey, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)


def _join_dots(grey: np.ndarray, sigma: float = 1.5, disc: np.ndarray = _DISC3) -> np.ndarray:
    """Peened dots into modules: a min filter (dark marks grow into the gaps between dots and over the lit
    rim inside each crater: the morphological closing of the dark mark), then a blur that smooths the
    scalloped edges the binarizer would cut."""
    return cv2.GaussianBlur(cv2.erode(grey, disc), (0, 0), sigma)


def _scaled(scale: float, then: Prepare) -> Prepare:
    return lambda grey: then(_resize(grey, scale))


# Every step measured; LADDER is the subset kept (docs/ocr.md has the figures).
STEPS: dict[str, Step] = {
    step.name: step
    for step in (
        Step("plain"),
        Step("clahe", _CLAHE.apply),
        Step("invert", cv2.bitwise_not),
        Step("join-dots", _join_dots),
        Step("join-dots-fine", lambda g: _join_dots(g, 1.0)),
        Step("join-dots-wide", lambda g: _join_dots(g, 2.0, _DISC5)),
        Step("clahe-join-dots-wide-up", _scaled(1.25, lambda g: _join_dots(_CLAHE.apply(g), 2.0, _DISC5)), 1.25),
        Step("clahe-join-dots-up", _scaled(1.25, lambda g: _join_dots(_CLAHE.apply(g))), 1.25),
        Step("clahe-join-dots-down", _scaled(0.8, lambda g: _join_dots(_CLAHE.apply(g))), 0.8),
        Step("join-dots-down", _scaled(0.8, lambda g: _join_dots(g, 1.0)), 0.8),
        Step("clahe-join-dots-fine-down", _scaled(0.8, lambda g: _join_dots(_CLAHE.apply(g), 1.0)), 0.8),
        Step("join-dots-wide-up15", _scaled(1.5, lambda g: _join_dots(g, 2.0, _DISC5)), 1.5),
        Step("clahe-join-dots-wide-up15", _scaled(1.5, lambda g: _join_dots(_CLAHE.apply(g), 2.0, _DISC5)), 1.5),
        Step("clahe-join-dots-up15", _scaled(1.5, lambda g: _join_dots(_CLAHE.apply(g), 1.0)), 1.5),
        Step("join-dots-small", _scaled(0.66, lambda g: _join_dots(g, 1.0)), 0.66),
        Step("open5", lambda g: cv2.morphologyEx(cv2.GaussianBlur(g, (0, 0), 1.0), cv2.MORPH_OPEN, _DISC5)),
        Step("up2", lambda g: _resize(g, 2.0), 2.0),
        Step("down2", lambda g: _resize(g, 0.5), 0.5),
        Step("global-histogram", binarizer=zxingcpp.Binarizer.GlobalHistogram),
        Step("fixed-threshold", binarizer=zxingcpp.Binarizer.FixedThreshold),
        Step("grid-sample", sample=lambda grey, deadline, first: read_sampled(grey, deadline, first=first)),
    )
}
LADDER: tuple[str, ...] = (
    "plain",
    "join-dots",
    # Our own grid sampler (lineguard.ocr.gridsample): alone it reads ~90% of the metal sets' DataMatrix
    # and nearly all the steps below miss, for ~9 ms of CPU; placed after the two cheapest steps it reads
    # more within the 40 ms budget than at the end (docs/ocr.md).
    "grid-sample",
    "clahe-join-dots-up",
    "clahe-join-dots-down",
    "clahe-join-dots-wide-up",
    "join-dots-fine",
    "join-dots-down",
    "join-dots-wide",
    "down2",
    "global-histogram",
    "clahe-join-dots-up15",
    # x2 upscale: QR codes that no step before reads (6 of the 300 and 6 of the 400 metal labels).
    "up2",
)
# Taken off with the sampler on the ladder, as they read no DataMatrix or QR code on the generated sets
# that the steps before them miss: join-dots-small, join-dots-wide-up15, clahe-join-dots-fine-down,
# clahe-join-dots-wide-up15 (2-30 ms each).


@dataclass
class Reading:
    """What the ladder found, and what it cost."""

    codes: list[FoundCode]
    steps_tried: list[str]
    ms: float


def _grey(image: np.ndarray) -> np.ndarray:
    return image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)


def _found(
    barcode: zxingcpp.Barcode,
    scale: float,
    dx: int,
    dy: int,
    step: str,
    corners: Sequence[tuple[float, float]] | None = None,
) -> FoundCode:
    """`corners` in the region, where zxing's position is not on the region (the grid sampler's synthetic
    image)."""
    if corners is None:
        pos = barcode.position
        corners = [(p.x, p.y) for p in (pos.top_left, pos.top_right, pos.bottom_right, pos.bottom_left)]
    outline = tuple((float(x / scale + dx), float(y / scale + dy)) for x, y in corners)
    text, gs1, error = barcode.text, {}, ""
    if barcode.content_type == zxingcpp.ContentType.GS1:
        try:
            gs1 = {e.ai: e.value for e in parse(barcode.bytes.decode("ascii"))}
        except (GS1Error, UnicodeDecodeError) as exc:
            error = f"GS1 element string is broken: {exc}"
    elif barcode.content_type in (zxingcpp.ContentType.Binary, zxingcpp.ContentType.Mixed):
        # zxing escapes what is not text (<U+80>); such a text must never pass as a serial.
        raw = barcode.bytes
        text, error = "", f"code bytes are not valid text: {len(raw)} bytes {raw[:16].hex(' ')}"
    extra = barcode.extra if isinstance(barcode.extra, dict) else {}
    uec = extra.get("UEC")
    return FoundCode(
        barcode.format.name,
        text,
        outline,
        gs1,
        error,
        step,
        str(extra.get("Version", "")),
        float(uec) if isinstance(uec, int | float) else None,
    )


def _graded(code: FoundCode, region: np.ndarray, dx: int, dy: int) -> FoundCode:
    """The code with its print-quality grades, measured on the region as the camera gave it (not on a
    ladder step's preparation)."""
    grid = module_grid(code.symbology, code.version)
    if grid is None:
        return code
    outline = [(x - dx, y - dy) for x, y in code.outline]
    grades = grade(region, outline, *grid, unused_ec=code.unused_ec, datamatrix=code.symbology == "DataMatrix")
    return replace(code, grades=grades)


def read_codes(
    image: np.ndarray,
    roi: ROI | None = None,
    *,
    formats: Sequence[zxingcpp.BarcodeFormat] = READ_FORMATS,
    wanted: Sequence[str] = (),
    budget_ms: float = DEFAULT_BUDGET_MS,
    ladder: Sequence[str] = LADDER,
) -> list[FoundCode]:
    """Every code zxing finds in `image` (or in its `roi`), in reading order. See read_ladder."""
    return read_ladder(image, roi, formats=formats, wanted=wanted, budget_ms=budget_ms, ladder=ladder).codes


def read_ladder(
    image: np.ndarray,
    roi: ROI | None = None,
    *,
    formats: Sequence[zxingcpp.BarcodeFormat] = READ_FORMATS,
    wanted: Sequence[str] = (),
    budget_ms: float = DEFAULT_BUDGET_MS,
    ladder: Sequence[str] = LADDER,
    grades: bool = True,
) -> Reading:
    """Read the region with each step of `ladder` in turn until every symbology in `wanted` (zxing names)
    is read, or with `wanted` empty until anything is, or until `budget_ms` is spent (a step is started
    only within the budget; the first always is). Codes of several steps are merged, one per symbology and
    text. With `grades`, each DataMatrix and QR gets its print-quality grades (about a millisecond).

    Raises lineguard.imaging.ImageError when `roi` lies outside the image."""
    started = time.perf_counter()
    region = _grey(roi.crop(image) if roi else image)
    dx, dy = (roi.x, roi.y) if roi else (0, 0)
    found: dict[tuple[str, str, str], FoundCode] = {}
    tried = []
    for i, name in enumerate(ladder):
        if i and (time.perf_counter() - started) * 1000 >= budget_ms:
            break
        step = STEPS[name]
        if step.sample is not None:
            if zxingcpp.BarcodeFormat.DataMatrix not in formats:
                continue
            tried.append(name)
            # The sampler works blob by blob and starts no blob after its first past the part's deadline,
            # so it carries a part past its budget by one blob's work at most; and it stops at its first
            # symbol when one is enough.
            first = not wanted or "DataMatrix" in wanted
            for sampled in step.sample(region, started + budget_ms / 1000, first):
                code = _found(sampled.barcode, 1.0, dx, dy, name, sampled.corners)
                found.setdefault((code.symbology, code.text, code.error), code)
        else:
            prepared = step.prepare(region) if step.prepare else region
            tried.append(name)
            # zxing-cpp 3 takes a tuple of formats (its `|` is deprecated) but its stub still asks for BarcodeFormats.
            for barcode in zxingcpp.read_barcodes(prepared, formats=tuple(formats), binarizer=step.binarizer):  # type: ignore[arg-type]
                code = _found(barcode, step.scale, dx, dy, name)
                found.setdefault((code.symbology, code.text, code.error), code)
        symbologies = {c.symbology for c in found.values()}
        if (wanted and symbologies.issuperset(wanted)) or (not wanted and found):
            break
    codes = [_graded(c, region, dx, dy) for c in found.values()] if grades else list(found.values())
    return Reading(codes, tried, (time.perf_counter() - started) * 1000)
