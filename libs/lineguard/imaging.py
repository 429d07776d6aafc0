"""Image bytes to pixels, with errors that say what was wrong with the frame."""

from __future__ import annotations

import struct
from dataclasses import dataclass

import cv2
import numpy as np

from lineguard.config import CameraSettings, LineConfig, RecipeSettings
from lineguard.imageheader import HeaderError, ImageHeader, read_header
from lineguard.v1.frame_pb2 import Frame

# Magic numbers of the encodings cameras and files deliver.
_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\xff\xd8\xff", "jpeg"),
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"BM", "bmp"),
    (b"II*\x00", "tiff"),
    (b"MM\x00*", "tiff"),
)


# The HTTP content type of each encoding a frame may carry (Frame.encoding), for the archive and the dashboard.
CONTENT_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "jpg": "image/jpeg", "bmp": "image/bmp"}


def content_type(encoding: str) -> str:
    """The content type of a frame encoded as `encoding` (any case); application/octet-stream when unknown."""
    return CONTENT_TYPES.get(encoding.lower(), "application/octet-stream")


class ImageError(ValueError):
    """The bytes are not a usable image; the message says why."""


class ImageTooLarge(ImageError):
    """The image is over a size limit; refused from its header, before any pixel is decoded."""


@dataclass(frozen=True)
class ImageLimits:
    """The most an image may be: encoded bytes, and pixels (width x height) once decoded."""

    max_pixels: int
    max_bytes: int

    @classmethod
    def of(cls, camera: CameraSettings) -> ImageLimits:
        return cls(camera.max_pixels, camera.max_bytes)


# What an image from no camera in particular (the CLI's, the API's) may be: the camera settings' defaults.
DEFAULT_LIMITS = ImageLimits(
    CameraSettings.model_fields["max_pixels"].default, CameraSettings.model_fields["max_bytes"].default
)


def check_size(data: bytes, limits: ImageLimits) -> ImageHeader:
    """The header of `data` if it is within `limits`; ImageTooLarge with the sizes if not, ImageError when its
    header does not say its size."""
    if len(data) > limits.max_bytes:
        raise ImageTooLarge(f"image is {len(data)} bytes, over the limit of {limits.max_bytes} (max_bytes)")
    try:
        header = read_header(data)
    except HeaderError as exc:
        raise ImageError(f"image size unreadable from its header: {exc}") from None
    if header.pixels > limits.max_pixels:
        raise ImageTooLarge(
            f"{header.encoding} image is {header.width} x {header.height} = {header.pixels} pixels "
            f"({len(data)} bytes), over the limit of {limits.max_pixels} pixels (max_pixels)"
        )
    return header


class FrameError(ValueError):
    """This frame can never be inspected (not an image, unknown recipe, region outside it); the message says why."""


@dataclass(frozen=True)
class ROI:
    x: int
    y: int
    width: int
    height: int

    @classmethod
    def from_list(cls, values: list[int] | tuple[int, ...] | None) -> ROI | None:
        return None if values is None else cls(*[int(v) for v in values])

    def crop(self, image: np.ndarray) -> np.ndarray:
        h, w = image.shape[:2]
        if self.x + self.width > w or self.y + self.height > h:
            raise ImageError(f"region {self.x},{self.y} {self.width}x{self.height} lies outside the {w}x{h} image")
        return image[self.y : self.y + self.height, self.x : self.x + self.width]


def sniff_encoding(data: bytes) -> str | None:
    for magic, name in _SIGNATURES:
        if data.startswith(magic):
            return name
    return None


def check_encoded(
    data: bytes, *, expected_encoding: str | None = None, limits: ImageLimits = DEFAULT_LIMITS
) -> ImageHeader:
    """The header of an encoded image, once what can be told without decoding is checked: ImageError when it is
    empty, not an image, of an unexpected encoding, a JPEG without its end, or (ImageTooLarge) over `limits`."""
    if not data:
        raise ImageError("frame holds no image data (0 bytes)")
    found = sniff_encoding(data)
    if found is None:
        raise ImageError(f"frame is not an image: {len(data)} bytes starting {data[:8].hex()} match no known encoding")
    if expected_encoding and expected_encoding.lower() not in (found, "jpg" if found == "jpeg" else found):
        raise ImageError(f"frame says encoding {expected_encoding!r} but its bytes are {found}")
    if found == "jpeg" and not data.rstrip(b"\x00").endswith(b"\xff\xd9"):
        raise ImageError(f"truncated jpeg: {len(data)} bytes without the end-of-image marker")
    return check_size(data, limits)


# OpenCV's reduced reads, by factor (colour, grey): a JPEG is decoded at 1/2, 1/4 or 1/8 by its DCT, a fraction of
# a full decode; any other encoding is decoded whole and halved, quartered... by OpenCV.
_READ_FLAGS = {
    1: (cv2.IMREAD_COLOR, cv2.IMREAD_GRAYSCALE),
    2: (cv2.IMREAD_REDUCED_COLOR_2, cv2.IMREAD_REDUCED_GRAYSCALE_2),
    4: (cv2.IMREAD_REDUCED_COLOR_4, cv2.IMREAD_REDUCED_GRAYSCALE_4),
    8: (cv2.IMREAD_REDUCED_COLOR_8, cv2.IMREAD_REDUCED_GRAYSCALE_8),
}


def decode_image(
    data: bytes,
    *,
    expected_encoding: str | None = None,
    grey: bool = False,
    limits: ImageLimits = DEFAULT_LIMITS,
    reduced: int = 1,
) -> np.ndarray:
    """Decode an encoded image to a BGR uint8 array (H, W, 3), or with grey to (H, W): what a model that
    looks at intensity alone takes (a paired one), in a fifth of the time of colour and a conversion.
    `reduced` (2, 4 or 8) decodes it that many times smaller on each side (a JPEG's sides rounded up, others'
    down): a thumbnail's read.

    Raises ImageError naming the cause: empty, not an image, truncated, of an unexpected encoding, or
    (ImageTooLarge, from the header, before decoding) over `limits`."""
    if reduced not in _READ_FLAGS:
        raise ValueError(f"reduced must be one of {sorted(_READ_FLAGS)}, not {reduced}")
    found = check_encoded(data, expected_encoding=expected_encoding, limits=limits).encoding
    image = cv2.imdecode(np.frombuffer(data, np.uint8), _READ_FLAGS[reduced][grey])
    if image is None or image.size == 0:
        raise ImageError(f"corrupt {found}: the decoder could not read {len(data)} bytes")
    return image


# PNG for images the line makes itself and decodes again (inference and OCR each decode every frame): zlib's fastest
# level and no row filter, so a decoder only inflates. On the simulator's 640 x 800 boards
# (benchmarks/frame_encoding.py): 0.57 ms to decode against 1.74 ms with OpenCV's default filters, 1.11 ms to encode
# (1.20), 23.3 KiB (25.3); lossless all the same. Not for a camera's noisy pixels, which the filters compress better.
FAST_PNG = (cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_NONE)


def encode_image(image: np.ndarray, encoding: str = "png", params: tuple[int, ...] = ()) -> bytes:
    ok, buf = cv2.imencode(f".{encoding}", image, list(params))
    if not ok:
        raise ImageError(f"could not encode a {image.shape} image as {encoding}")
    return buf.tobytes()


# An 8-bit image's BMP palette: grey level i is (i, i, i).
_GREY_PALETTE = np.repeat(np.arange(256, dtype=np.uint8), 4).reshape(256, 4)
_GREY_PALETTE[:, 3] = 0
_GREY_PALETTE_BYTES = _GREY_PALETTE.tobytes()


def encode_bmp(image: np.ndarray) -> bytes:
    """The BMP of an 8-bit grey (H, W) or BGR (H, W, 3) image, written without OpenCV: the same pixels as
    encode_image(image, "bmp") gives, but its rows top-down (a negative height, as the format allows; OpenCV and
    lineguard.imageheader read it), so a frame whose rows need no padding is its header and one copy of
    its pixels: a quarter of OpenCV's time on a camera's Mono8 frame (benchmarks/capture.py --encode).
    ImageError for any other image."""
    if image.dtype != np.uint8 or not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)):
        raise ImageError(f"could not encode a {image.shape} {image.dtype} image as bmp: 8-bit grey or BGR only")
    height, width = image.shape[:2]
    channels = 1 if image.ndim == 2 else 3
    row = width * channels
    padded = -row % 4  # each BMP row is a multiple of 4 bytes
    if padded:
        image = np.pad(image.reshape(height, row), ((0, 0), (0, padded)))
    palette = _GREY_PALETTE_BYTES if channels == 1 else b""
    offset = 14 + 40 + len(palette)
    size = (row + padded) * height
    header = struct.pack(
        "<2sIHHIIiiHHIIiiII", b"BM", offset + size, 0, 0, offset,
        40, width, -height, 1, 8 * channels, 0, size, 2835, 2835, 256 if channels == 1 else 0, 0,
    )  # fmt: skip
    return b"".join((header, palette, np.ascontiguousarray(image).data))


def frame_pixels(frame: Frame, config: LineConfig, *, grey: bool = False) -> tuple[RecipeSettings, np.ndarray]:
    """The recipe a frame's part is judged by, and the frame's pixels (BGR, or with grey (H, W));
    FrameError says why not."""
    part = frame.part
    try:
        recipe = config.recipe(part.recipe_id)
    except KeyError as exc:
        raise FrameError(f"frame of part {part.inspection_id}: {exc.args[0]}") from None
    if frame.WhichOneof("payload") == "object_key":
        # The services fetch such an image first (lineguard.bus.bigframes.fetching_images): a caller that did not.
        raise FrameError(
            f"frame carries object_key {frame.object_key!r}: its image was not fetched from the object store"
        )
    try:
        limits = frame_limits(frame, config)
        return recipe, decode_image(frame.data, expected_encoding=frame.encoding or None, grey=grey, limits=limits)
    except ImageTooLarge as exc:
        raise FrameError(f"frame of part {part.inspection_id} from camera {frame.camera_id!r}: {exc}") from None
    except ImageError as exc:
        raise FrameError(str(exc)) from None


def frame_limits(frame: Frame, config: LineConfig) -> ImageLimits:
    """The limits of the camera of the frame's station (the defaults for a station the line does not have)."""
    try:
        return ImageLimits.of(config.station(frame.part.station).camera)
    except KeyError:
        return DEFAULT_LIMITS
