"""Printed text lines (a serial, a batch) through rapidocr: PP-OCR detection and recognition on ONNX Runtime.

The models are the ones inside the rapidocr wheel, named by path: nothing is fetched at run time (rapidocr
downloads a model it is not given and does not find). Two ways to read:
- recognition only, when the recipe gives the printed line's box (`ocr.text_roi`): the line is found in
  the box, levelled and cut tight (lineguard.ocr.textline), then recognised; where the plain reading fails
  a text field's checks, the recogniser's per-step probabilities are decoded again under the field's
  pattern and checksum (lineguard.ocr.ctc.constrained), and the line's flattened ink image is read the
  same way: a value is given out only when the readings that pass the check agree;
- detection + recognition over a region, when it does not: every line found, several times slower."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache, partial
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from lineguard.config.ocr import FieldRule
from lineguard.imaging import ROI
from lineguard.ocr import ctc, textline
from lineguard.ocr.fields import check_value


@dataclass(frozen=True)
class TextLine:
    text: str
    confidence: float  # the line's mean character confidence, 0..1
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in the image
    char_confidences: tuple[float, ...] = ()  # recognition only; empty after detection and when constrained
    raw: str = ""  # the recogniser's plain reading, when `text` is the constrained one (else "")


def model_dir() -> Path:
    """Where the installed rapidocr wheel keeps its ONNX models."""
    import rapidocr

    return Path(rapidocr.__file__).parent / "models"


# The three models rapidocr 3.10's default configuration uses, as shipped in its wheel.
MODELS = {
    "Det": "PP-OCRv6_det_small.onnx",
    "Cls": "ch_ppocr_mobile_v2.0_cls_mobile.onnx",
    "Rec": "PP-OCRv6_rec_small.onnx",
}


@cache
def _engine() -> Any:
    """One engine per process (loading takes about 2 s); the sessions are shared by the readers."""
    from rapidocr import RapidOCR

    folder = model_dir()
    # Detection scales the region's longest side to at most 960 px: rapidocr's default scales the shortest
    # side up to 736 px, which turns a 640 x 160 label strip into 2944 x 736 (seconds on a small CPU).
    # One ONNX Runtime thread: a text line is a small input, and rapidocr's default (every core) fights the
    # inference service for the same cores on a line's PC.
    params: dict[str, Any] = {"Global.log_level": "error", "Det.limit_type": "max", "Det.limit_side_len": 960}
    params |= {"EngineConfig.onnxruntime.intra_op_num_threads": 1, "EngineConfig.onnxruntime.inter_op_num_threads": 1}
    for task, name in MODELS.items():
        path = folder / name
        if not path.is_file():
            raise RuntimeError(f"rapidocr's model {path} is missing: reinstall rapidocr (it ships its models)")
        params[f"{task}.model_path"] = str(path)
    return RapidOCR(params=params)


_LOCK = threading.Lock()  # rapidocr keeps per-call state on the engine


def _level(crop: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The crop turned so that its ink's longest extent is horizontal, cut to the ink with a margin; and the
    2x3 affine map from the crop to it (to map nothing back: boxes are given in the crop's frame)."""
    grey = crop if crop.ndim == 2 else cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY)
    height = max(3, grey.shape[0] // 3) | 1
    ink = cv2.morphologyEx(grey, cv2.MORPH_BLACKHAT, cv2.getStructuringElement(cv2.MORPH_RECT, (height, height)))
    _, mask = cv2.threshold(ink, 0, 255, cv2.THRESH_BINARY | cv2.THRESH_OTSU)
    points = cv2.findNonZero(mask)
    if points is None or len(points) < 10:
        return crop, np.eye(2, 3)
    (cx, cy), (w, h), angle = cv2.minAreaRect(points)
    if w < h:
        w, h, angle = h, w, angle - 90
    # The long side's direction, as the turn of least magnitude: a line is never read upside down here.
    angle = (angle + 90) % 180 - 90
    margin = max(6.0, 0.4 * h)
    out_w, out_h = int(w + 2 * margin), int(h + 2 * margin)
    turn = cv2.getRotationMatrix2D((cx, cy), angle, 1.0)
    turn[0, 2] += out_w / 2 - cx
    turn[1, 2] += out_h / 2 - cy
    level = cv2.warpAffine(grey, turn, (out_w, out_h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    # Stretched to the full grey range: the recogniser was trained on print, not on a faint etch on metal.
    low, high = np.percentile(level, (1, 99))
    if high - low >= 8:
        level = np.clip((level.astype(np.float32) - low) * (255.0 / (high - low)), 0, 255).astype(np.uint8)
    return cv2.cvtColor(level, cv2.COLOR_GRAY2BGR), turn


def _probabilities(level: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """The recogniser's per-step character probabilities (T x classes) for one line image, and its
    characters (class 0 the blank). Normalised as rapidocr does (grey -> -1..1, its 48 px height), but not
    padded to its 320 px minimum width: the line images are sized for the recogniser already
    (lineguard.ocr.textline), and a 270 px line then costs 13% less CPU, read as well (297 against 296 of
    the generated harsh metal set's 300 lines)."""
    rec = _engine()._load_rec_model()
    _, height, _ = rec.rec_image_shape
    if level.shape[0] != height:
        width = max(8, round(level.shape[1] * height / level.shape[0]))
        level = cv2.resize(level, (width, height), interpolation=cv2.INTER_LINEAR)
    batch = (level.astype(np.float32).transpose(2, 0, 1) / 255.0 - 0.5) / 0.5
    with _LOCK:
        probs = rec.session(batch[np.newaxis])
    return probs[0], rec.postprocess_op.character


def _images(region: np.ndarray) -> list[np.ndarray]:
    """The line images the recogniser reads, in order: the line found, levelled and cut tight, as grey and
    as its flattened ink (textline.find_line); where no line is found, the whole box levelled as before."""
    grey = region if region.ndim == 2 else cv2.cvtColor(region, cv2.COLOR_BGR2GRAY)
    line = textline.find_line(grey)
    if line is None:
        return [_level(region)[0]]
    return [cv2.cvtColor(line.grey, cv2.COLOR_GRAY2BGR), cv2.cvtColor(line.flat, cv2.COLOR_GRAY2BGR)]


def _passes(rule: FieldRule, text: str) -> bool:
    return not check_value(rule, text)[0]


def _constrained(probs: np.ndarray, charset: list[str], rules: Sequence[FieldRule]) -> ctc.Decoded | None:
    for rule in rules:
        if rule.pattern is None:
            continue
        # The whole check (length, pattern, checksum) decides; the pattern also steers the search.
        found = ctc.constrained(probs, charset, rule.pattern, partial(_passes, rule))
        if found is not None:
            return found
    return None


def _checked(
    plain: ctc.Decoded, probs: np.ndarray, charset: list[str], rules: Sequence[FieldRule]
) -> ctc.Decoded | None:
    """The plain reading where it passes a field, else the constrained one, else None."""
    if any(_passes(r, plain.text) for r in rules):
        return plain
    return _constrained(probs, charset, rules)


def agreed(readings: Sequence[ctc.Decoded]) -> ctc.Decoded | None:
    """The one string that every valid reading of a line's images gives (the likeliest of them), or None:
    none at all, or two different strings that each pass the field, of which the check cannot tell which
    is the part's. So reading more images of a line can add reads, never a value that only one image
    makes up against another."""
    if not readings or len({r.text for r in readings}) != 1:
        return None
    return max(readings, key=lambda r: r.log_prob)


def read_line(region: np.ndarray, rules: Sequence[FieldRule] = ()) -> TextLine | None:
    """One printed line (the recipe's text box), recognition only. With `rules` (the recipe's text fields):
    a plain reading that fails all of them is decoded again under each field's pattern and checksum, and
    the line's other image is read both ways, until one reads plainly as a valid value. The readings that
    pass a field must all be the same string, which is then the line's text (its plain reading in `raw`);
    when they differ, or none passes, the plain reading stands and the field fails as before."""
    h, w = region.shape[:2]
    box = (0.0, 0.0, float(w), float(h))
    images = _images(region)
    probs, charset = _probabilities(images[0])
    plain = ctc.best_path(probs, charset)
    rules = [r for r in rules if r.pattern is not None]
    if rules and not any(_passes(r, plain.text) for r in rules):
        valid = []
        for index, image in enumerate(images):
            first = plain if index == 0 else ctc.best_path(probs := _probabilities(image)[0], charset)
            found = _checked(first, probs, charset, rules)
            if found is not None:
                valid.append(found)
                if found is first:  # read plainly valid: no later image is needed to settle it
                    break
        best = agreed(valid)
        if best is not None:
            return TextLine(best.text, best.confidence, box, best.char_confidences, plain.text)
    if not plain.text:
        return None
    return TextLine(plain.text, plain.confidence, box, plain.char_confidences)


def read_text(
    image: np.ndarray, roi: ROI | None = None, *, detect: bool = True, rules: Sequence[FieldRule] = ()
) -> list[TextLine]:
    """The printed lines in `image` (or its `roi`). `detect=False`: the region is one line (the recipe's
    text box), recognised without detection, and constrained by `rules` where its plain reading fails them
    (read_line). Raises lineguard.imaging.ImageError for a region outside the image."""
    region = roi.crop(image) if roi else image
    dx, dy = (roi.x, roi.y) if roi else (0, 0)
    if region.ndim == 2:
        region = cv2.cvtColor(region, cv2.COLOR_GRAY2BGR)
    if not detect:
        line = read_line(region, rules)
        if line is None:
            return []
        x1, y1, x2, y2 = line.box
        return [
            TextLine(line.text, line.confidence, (x1 + dx, y1 + dy, x2 + dx, y2 + dy), line.char_confidences, line.raw)
        ]
    engine = _engine()
    with _LOCK:
        out = engine(region, use_det=True, use_cls=False, use_rec=True, return_word_box=True)
    if out.txts is None:
        return []
    lines = []
    # With detection rapidocr gives word scores, not character ones: char_confidences stays empty.
    for text, score, quad in zip(out.txts, out.scores, out.boxes, strict=False):
        xs, ys = quad[:, 0], quad[:, 1]
        box = (float(xs.min() + dx), float(ys.min() + dy), float(xs.max() + dx), float(ys.max() + dy))
        lines.append(TextLine(text, float(score), box))
    return lines


def rapidocr_recognise(region: np.ndarray) -> list[str]:
    """rapidocr's own recognition of the region as it is (no line finding, no field): the baseline the
    benchmark measures read_line against."""
    with _LOCK:
        out = _engine()(region, use_det=False, use_cls=False, use_rec=True)
    return list(out.txts or ())


def warm_up() -> None:
    """Load the models now (about 2 s), so that the first part does not wait for them and a broken install
    stops the service at its start."""
    _engine()._load_rec_model()
