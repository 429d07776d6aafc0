"""The one detections type: shapes and values checked once, empty, selection by numpy index."""

from __future__ import annotations

import numpy as np
import pytest

from lineguard.vision.detections import Detections


def three(segment: bool = False) -> Detections:
    masks = (
        {
            "polygon": (np.array([[1, 1], [4, 1], [4, 4]]), np.zeros((0, 2)), np.array([[20, 20], [25, 28]])),
            "mask_px": [6, 0, 12],
        }
        if segment
        else {}
    )
    return Detections(
        xyxy=[[0, 0, 10, 10], [5, 5, 7, 9], [20, 20, 30, 30]], class_id=[1, 0, 1], confidence=[0.9, 0.4, 0.6], **masks
    )


def test_arrays_get_the_documented_dtypes_and_shapes() -> None:
    found = three(segment=True)
    assert len(found) == 3
    assert (found.xyxy.dtype, found.xyxy.shape) == (np.float32, (3, 4))
    assert (found.class_id.dtype, found.confidence.dtype) == (np.int64, np.float32)
    assert found.polygon is not None and found.mask_px is not None and found.mask_px.dtype == np.int64
    assert [p.shape for p in found.polygon] == [(3, 2), (0, 2), (2, 2)] and found.polygon[0].dtype == np.float32


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"xyxy": [0, 0, 10, 10]}, r"xyxy must be \(N, 4\) box corners, got shape \(4,\)"),
        ({"xyxy": [[0, 0, 10]]}, r"xyxy must be \(N, 4\) box corners, got shape \(1, 3\)"),
        ({"confidence": [0.9, 0.4]}, r"confidence must be \(3,\) for 3 boxes, got shape \(2,\)"),
        ({"class_id": [[1, 0, 1]]}, r"class_id must be \(3,\) for 3 boxes, got shape \(1, 3\)"),
        ({"class_id": [1.0, 0.0, 1.0]}, r"class_id must be integers, got float64"),
        ({"class_id": [1, -1, 1]}, r"class_id must be >= 0, got -1"),
        ({"polygon": (np.zeros((0, 2)),) * 2, "mask_px": [0, 0, 0]}, r"polygon holds 2 outlines for 3 detections"),
        ({"polygon": (np.zeros((3, 3)),) * 3, "mask_px": [0, 0, 0]}, r"polygon\[0\] must be \(K, 2\) x y points"),
        ({"polygon": (np.zeros((0, 2)),) * 3}, r"polygon and mask_px come together"),
        ({"mask_px": [1, 2, 3]}, r"polygon and mask_px come together"),
        ({"polygon": (np.zeros((0, 2)),) * 3, "mask_px": [1, 2]}, r"mask_px must be \(3,\) for 3 boxes"),
    ],
)
def test_shapes_that_do_not_agree_are_refused(fields: dict, message: str) -> None:
    good = {"xyxy": [[0, 0, 10, 10]] * 3, "class_id": [1, 0, 1], "confidence": [0.9, 0.4, 0.6]}
    with pytest.raises(ValueError, match=message):
        Detections(**{**good, **fields})


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("xyxy", [[0, 0, np.nan, 10]], r"xyxy holds 1 values that are not numbers \(NaN / inf\)"),
        ("confidence", [np.inf], r"confidence holds 1 values that are not numbers"),
        ("polygon", (np.array([[1.0, np.nan]]),), r"polygon\[0\] holds 1 values that are not numbers"),
    ],
)
def test_a_value_that_is_not_a_number_is_refused(field: str, value: object, message: str) -> None:
    fields = {
        "xyxy": [[0, 0, 10, 10]],
        "class_id": [0],
        "confidence": [0.5],
        "polygon": (np.zeros((0, 2)),),
        "mask_px": [0],
        field: value,
    }
    with pytest.raises(ValueError, match=message):
        Detections(**fields)


def test_empty_has_no_rows_and_the_shapes_of_many() -> None:
    empty = Detections.empty()
    assert len(empty) == 0 and not empty
    assert empty.xyxy.shape == (0, 4) and empty.class_id.shape == (0,) and empty.confidence.shape == (0,)
    assert empty.polygon is None and empty.area_px.shape == (0,)
    assert len(empty[empty.confidence >= 0.5]) == 0


def test_rows_are_selected_as_numpy_selects_them() -> None:
    found = three(segment=True)
    sure = found[found.confidence >= 0.5]
    assert sure.class_id.tolist() == [1, 1] and sure.xyxy[:, 0].tolist() == [0, 20]
    assert sure.polygon is not None and [len(p) for p in sure.polygon] == [3, 2]
    assert sure.mask_px is not None and sure.mask_px.tolist() == [6, 12]
    one = found[1]
    assert len(one) == 1 and one.confidence.tolist() == pytest.approx([0.4]) and one.class_id.tolist() == [0]
    assert found[1:].class_id.tolist() == [0, 1] and found[[2, 0]].confidence.tolist() == pytest.approx([0.6, 0.9])
    with pytest.raises(IndexError):
        found[np.array([True, False])]
    with pytest.raises(IndexError):
        found[3]


def test_rows_are_not_iterated_one_detections_at_a_time() -> None:
    with pytest.raises(TypeError):
        iter(three())


def test_the_area_is_the_masks_pixels_where_there_are_masks_else_the_boxes() -> None:
    assert three().area_px.tolist() == [100, 8, 100]
    assert three(segment=True).area_px.tolist() == [6, 0, 12]
    # A box with its corners the wrong way round has no area, not a negative one.
    assert Detections([[10, 10, 0, 20]], [0], [0.5]).area_px.tolist() == [0]
