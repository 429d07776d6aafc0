"""Finding the printed line in its text box (lineguard.ocr.textline) and reading it from several images
under the field's check (lineguard.ocr.text): levelled, cut tight, a neighbour's dark corner not taken for
the line, the faint metal lines the box-wide levelling misread, and two images' disagreeing valid
readings never given out."""

from __future__ import annotations

import numpy as np

from lineguard.ocr import ctc, textline
from lineguard.ocr.evaluate import TEXT_SERIAL, text_roi
from lineguard.ocr.labels import LabelSettings, render
from lineguard.ocr.text import agreed, read_text

LEVEL_PAPER = LabelSettings(surface="paper", perspective=0.0, contrast_min=0.6, glare=0.0)


def test_a_turned_line_is_levelled_and_cut_to_the_recognisers_height() -> None:
    for index in range(4):
        image, truth = render(LEVEL_PAPER, 7, index)
        line = textline.find_line(text_roi(truth, image.shape).crop(image))
        assert line is not None
        # cv2's angle is counter-clockwise, the generator's the other way: the levelling turn is its negative
        assert abs(line.angle + truth.drawn["angle"]) <= 1.0, (index, line.angle, truth.drawn["angle"])
        # the drawn text is about 21 px high (Hershey duplex, scale 1, thickness 2)
        assert 16 <= line.text_height <= 26
        assert line.grey.shape[0] == line.flat.shape[0] == textline.HEIGHT
        # twelve characters condensed: about 270 px, not the ~420 px of the line's own aspect
        assert 200 <= line.grey.shape[1] <= 320


def test_a_dark_neighbour_in_the_box_corner_is_not_taken_for_the_line() -> None:
    # Paper label 99 of seed 1 (defaults): a corner of the DataMatrix lies in the line's text box; as row
    # means its few pixels in the turned canvas's corner outweighed the line
    image, truth = render(LabelSettings(surface="paper"), 1, 99)
    region = text_roi(truth, image.shape).crop(image)
    assert region[:12, :12].mean() < 0.6 * np.median(region)  # the corner is there
    line = textline.find_line(region)
    assert line is not None and 16 <= line.text_height <= 26
    lines = read_text(image, text_roi(truth, image.shape), detect=False, rules=[TEXT_SERIAL])
    assert [t.text for t in lines] == [truth.text]


def test_faint_metal_lines_the_box_wide_levelling_misread_are_read_exactly() -> None:
    # Default metal set, seed 2: contrast 0.26-0.41, two under glare; read before as "ies", "N", "Me e",
    # "e-8", "1004" (their ink levelled by an Otsu cut that the streaks and noise filled the box with)
    settings = LabelSettings(surface="metal")
    for index in (12, 44, 56, 72, 92):
        image, truth = render(settings, 2, index)
        lines = read_text(image, text_roi(truth, image.shape), detect=False, rules=[TEXT_SERIAL])
        assert [t.text for t in lines] == [truth.text], index


def test_a_box_without_a_line_gives_no_line() -> None:
    assert textline.find_line(np.full((60, 240), 150, np.uint8)) is None
    assert textline.find_line(np.full((4, 240), 150, np.uint8)) is None


def test_images_reading_different_valid_serials_give_none() -> None:
    one = ctc.Decoded("LG-1234567-0", (), -2.0)
    same = ctc.Decoded("LG-1234567-0", (0.9,) * 12, -0.5)
    other = ctc.Decoded("LG-1234576-0", (), -1.0)
    assert agreed([one, same]) is same  # the likeliest of one string
    assert agreed([one, other]) is None  # both pass the check: which one is the part's is unknown
    assert agreed([]) is None
