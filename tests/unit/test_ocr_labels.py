"""The label generator: reproducible images whose truth a reader can check itself against."""

from __future__ import annotations

import json

import numpy as np
import zxingcpp
from typer.testing import CliRunner

from lineguard.cli import app
from lineguard.ocr.checksums import get
from lineguard.ocr.labels import CANVAS, LabelSettings, Truth, render

CLEAN = LabelSettings(rotation_deg=0, perspective=0, blur_sigma=0, noise_sigma=0, glare=0, contrast_min=1, exposure=0)


def centre(barcode: zxingcpp.Barcode) -> tuple[float, float]:
    pos = barcode.position
    return (pos.top_left.x + pos.bottom_right.x) / 2, (pos.top_left.y + pos.bottom_right.y) / 2


def test_an_image_is_made_again_from_its_seed_and_index_alone() -> None:
    first, truth = render(LabelSettings(surface="metal"), 11, 4)
    again, truth_again = render(LabelSettings(surface="metal"), 11, 4)
    other, _ = render(LabelSettings(surface="metal"), 11, 5)
    assert first.shape == (CANVAS[1], CANVAS[0]) and first.dtype == np.uint8
    assert np.array_equal(first, again) and truth == truth_again
    assert not np.array_equal(first, other)


def test_clean_labels_read_back_as_their_truth_at_the_truth_boxes() -> None:
    for index in range(6):
        image, truth = render(CLEAN, 1, index)
        found = {b.format.name: b for b in zxingcpp.read_barcodes(image)}
        assert get("digits-mod10")(truth.serial)
        for code in truth.codes:
            assert found[code.symbology].text == code.text
            x, y = centre(found[code.symbology])
            x1, y1, x2, y2 = code.box
            assert x1 <= x <= x2 and y1 <= y <= y2


def test_gs1_and_dot_peen_are_drawn_as_asked() -> None:
    _, truth = render(LabelSettings(gs1=1.0, dot_peen=1.0, surface="metal"), 2, 0)
    dm = truth.codes[0]
    assert dm.dot_peen and dm.gs1["21"] == truth.serial and set(dm.gs1) == {"01", "10", "11", "17", "21"}
    assert dm.text.startswith("(01)")
    _, paper = render(LabelSettings(gs1=0), 2, 0)
    assert not paper.codes[0].dot_peen and not paper.codes[0].gs1


def test_make_labels_writes_images_truth_and_settings(tmp_path) -> None:
    result = CliRunner().invoke(app, ["ocr", "make-labels", str(tmp_path), "--count", "3", "--surface", "metal"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.glob("label-*")) == [
        f"label-{i:05d}.{ext}" for i in range(3) for ext in ("json", "png")
    ]
    truth = Truth.from_json((tmp_path / "label-00002.json").read_text())
    assert (truth.index, truth.surface) == (2, "metal")
    meta = json.loads((tmp_path / "settings.json").read_text())
    assert meta["count"] == 3 and meta["settings"]["surface"] == "metal"
    bad = CliRunner().invoke(app, ["ocr", "make-labels", str(tmp_path), "--surface", "wood"])
    assert bad.exit_code == 2 and "paper or metal" in bad.output
