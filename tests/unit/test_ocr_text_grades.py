"""Printed serials through rapidocr (recognition only in the recipe's text box, detection + recognition
without one) checked by the field rules, and print-quality grades of 2D codes."""

from __future__ import annotations

import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import zxingcpp
from pydantic import ValidationError

from lineguard.config import LineConfig, RecipeSettings
from lineguard.contracts import new_inspection_id
from lineguard.imaging import ROI, FrameError, encode_image
from lineguard.ocr.codes import read_ladder
from lineguard.ocr.grades import _grid_nonuniformity
from lineguard.ocr.labels import CANVAS, LabelSettings, render
from lineguard.ocr.text import MODELS, model_dir, read_text
from lineguard.samples import SAMPLE_BOARDS
from lineguard.services.capture.stamping import STRIP_HEIGHT, stamp_serial
from lineguard.services.ocr.results import ocr_frame
from lineguard.v1.common_pb2 import Part
from lineguard.v1.frame_pb2 import Frame

# Printed labels the recogniser must read: rotation and perspective as the generator's defaults, milder
# contrast and blur (the hardest default labels are in docs/ocr.md's figures, not in a test).
PAPER = LabelSettings(surface="paper", contrast_min=0.6, blur_sigma=0.8, glare=0.0)
SERIAL_TEXT = {"source": "text", "pattern": r"LG-\d{7}-\d", "checksum": "digits-mod10"}


def text_roi(box: list[float], margin: int = 12) -> list[int]:
    """The truth's text box grown by a margin, inside the canvas: what a recipe's text_roi would be."""
    w, h = CANVAS
    x1, y1 = max(0, int(box[0]) - margin), max(0, int(box[1]) - margin)
    x2, y2 = min(w, int(box[2]) + margin), min(h, int(box[3]) + margin)
    return [x1, y1, x2 - x1, y2 - y1]


def frame_of(image: np.ndarray) -> Frame:
    part = Part(inspection_id=new_inspection_id(), line="l1", station="s1", recipe_id="pcb-a", sequence=3)
    return Frame(part=part, encoding="png", data=encode_image(image))


def config_with(line_config_dict, ocr: dict) -> LineConfig:
    raw = line_config_dict()
    raw["recipes"]["pcb-a"].pop("code_roi", None)
    raw["recipes"]["pcb-a"]["ocr"] = {"budget_ms": 2000, **ocr}
    return LineConfig(**raw)


def test_the_models_ship_in_the_wheel_and_nothing_is_downloaded(tmp_path) -> None:
    for name in MODELS.values():
        assert (model_dir() / name).stat().st_size > 100_000
    # Every proxy points at a closed port: a download attempt would fail the read.
    closed = "http://127.0.0.1:9"
    env = os.environ | {"HTTP_PROXY": closed, "HTTPS_PROXY": closed, "ALL_PROXY": closed, "NO_PROXY": ""}
    image, truth = render(PAPER, 11, 0)
    path = tmp_path / "label.png"
    cv2.imwrite(str(path), image)
    script = (
        "import cv2, sys; from lineguard.imaging import ROI; from lineguard.ocr.text import read_text; "
        f"print(read_text(cv2.imread(sys.argv[1], 0), ROI(*{text_roi(truth.text_box)}), detect=False)[0].text)"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(path)], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == truth.text


def test_printed_serials_read_in_the_text_box_validate_by_the_field_rules(line_config_dict) -> None:
    for index in range(6):
        image, truth = render(PAPER, 11, index)
        config = config_with(
            line_config_dict, {"text_roi": text_roi(truth.text_box), "fields": {"serial": SERIAL_TEXT}}
        )
        result = ocr_frame(frame_of(image), config)
        assert [line.text for line in result.lines] == [truth.text], index
        line = result.lines[0]
        assert len(line.char_confidences) == len(truth.text) and 0.5 < line.confidence <= 1.0
        assert [(f.name, f.value, f.reason) for f in result.fields] == [("serial", truth.serial, "")]


def test_without_a_text_box_the_region_is_searched_for_lines() -> None:
    image, truth = render(PAPER, 11, 2)
    lines = read_text(image, ROI(0, 240, 640, 160), detect=True)
    found = [line for line in lines if line.text == truth.text]
    assert found, [line.text for line in lines]
    x1, y1, x2, y2 = found[0].box
    tx1, ty1, tx2, ty2 = truth.text_box
    assert abs(x1 - tx1) < 20 and abs(y1 - ty1) < 20 and abs(x2 - tx2) < 20 and abs(y2 - ty2) < 20


def _wrong_label(printed: str, coded: str) -> np.ndarray:
    """A demo frame whose DataMatrix says `coded` and whose printed line says `printed`."""
    board = cv2.imread(str(SAMPLE_BOARDS / "13000000_temp.jpg"), cv2.IMREAD_GRAYSCALE)
    image = stamp_serial(board, coded)
    printed_part = stamp_serial(board, printed)
    top = image.shape[0] - STRIP_HEIGHT
    image[top:, 150:] = printed_part[top:, 150:]
    return image


def test_a_label_whose_text_differs_from_its_code_is_never_given_as_the_serial(line_config_dict) -> None:
    config = LineConfig(**line_config_dict())  # the demo recipe: DataMatrix serial, match_text, text_roi
    result = ocr_frame(frame_of(_wrong_label("LG-00000006", "LG-00000005")), config)
    assert [line.text for line in result.lines] == ["LG-00000006"]
    assert [(f.value, f.read, f.reason) for f in result.fields] == [("", "LG-00000005", "CODE_TEXT_MISMATCH")]
    same = ocr_frame(frame_of(_wrong_label("LG-00000005", "LG-00000005")), config)
    assert [(f.value, f.reason) for f in same.fields] == [("LG-00000005", "")]


def test_a_text_box_outside_the_image_or_malformed_is_refused(line_config_dict) -> None:
    image, _ = render(PAPER, 11, 0)
    config = config_with(line_config_dict, {"text_roi": [600, 380, 100, 40], "fields": {"serial": SERIAL_TEXT}})
    with pytest.raises(FrameError, match=r"ocr\.text_roi: region 600,380 100x40 lies outside the 640x400 image"):
        ocr_frame(frame_of(image), config)
    with pytest.raises(ValidationError) as info:
        RecipeSettings(ocr={"text_roi": [1, 2, 3]})
    assert info.value.errors()[0]["loc"] == ("ocr", "text_roi")


def _datamatrix(text: str, scale: int = 8) -> np.ndarray:
    code = zxingcpp.create_barcode(text, zxingcpp.BarcodeFormat.DataMatrix)
    return np.asarray(code.to_image(scale=scale, add_quiet_zones=True))


def _graded(image: np.ndarray):
    codes = read_ladder(image).codes
    assert [c.symbology for c in codes] == ["DataMatrix"]
    assert codes[0].grades is not None
    return codes[0].grades


def test_grades_fall_with_contrast_blur_and_damage() -> None:
    clean = _datamatrix("LG-00000042")
    good = _graded(clean)
    assert good.overall == "A", good
    assert set(good.letters) == {
        "symbol_contrast",
        "modulation",
        "axial_nonuniformity",
        "grid_nonuniformity",
        "unused_error_correction",
        "fixed_pattern_damage",
    }
    # A faint mark: grey 150 on 190 is a symbol contrast of 16%: F.
    faint = _graded((150 + clean.astype(np.float32) * (40 / 255)).astype(np.uint8))
    assert faint.letters["symbol_contrast"] == "F" and faint.overall == "F"
    assert faint.values["symbol_contrast"] == pytest.approx(40 / 255, abs=0.02)
    # Out of focus: the modules' grey levels close in on the threshold.
    blurred = _graded(cv2.GaussianBlur(clean, (0, 0), 3.0))
    assert blurred.values["modulation"] < good.values["modulation"] - 0.2
    # Stretched along x: the modules are wider than tall.
    wide = _graded(cv2.resize(clean, None, fx=1.25, fy=1.0, interpolation=cv2.INTER_NEAREST))
    assert wide.values["axial_nonuniformity"] == pytest.approx(0.22, abs=0.04)
    assert wide.letters["axial_nonuniformity"] == "F"
    # Modules scratched out (white squares in the symbol): error correction spent, grade down.
    damaged = clean.copy()
    damaged[8 * 4 : 8 * 7, 8 * 5 : 8 * 10] = 255
    scratched = _graded(damaged)
    assert scratched.values["unused_error_correction"] < good.values["unused_error_correction"]


def test_grid_nonuniformity_is_how_far_isolated_modules_ink_sits_from_their_grid_points() -> None:
    module = 10.0
    smooth = np.full((60, 60), 255, np.float32)
    centres = np.stack(np.meshgrid(np.arange(5) * module + 5, np.arange(5) * module + 5), -1).astype(np.float32)
    dark = np.zeros((5, 5), bool)
    dark[1, 1] = dark[3, 3] = True  # isolated dark modules: one's ink 2 px right of its grid point, one's 3 px below
    smooth[15 - 1 : 15 + 2, 15 + 1 : 15 + 4] = 0
    smooth[35 + 2 : 35 + 5, 35 - 1 : 35 + 2] = 0
    assert _grid_nonuniformity(smooth, centres, dark, module, 128.0) == pytest.approx(0.295, abs=1e-6)
    # No isolated module (a solid block, or none dark): nothing to measure, 0.
    assert _grid_nonuniformity(smooth, centres, np.ones((5, 5), bool), module, 128.0) == 0.0
    assert _grid_nonuniformity(smooth, centres, np.zeros((5, 5), bool), module, 128.0) == 0.0
