"""Image sizes read from headers (PNG, JPEG, BMP, TIFF) and the limits checked from them before decoding; the CLI's
images meet the same limits."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from lineguard.cli import app
from lineguard.config import CameraSettings
from lineguard.imageheader import HeaderError, read_header
from lineguard.imaging import DEFAULT_LIMITS, ImageError, ImageLimits, ImageTooLarge, check_size, decode_image
from lineguard.testing.boards import board_bytes
from lineguard.testing.images import decompression_bomb_png
from lineguard.vision.model import packaged_model_path


@pytest.mark.parametrize("encoding", ["png", "jpg", "bmp", "tiff"])
@pytest.mark.parametrize("shape", [(37, 53), (37, 53, 3)])
def test_the_header_says_the_size_opencv_decodes(encoding: str, shape: tuple[int, ...]) -> None:
    ok, buf = cv2.imencode(f".{encoding}", np.zeros(shape, np.uint8))
    assert ok
    header = read_header(buf.tobytes())
    assert (header.width, header.height) == (53, 37)
    assert header.encoding == {"jpg": "jpeg"}.get(encoding, encoding)


def test_progressive_jpeg_and_the_sample_boards() -> None:
    ok, buf = cv2.imencode(".jpg", np.zeros((20, 30, 3), np.uint8), [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])
    assert ok and (read_header(buf.tobytes()).width, read_header(buf.tobytes()).height) == (30, 20)
    header = read_header(board_bytes())
    assert (header.encoding, header.width, header.height) == ("jpeg", 640, 640)


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (b"GIF89a....", "are no PNG, JPEG, BMP or TIFF"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIDAT", "without its IHDR chunk first"),
        (b"\xff\xd8\xff\xda\x00\x08", "start of scan) before any start of frame"),
        (b"\xff\xd8\xff\xe0\x00\x10JFIF", "no start of frame segment"),
        (b"BM" + b"\x00" * 10, "truncated header"),
        (b"II*\x00\xff\xff\x00\x00", "beyond the 8 bytes"),
    ],
)
def test_a_header_that_does_not_say_its_size_is_refused(data: bytes, says: str) -> None:
    with pytest.raises(HeaderError, match=says.replace("(", r"\(").replace(")", r"\)")):
        read_header(data)
    with pytest.raises(ImageError, match="size unreadable from its header"):
        check_size(data, DEFAULT_LIMITS)


def test_limits_are_the_cameras_and_say_the_sizes() -> None:
    camera = CameraSettings(kind="any", max_pixels=1000, max_bytes=2000)
    data = cv2.imencode(".png", np.zeros((40, 30), np.uint8))[1].tobytes()
    said = r"png image is 30 x 40 = 1200 pixels \(\d+ bytes\), over the limit of 1000 "
    with pytest.raises(ImageTooLarge, match=said):
        decode_image(data, limits=ImageLimits.of(camera))
    with pytest.raises(ImageTooLarge, match=r"image is \d+ bytes, over the limit of 10 \(max_bytes\)"):
        decode_image(data, limits=ImageLimits(max_pixels=10**6, max_bytes=10))
    assert decode_image(data, limits=ImageLimits(max_pixels=1200, max_bytes=len(data))).shape == (40, 30, 3)


def test_the_bomb_is_refused_by_default_before_decoding() -> None:
    bomb = decompression_bomb_png()
    assert (read_header(bomb).width, read_header(bomb).height) == (12000, 12000)
    with pytest.raises(ImageTooLarge, match="12000 x 12000 = 144000000 pixels"):
        decode_image(bomb)


def test_lineguard_model_predict_skips_a_bomb_with_its_sizes(tmp_path: Path) -> None:
    source = tmp_path / "in"
    source.mkdir()
    (source / "bomb.png").write_bytes(decompression_bomb_png())
    model, out = str(packaged_model_path()), str(tmp_path / "out")
    result = CliRunner().invoke(app, ["model", "predict", "--model", model, "--source", str(source), "--out", out])
    assert result.exit_code != 0
    assert "bomb.png" in result.output and "12000 x 12000" in result.output
    assert "1 unreadable images skipped" in result.output
