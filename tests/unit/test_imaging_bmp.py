"""encode_bmp: numpy's BMP of a camera's 8-bit frame decodes to the pixels OpenCV's own BMP of it does, whatever
the row padding, and its header says its size; other images are refused naming why."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from lineguard.imageheader import read_header
from lineguard.imaging import ImageError, decode_image, encode_bmp, encode_image, sniff_encoding


@pytest.mark.parametrize("shape", [(512, 512), (37, 53), (5, 1), (37, 53, 3), (8, 4, 3), (1, 1, 3)])
def test_the_same_pixels_as_opencvs_bmp(shape: tuple[int, ...]) -> None:
    pixels = np.random.default_rng(7).integers(0, 256, shape, dtype=np.uint8)
    data = encode_bmp(pixels)
    assert sniff_encoding(data) == "bmp"
    header = read_header(data)
    assert (header.width, header.height) == (shape[1], shape[0])
    ours = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    theirs = cv2.imdecode(np.frombuffer(encode_image(pixels, "bmp"), np.uint8), cv2.IMREAD_UNCHANGED)
    assert ours.shape == theirs.shape == pixels.shape
    assert np.array_equal(ours, pixels) and np.array_equal(theirs, pixels)
    # As the services read a frame: grey for a paired model, BGR otherwise.
    assert np.array_equal(decode_image(data, grey=pixels.ndim == 2, expected_encoding="bmp"), pixels)


def test_a_view_is_written_as_its_pixels() -> None:
    # A camera's region, or a flipped frame: not contiguous in memory.
    pixels = np.random.default_rng(8).integers(0, 256, (40, 60), dtype=np.uint8)
    view = pixels[5:30:2, 7:50]
    decoded = cv2.imdecode(np.frombuffer(encode_bmp(view), np.uint8), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(decoded, view)


@pytest.mark.parametrize(
    ("pixels", "why"),
    [(np.zeros((4, 4), np.uint16), "uint16"), (np.zeros((4, 4, 4), np.uint8), r"\(4, 4, 4\)")],
)
def test_other_images_are_refused_naming_why(pixels: np.ndarray, why: str) -> None:
    with pytest.raises(ImageError, match=why):
        encode_bmp(pixels)
