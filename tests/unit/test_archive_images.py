"""The archive's renderings: decoded only as far as the kinds kept need, each row's size that of its file."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from lineguard.config import LineConfig, RecipeSettings
from lineguard.imaging import ImageError, decode_image, encode_image
from lineguard.services.results.archive import images
from lineguard.services.results.archive.images import Box, reduction, renderings
from lineguard.sim.lineconfig import demo_config_dict
from lineguard.testing.boards import BOARD_STEMS, board_frame
from lineguard.v1.frame_pb2 import Frame

SETTINGS = LineConfig(
    **demo_config_dict(nats_url="nats://127.0.0.1:1", database_url="sqlite://", opcua_endpoint="opc.tcp://127.0.0.1:1/")
).archive


def full_image_recipe() -> RecipeSettings:
    return RecipeSettings(retention={"good_images": "image"})


@pytest.mark.parametrize(
    ("longest", "thumbnail_px", "factor"),
    [(640, 256, 2), (255, 256, 1), (512, 256, 2), (1023, 256, 2), (1024, 256, 4), (8000, 256, 8), (640, 640, 1)],
)
def test_the_reduced_read_leaves_the_longest_side_at_least_the_thumbnails(
    longest: int, thumbnail_px: int, factor: int
) -> None:
    assert reduction(longest, thumbnail_px) == factor


def test_a_reduced_decode_is_smaller_by_its_factor_and_other_factors_are_refused() -> None:
    pixels = np.random.default_rng(1).integers(0, 255, (99, 130, 3), dtype=np.uint8)
    # A JPEG's DCT scaling rounds up, OpenCV's resize of any other encoding down.
    for encoding, rows in (("png", (49, 24)), ("jpeg", (50, 25))):
        assert decode_image(encode_image(pixels, encoding), reduced=2).shape == (rows[0], 65, 3)
        assert decode_image(encode_image(pixels, encoding), reduced=4, grey=True).shape == (
            rows[1],
            32 + (encoding == "jpeg"),
        )
    with pytest.raises(ValueError, match="reduced must be one of"):
        decode_image(encode_image(pixels, "png"), reduced=3)


@pytest.mark.parametrize("encoding", ["jpeg", "png"])
def test_a_pass_thumbnail_from_the_reduced_read_is_the_full_reads_within_a_few_levels(encoding: str) -> None:
    board = decode_image(board_frame(1, BOARD_STEMS[0]).data)
    tall = np.vstack([board, np.full((160, 640, 3), 255, np.uint8)])  # the simulator's 640 x 800
    frame = Frame(encoding=encoding, data=encode_image(tall, encoding), width=640, height=800)
    (thumb,) = renderings(frame, "PASS", [], None, SETTINGS)
    small = cv2.imdecode(np.frombuffer(thumb.data, np.uint8), cv2.IMREAD_COLOR)
    assert (thumb.kind, thumb.content_type, thumb.width, thumb.height) == ("thumbnail", "image/jpeg", 205, 256)
    assert small.shape == (256, 205, 3)
    # What the full decode and an area resize made before: the same picture, not a shifted or aliased one.
    before = cv2.resize(decode_image(frame.data), (205, 256), interpolation=cv2.INTER_AREA)
    assert float(np.abs(small.astype(float) - before.astype(float)).mean()) < 3.0


def test_a_pass_kept_whole_is_the_cameras_bytes_sized_from_its_header() -> None:
    frame = board_frame(1, BOARD_STEMS[0])
    (image,) = renderings(frame, "PASS", [], full_image_recipe(), SETTINGS)
    assert (image.kind, image.data, image.content_type, image.width, image.height) == (
        "image",
        frame.data,
        "image/jpeg",
        640,
        640,
    )


def test_a_fail_keeps_its_bytes_and_an_overlay_of_the_same_size() -> None:
    frame = board_frame(1, BOARD_STEMS[0])
    image, drawn = renderings(frame, "FAIL", [Box("open", 0.9, 10, 10, 100, 100)], None, SETTINGS)
    assert (image.kind, image.data, image.width, image.height) == ("image", frame.data, 640, 640)
    overlay = cv2.imdecode(np.frombuffer(drawn.data, np.uint8), cv2.IMREAD_COLOR)
    assert (drawn.kind, drawn.width, drawn.height, overlay.shape) == ("overlay", 640, 640, (640, 640, 3))


def test_a_fail_with_nothing_to_draw_keeps_its_bytes_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    frame = board_frame(1, BOARD_STEMS[0])

    def no_decode(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("an image was decoded for a part with nothing to draw")

    monkeypatch.setattr(images, "decode_image", no_decode)
    (image,) = renderings(frame, "FAIL", [], None, SETTINGS)  # an OVERLOAD, a TIMEOUT, a code's FAIL
    assert (image.kind, image.data, image.width, image.height) == ("image", frame.data, 640, 640)


@pytest.mark.parametrize("verdict", ["PASS", "FAIL"])
def test_bytes_that_are_no_image_are_refused_whatever_is_kept(verdict: str) -> None:
    for recipe in (None, full_image_recipe()):
        with pytest.raises(ImageError, match="not an image"):
            renderings(Frame(encoding="png", data=b"not an image at all"), verdict, [], recipe, SETTINGS)
    truncated = board_frame(1, BOARD_STEMS[0]).data[:-200]
    with pytest.raises(ImageError, match="truncated jpeg"):
        renderings(Frame(encoding="jpeg", data=truncated), verdict, [], full_image_recipe(), SETTINGS)
