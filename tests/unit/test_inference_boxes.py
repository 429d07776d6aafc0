"""Letterbox, YOLO output decoding, NMS and box mapping on hand-built arrays with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from lineguard.vision.postprocess import class_aware_nms, decode, nms, postprocess
from lineguard.vision.preprocess import PAD_VALUE, Letterbox, letterbox, preprocess, to_tensor


def test_letterbox_pads_a_wide_image_top_and_bottom_without_scaling() -> None:
    image = np.zeros((320, 640, 3), np.uint8)
    image[0, 0] = (1, 2, 3)
    boxed, placement = letterbox(image, 640)
    assert boxed.shape == (640, 640, 3)
    assert placement == Letterbox(scale=1.0, pad_x=0, pad_y=160, src_width=640, src_height=320, size=640)
    assert (boxed[:160] == PAD_VALUE).all() and (boxed[480:] == PAD_VALUE).all()
    assert tuple(boxed[160, 0]) == (1, 2, 3)


def test_letterbox_scales_down_to_the_longer_side() -> None:
    boxed, placement = letterbox(np.zeros((100, 200, 3), np.uint8), 64)
    assert boxed.shape == (64, 64, 3)
    assert (placement.scale, placement.pad_x, placement.pad_y) == (0.32, 0, 16)


def test_without_scaleup_a_smaller_image_is_padded_not_enlarged() -> None:
    image = np.full((640, 640, 3), 7, np.uint8)
    boxed, placement = letterbox(image, 672, scaleup=False)
    assert boxed.shape == (672, 672, 3)
    assert (placement.scale, placement.pad_x, placement.pad_y) == (1.0, 16, 16)
    assert (
        (boxed[16:656, 16:656] == 7).all() and (boxed[:16] == PAD_VALUE).all() and (boxed[:, 656:] == PAD_VALUE).all()
    )
    assert letterbox(image, 672)[1].scale == 1.05  # with scaleup: enlarged
    assert letterbox(np.zeros((800, 800, 3), np.uint8), 672, scaleup=False)[1].scale == 0.84  # larger: shrunk


def test_letterbox_splits_odd_padding_like_ultralytics() -> None:
    boxed, placement = letterbox(np.zeros((10, 13, 3), np.uint8), 13)
    assert boxed.shape == (13, 13, 3)
    assert placement.pad_y == 1  # 3 rows of padding: 1 above, 2 below
    assert (boxed[0] == PAD_VALUE).all() and (boxed[11:] == PAD_VALUE).all() and (boxed[1:11] == 0).all()


def test_letterbox_refuses_a_non_colour_image() -> None:
    with pytest.raises(ValueError, match=r"expected an \(H, W, 3\) image"):
        letterbox(np.zeros((10, 10), np.uint8))


def test_to_tensor_is_rgb_nchw_float_in_unit_range() -> None:
    image = np.zeros((2, 3, 3), np.uint8)
    image[1, 2] = (255, 51, 0)  # BGR
    tensor = to_tensor(image)
    assert tensor.shape == (1, 3, 2, 3) and tensor.dtype == np.float32
    assert tensor[0, :, 1, 2].tolist() == pytest.approx([0.0, 0.2, 1.0])  # RGB
    assert tensor.flags.c_contiguous


def test_to_tensor_gives_exactly_the_values_of_a_transpose_and_divide() -> None:
    image = np.random.default_rng(0).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    plain = np.ascontiguousarray(image[:, :, ::-1].transpose(2, 0, 1), dtype=np.float32)[None] / np.float32(255.0)
    assert np.array_equal(to_tensor(image), plain)


def test_to_source_undoes_scale_and_padding_and_clips() -> None:
    placement = Letterbox(scale=0.5, pad_x=0, pad_y=20, src_width=100, src_height=80, size=64)
    mapped = placement.to_source(np.array([[10, 30, 50, 70], [-5, 10, 60, 64]], np.float32))
    assert mapped.tolist() == [[20, 20, 100, 80], [0, 0, 100, 80]]


def test_a_drawn_rectangle_maps_back_to_where_it_was() -> None:
    image = np.zeros((480, 640, 3), np.uint8)
    image[100:200, 300:420] = 255
    tensor, placement = preprocess(image, 320)
    ys, xs = np.nonzero(tensor[0, 0] > 0.9)
    found = np.array([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], np.float32)
    assert placement.to_source(found)[0].tolist() == pytest.approx([300, 100, 420, 200], abs=2)


def yolo_output(anchors: list[tuple[float, float, float, float, list[float]]]) -> np.ndarray:
    """(1, 4 + classes, anchors) from (cx, cy, w, h, class scores) per anchor."""
    return np.array([[cx, cy, w, h, *scores] for cx, cy, w, h, scores in anchors], np.float32).T[None]


def test_decode_keeps_each_anchors_best_class_above_threshold() -> None:
    output = yolo_output(
        [
            (50, 50, 20, 10, [0.9, 0.1]),
            (10, 10, 4, 4, [0.2, 0.3]),  # best class below the threshold
            (30, 60, 10, 20, [0.1, 0.6]),
        ]
    )
    found, _ = decode(output, num_classes=2, conf_threshold=0.5)
    assert found.xyxy.tolist() == [[40, 45, 60, 55], [25, 50, 35, 70]]
    assert found.confidence.tolist() == pytest.approx([0.9, 0.6])
    assert found.class_id.tolist() == [0, 1]


def test_decode_names_a_class_count_the_output_does_not_have() -> None:
    with pytest.raises(ValueError, match=r"expected output \(1, 9, anchors\) for 5 classes, got \(1, 10, 3\)"):
        decode(np.zeros((1, 10, 3), np.float32), num_classes=5, conf_threshold=0.25)


BOXES = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30]], np.float32)  # IoU(0, 1) = 81 / 119


def test_nms_drops_the_weaker_of_two_overlapping_boxes() -> None:
    scores = np.array([0.9, 0.8, 0.7], np.float32)
    assert nms(BOXES, scores, iou_threshold=0.5).tolist() == [0, 2]
    assert nms(BOXES, scores, iou_threshold=0.7).tolist() == [0, 1, 2]
    assert nms(BOXES, np.array([0.5, 0.8, 0.9]), iou_threshold=0.5).tolist() == [2, 1]


def test_nms_only_suppresses_within_a_class() -> None:
    scores = np.array([0.9, 0.8, 0.7], np.float32)
    assert class_aware_nms(BOXES, scores, np.array([0, 1, 0]), 0.5).tolist() == [0, 1, 2]
    assert class_aware_nms(BOXES, scores, np.array([1, 1, 0]), 0.5).tolist() == [0, 2]
    assert class_aware_nms(np.zeros((0, 4)), np.zeros(0), np.zeros(0), 0.5).tolist() == []


def test_postprocess_maps_boxes_through_letterbox_and_roi_offset() -> None:
    # A 128 x 96 region at (200, 300) of the frame, letterboxed to 64: scale 0.5, 8 rows of padding top and bottom.
    placement = Letterbox(scale=0.5, pad_x=0, pad_y=8, src_width=128, src_height=96, size=64)
    output = yolo_output(
        [
            (20, 28, 8, 8, [0.1, 0.95]),  # input box 16,24 - 24,32
            (21, 28, 8, 8, [0.1, 0.90]),  # the same defect again: suppressed
            (40, 3, 6, 4, [0.8, 0.1]),  # wholly in the top padding: clipped to nothing, dropped
        ]
    )
    found = postprocess(output, 2, placement, conf_threshold=0.5, iou_threshold=0.45, offset=(200, 300))
    assert len(found) == 1
    det = found[0]
    assert (int(det.class_id[0]), ("open", "short")[det.class_id[0]]) == (1, "short")
    assert det.confidence[0] == pytest.approx(0.95)
    assert tuple(det.xyxy[0].tolist()) == (232, 332, 248, 348)
    assert det.area_px[0] == 256


def test_postprocess_of_nothing_above_threshold_is_empty() -> None:
    placement = Letterbox(scale=1.0, pad_x=0, pad_y=0, src_width=64, src_height=64, size=64)
    output = yolo_output([(20, 20, 8, 8, [0.1, 0.2])])
    assert len(postprocess(output, 2, placement, conf_threshold=0.25, iou_threshold=0.45)) == 0


def test_class_aware_nms_never_suppresses_across_classes_even_with_negative_corners() -> None:
    boxes = np.array([[612, 612, 640, 640], [-29, -29, 10, 10]], dtype=np.float32)
    kept = class_aware_nms(boxes, np.array([0.9, 0.8]), np.array([0, 1]), iou_threshold=0.45)
    assert sorted(kept.tolist()) == [0, 1]


def test_a_sliver_of_an_image_letterboxes_to_at_least_one_pixel() -> None:
    image = np.zeros((1, 2000, 3), dtype=np.uint8)
    out, _ = letterbox(image, 640)
    assert out.shape == (640, 640, 3)
