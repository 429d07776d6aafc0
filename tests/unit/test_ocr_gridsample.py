"""The DataMatrix grid sampler: symbols of known content drawn turned, tilted, dot-peened, under glare and
at low contrast, found and sampled by lineguard.ocr.gridsample and decoded by zxing from the clean matrix;
and what must not come back (no symbol, a QR code, text)."""

from __future__ import annotations

import time

import cv2
import numpy as np
import pytest
import zxingcpp

from lineguard.ocr.codes import LADDER, read_ladder
from lineguard.ocr.gridsample import SIZES, fixed_pattern, matrix_image, read_sampled
from lineguard.ocr.labels import LabelSettings, _draw_modules, _modules, render

DM = zxingcpp.BarcodeFormat.DataMatrix


def symbol(
    text: str,
    *,
    module_px: float = 5.0,
    angle: float = 0.0,
    tilt: float = 0.0,
    peened: bool = True,
    contrast: float = 0.6,
    glare: float = 0.0,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """A DataMatrix of `text` on a brushed-looking surface (drawn by the label generator's own module
    painter): the grey image and the symbol's four true corners (top-left, top-right, bottom-right,
    bottom-left of the upright symbol) in it."""
    rng = np.random.default_rng(seed)
    modules = _modules(text, DM)
    w, h = 360, 300
    mark = np.zeros((h, w), np.float32)
    highlight = np.zeros((h, w), np.float32)
    sw, sh = modules.shape[1] * module_px, modules.shape[0] * module_px
    origin = ((w - sw) / 2, (h - sh) / 2)
    _draw_modules(mark, highlight, modules, origin, module_px, rng, peened)
    background = 140 + np.asarray(
        cv2.GaussianBlur(rng.normal(0, 18, (h, w)).astype(np.float32), (0, 0), sigmaX=25, sigmaY=0.6)
    )
    image = background * (1 - 0.85 * contrast * mark) + contrast * 70 * highlight * (1 - mark * 0.5)
    if glare:
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        image = image + glare * np.exp(-((xx - w / 2 + 20) ** 2 / 3000 + (yy - h / 2) ** 2 / 1500))
    corners = np.array(
        [origin, (origin[0] + sw, origin[1]), (origin[0] + sw, origin[1] + sh), (origin[0], origin[1] + sh)]
    )
    turn = np.vstack([cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0), [0, 0, 1]])
    frame = np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float32)
    shifted = frame + np.array([[tilt, 0], [-tilt, tilt], [0, -tilt], [tilt, tilt]], np.float32) * 40
    homography = cv2.getPerspectiveTransform(frame, shifted) @ turn
    image = cv2.warpPerspective(image.astype(np.float32), homography, (w, h), borderValue=float(np.median(background)))
    image = cv2.GaussianBlur(image, (0, 0), 0.7) + rng.normal(0, 4, (h, w)).astype(np.float32)
    true_corners = cv2.perspectiveTransform(corners[None].astype(np.float32), homography)[0]
    return np.clip(image, 0, 255).astype(np.uint8), true_corners


def assert_outline(corners: tuple[tuple[float, float], ...], truth: np.ndarray, module: float) -> None:
    """The outline reported is the symbol's: every corner within a module and a half of a true corner."""
    for corner in np.array(corners):
        assert np.linalg.norm(truth - corner, axis=1).min() < 1.5 * module


def test_fixed_pattern_matches_what_zxing_draws_for_every_size_it_writes() -> None:
    seen = set()
    for text in ("A", "1" * 5, "LG-1234567-8", "A" * 20, "1" * 40, "A" * 40, "1" * 80, "A" * 80, "A" * 150, "1" * 300):
        modules = _modules(text, DM)
        assert modules.shape in SIZES
        known, dark = fixed_pattern(*modules.shape)
        assert (modules[known] == dark[known]).all(), modules.shape
        seen.add(modules.shape)
    assert {(8, 32), (12, 26), (20, 44), (12, 64), (48, 48)} <= seen  # square, rectangular, DMRE, 2x2 regions


def test_matrix_image_is_read_by_zxing_as_the_symbol() -> None:
    modules = _modules("LG-0000042-5", DM)
    found = zxingcpp.read_barcodes(matrix_image(modules), formats=(DM,), is_pure=True)  # type: ignore[arg-type]
    assert [b.text for b in found] == ["LG-0000042-5"]


@pytest.mark.parametrize(
    ("text", "kwargs"),
    [
        ("LG-4790583-2", {"angle": 0.0}),
        ("LG-4790583-2", {"angle": 23.0, "tilt": 0.4}),  # 8x32, turned, in perspective
        ("LG-4790583-2", {"angle": 97.0}),  # standing on its side
        ("LG-4790583-2", {"angle": 200.0, "tilt": -0.3}),  # upside down
        ("SN 00042 LOT B7 2026", {"angle": -15.0, "module_px": 4.2}),  # 12x26 at 4 px modules
        ("PART-0000001234567890-REV-C", {"angle": 8.0, "tilt": 0.3}),  # square 22x22
        ("LG-0604078-9", {"angle": -12.0, "contrast": 0.3, "glare": 90.0}),  # faint, under glare
        ("LG-0604078-9", {"angle": 31.0, "peened": False, "contrast": 0.35, "glare": 70.0}),  # printed, faint
    ],
)
def test_sampler_reads_symbols_turned_tilted_peened_and_under_glare(text: str, kwargs: dict) -> None:
    image, truth = symbol(text, **kwargs)
    found = read_sampled(image)
    assert [s.barcode.text for s in found] == [text]
    assert_outline(found[0].corners, truth, kwargs.get("module_px", 5.0))


def test_no_symbol_no_qr_and_no_text_give_nothing() -> None:
    rng = np.random.default_rng(3)
    noise = np.clip(rng.normal(140, 10, (300, 400)), 0, 255).astype(np.uint8)
    assert read_sampled(noise) == []
    canvas = np.full((300, 400), 200, np.uint8)
    qr = np.asarray(zxingcpp.create_barcode("LG-0000001-1", zxingcpp.BarcodeFormat.QRCode).to_image(scale=5))
    canvas[40 : 40 + qr.shape[0], 30 : 30 + qr.shape[1]] = qr
    cv2.putText(canvas, "LG-0000001-1", (200, 260), cv2.FONT_HERSHEY_DUPLEX, 0.9, 40, 2, cv2.LINE_AA)
    assert read_sampled(canvas) == []


def test_the_ladder_reads_through_the_sampler_what_its_other_steps_miss() -> None:
    # Metal defaults, seed 2, image 120: a dot-peened 8x32 at 6.6 px modules that none of the
    # preparation steps read (docs/ocr.md, the misses).
    image, truth = render(LabelSettings(surface="metal"), 2, 120)
    want = next(c.text for c in truth.codes if c.symbology == "DataMatrix")
    others = tuple(s for s in LADDER if s != "grid-sample")
    fmt = (DM,)
    assert read_ladder(image, formats=fmt, wanted=["DataMatrix"], budget_ms=1e9, ladder=others).codes == []
    reading = read_ladder(image, formats=fmt, wanted=["DataMatrix"], budget_ms=1e9)
    assert [(c.text, c.step) for c in reading.codes] == [(want, "grid-sample")]
    code = reading.codes[0]
    x1, y1, x2, y2 = code.box
    tx1, ty1, tx2, ty2 = truth.codes[0].box
    assert abs(x1 - tx1) < 8 and abs(y1 - ty1) < 8 and abs(x2 - tx2) < 8 and abs(y2 - ty2) < 8
    assert code.grades is not None and code.version == "8x32"


def test_a_symbol_in_a_larger_frame_of_another_surface_is_found() -> None:
    # The surface's noise is measured per tile: a smooth surround (little sensor noise) must not set the
    # level for the brushed patch around the symbol, or the patch's streaks join the symbol's blob.
    image, truth = symbol("LG-4790583-2", angle=12.0)
    rng = np.random.default_rng(1)
    frame = np.clip(rng.normal(float(np.median(image)), 2, (900, 1200)), 0, 255).astype(np.uint8)
    frame[300:600, 500:860] = image
    found = read_sampled(frame)
    assert [s.barcode.text for s in found] == ["LG-4790583-2"]
    assert_outline(found[0].corners, truth + np.array([500, 300]), 5.0)


def test_two_symbols_both_read_or_the_first_only_and_a_spent_deadline_still_finishes_one() -> None:
    left, _ = symbol("LG-1111111-6", angle=5.0, seed=1)
    right, _ = symbol("LG-2222222-2", angle=-8.0, seed=2)
    image = np.hstack([left, right])
    assert sorted(s.barcode.text for s in read_sampled(image)) == ["LG-1111111-6", "LG-2222222-2"]
    assert len(read_sampled(image, first=True)) == 1
    # Past its deadline when it starts, the step still finishes its first blob, as any step once started.
    late = read_sampled(image, time.perf_counter())
    assert len(late) == 1 and late[0].barcode.text in ("LG-1111111-6", "LG-2222222-2")
