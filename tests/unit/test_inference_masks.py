"""YOLO11-seg mask decoding on hand-built prototypes and coefficients with known masks."""

from __future__ import annotations

import numpy as np
import pytest

from lineguard.services.inference.detect import to_proto
from lineguard.vision.masks import Mask, box_mask, logits
from lineguard.vision.postprocess import postprocess
from lineguard.vision.preprocess import Letterbox

# A 128 x 96 region letterboxed to 64: scale 0.5, 8 rows of padding above. Prototypes are 16 x 16
# (a quarter of the input), so one prototype cell is 4 input pixels = 8 source pixels.
PLACEMENT = Letterbox(scale=0.5, pad_x=0, pad_y=8, src_width=128, src_height=96, size=64)
CLASSES = ("open", "short")


def stripe_protos() -> np.ndarray:
    """(1, 2, 16, 16): channel 0 is +10 on prototype columns 4..7 and -10 elsewhere; channel 1 is flat.

    Columns 4..7 are input pixels x 16..32, i.e. source x 32..64. The boxes below lie inside the stripe's
    height, so a mask's top and bottom come from the box crop and its sides from the stripe: a rectangle
    with no rounded corners (bilinear upsampling rounds a prototype's own corners)."""
    protos = np.full((1, 2, 16, 16), -10.0, np.float32)
    protos[0, 0, :, 4:8] = 10.0
    protos[0, 1] = 0.0
    return protos


def seg_output(anchors: list[tuple[float, float, float, float, list[float], list[float]]]) -> np.ndarray:
    """(1, 4 + classes + masks, anchors) from (cx, cy, w, h, class scores, mask coefficients) per anchor."""
    return np.array([[cx, cy, w, h, *s, *m] for cx, cy, w, h, s, m in anchors], np.float32).T[None]


def points(outline: np.ndarray) -> set[tuple[float, float]]:
    return {(float(x), float(y)) for x, y in outline}


# Input box 12..36 x 28..36 = source 24..72 x 40..56: around the stripe's width.
AROUND = (24, 32, 24, 8, [0.9, 0.1], [1.0, 0.0])
# Input box 8..24 x 28..36 = source 16..48 x 40..56: the stripe's left half only.
LEFT_HALF = (16, 32, 16, 8, [0.1, 0.8], [1.0, 0.0])


def test_masks_are_the_stripe_cropped_to_each_box_in_frame_pixels() -> None:
    found = postprocess(
        seg_output([AROUND, LEFT_HALF]),
        len(CLASSES),
        PLACEMENT,
        conf_threshold=0.5,
        iou_threshold=0.45,
        offset=(200, 300),
        protos=stripe_protos(),
    )
    assert found.polygon is not None and found.mask_px is not None
    around, half = 0, 1
    assert tuple(found.xyxy[around].tolist()) == (224, 340, 272, 356)
    assert found.mask_px[around] == 32 * 16 and found.area_px[around] == 512  # source x 32..63, y 40..55
    assert points(found.polygon[around]) == {(232, 340), (232, 355), (263, 355), (263, 340)}  # plus the ROI offset
    assert CLASSES[found.class_id[half]] == "short"
    assert found.mask_px[half] == 16 * 16  # cropped by its box at source x 48
    assert points(found.polygon[half]) == {(232, 340), (232, 355), (247, 355), (247, 340)}


def test_the_mask_area_goes_to_mm2_through_the_calibration() -> None:
    det = postprocess(
        seg_output([AROUND]), len(CLASSES), PLACEMENT, conf_threshold=0.5, iou_threshold=0.45, protos=stripe_protos()
    )
    [message] = to_proto(det, CLASSES, px_per_mm=48.0)  # DeepPCB: about 48 px per mm
    assert message.area_px == 512
    assert message.area_mm2 == pytest.approx(512 / 48.0**2)
    assert {(p.x, p.y) for p in message.mask.points} == {(32, 40), (32, 55), (63, 55), (63, 40)}


def test_a_negative_coefficient_makes_the_mask_everything_but_the_stripe() -> None:
    [logit] = logits(np.array([[-1.0, 0.0]], np.float32), stripe_protos()[0])
    mask = box_mask(logit, np.array([24, 40, 72, 56], np.float32), PLACEMENT)
    assert (mask.x, mask.y, mask.pixels.shape) == (24, 40, (16, 48))
    assert mask.area_px == 48 * 16 - 32 * 16
    assert mask.pixels[:, :8].all() and not mask.pixels[:, 8:40].any() and mask.pixels[:, 40:].all()


def test_a_prototypes_own_corner_is_rounded_as_bilinear_upsampling_rounds_it() -> None:
    # A 4 x 4 cell square (source 32..63 both ways) inside a box around it: each corner loses the
    # 6 pixels where the two edge ramps multiply below one half, as in Ultralytics' own masks.
    protos = np.full((2, 16, 16), -10.0, np.float32)
    protos[0, 6:10, 4:8] = 10.0
    [logit] = logits(np.array([[1.0, 0.0]], np.float32), protos)
    mask = box_mask(logit, np.array([24, 24, 72, 72], np.float32), PLACEMENT)
    assert mask.area_px == 32 * 32 - 4 * 6
    ys, xs = np.nonzero(mask.pixels)
    assert (xs.min() + 24, xs.max() + 24, ys.min() + 24, ys.max() + 24) == (32, 63, 32, 63)


def test_detection_without_masks_keeps_the_box_area() -> None:
    output = np.array([[[24], [32], [24], [24], [0.9], [0.1]]], np.float32)
    det = postprocess(output, len(CLASSES), PLACEMENT, conf_threshold=0.5, iou_threshold=0.45)
    assert len(det) == 1
    assert det.polygon is None and det.mask_px is None and det.area_px[0] == 48 * 48
    assert not to_proto(det, CLASSES, 48.0)[0].HasField("mask")


def test_an_empty_mask_has_no_outline_and_no_area() -> None:
    empty = Mask(np.zeros((5, 5), bool), 3, 4)
    assert empty.area_px == 0 and empty.outline().shape == (0, 2)


def test_coefficients_that_do_not_fit_the_prototypes_are_named() -> None:
    with pytest.raises(ValueError, match=r"expected \(N, 2\) mask coefficients for 2 prototypes, got \(1, 3\)"):
        logits(np.zeros((1, 3), np.float32), stripe_protos()[0])


def test_a_seg_output_without_room_for_the_masks_is_named() -> None:
    with pytest.raises(ValueError, match=r"expected output \(1, 8, anchors\) for 2 classes and 2 masks"):
        postprocess(
            np.zeros((1, 6, 3), np.float32),
            len(CLASSES),
            PLACEMENT,
            conf_threshold=0.5,
            iou_threshold=0.45,
            protos=stripe_protos(),
        )
