"""Where capture gets its images: one small interface, one module per camera kind.

A kind (simulator.py, folder.py, ...) declares KEY, its own Settings and `open_camera`; the list of
kinds is the `lineguard.cameras` entry points (lineguard.config.seams.CAMERAS), so a station's
`camera.kind` picks its module without this package naming any of them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from lineguard.config import CAMERAS, CameraSettings
from lineguard.config.model import ProductCamera
from lineguard.imaging import encode_bmp, encode_image
from lineguard.v1.common_pb2 import Part

__all__ = ["CameraError", "CameraSource", "CapturedImage", "TakesProductSettings", "Watched", "open_source"]


class CameraError(RuntimeError):
    """The camera cannot deliver an image; the message names the camera and the cause."""


@dataclass(frozen=True)
class CapturedImage:
    data: bytes  # the encoded file, as it goes into Frame.data
    encoding: str  # "png", "jpeg", "bmp"
    width: int
    height: int
    channels: int
    source_uri: str
    captured_unix_ns: int
    reference: bytes = b""  # the part's defect-free reference image, encoded; empty when none
    reference_encoding: str = ""
    # The decoded image, when the source had it anyway (files read to learn their size, the simulator's board, a
    # camera's buffer): capture measures its quality from it instead of decoding the file again.
    pixels: np.ndarray | None = field(default=None, repr=False, compare=False)

    @classmethod
    def encoded(cls, pixels: np.ndarray, encoding: str, source_uri: str, captured_unix_ns: int) -> CapturedImage:
        """A camera's pixels as they go on the bus, encoded as `encoding` says. BMP is written by numpy: OpenCV's
        writer cost three times as much on a grab's thread (benchmarks/capture.py --encode); only 8-bit grey or BGR
        pixels reach it (the kinds' Settings refuse bmp for 16-bit formats)."""
        data = encode_bmp(pixels) if encoding == "bmp" else encode_image(pixels, encoding)
        height, width = pixels.shape[:2]
        return cls(data, encoding, width, height, channels(pixels), source_uri, captured_unix_ns, pixels=pixels)


def channels(image: np.ndarray) -> int:
    return 1 if image.ndim == 2 else int(image.shape[2])


class CameraSource(Protocol):
    camera_id: str

    def grab(self, part: Part) -> CapturedImage:
        """One image of `part`; raises CameraError when there is none to give."""
        ...


@runtime_checkable
class Watched(Protocol):
    """A source that can go away and come back (a network camera): it says why it cannot grab now, for the
    station's health, and has threads and a connection to close."""

    def problem(self) -> str | None:
        """Why a grab would fail now (disconnected, reconnecting); None while it would not."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class TakesProductSettings(Protocol):
    """A camera whose exposure and gain a recipe sets (`recipes.<id>.camera`; the gige kind): capture hands it the
    product's settings when a part of another recipe than the last comes, before grabbing it."""

    def set_product(self, product: ProductCamera) -> None:
        """Raises CameraError naming what the camera cannot do."""
        ...


def open_source(station_id: str, settings: CameraSettings) -> CameraSource:
    """The source of the kind the station's `camera.kind` names; raises CameraError when it cannot deliver."""
    source: CameraSource = CAMERAS.factory_of(settings.kind)(station_id, settings)
    return source
