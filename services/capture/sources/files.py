"""What the file-replaying cameras share: a playlist handed out one file per grab, and image files read as
they are (the encoded bytes go into the frame untouched, their size read from the pixels)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from lineguard.imaging import DEFAULT_LIMITS, ImageError, ImageTooLarge, check_size, sniff_encoding
from lineguard.services.capture.sources import CameraError, CapturedImage, channels


class Playlist:
    """Files handed out one per grab, in order; from the start again when `loop`."""

    def __init__(self, camera_id: str, paths: list[Path], loop: bool):
        self.camera_id = camera_id
        self.paths = paths
        self.loop = loop
        self.position = 0

    def next(self) -> Path:
        if self.position >= len(self.paths):
            if not self.loop:
                raise CameraError(f"camera {self.camera_id}: all {len(self.paths)} images were given and loop is off")
            self.position = 0
        path = self.paths[self.position]
        self.position += 1
        return path


@dataclass(frozen=True)
class Reference:
    """A part's defect-free reference image, encoded; empty when there is none."""

    data: bytes = b""
    encoding: str = ""


def read_reference(camera_id: str, path: Path) -> Reference:
    image = file_image(camera_id, path, path.as_posix(), 0)
    return Reference(image.data, image.encoding)


def file_image(camera_id: str, path: Path, uri: str, captured: int) -> CapturedImage:
    """An image file passed on as it is, with its size read from the pixels."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CameraError(f"camera {camera_id}: cannot read {path}: {exc.strerror or exc}") from None
    encoding = sniff_encoding(data)
    if encoding is not None:
        try:
            check_size(data, DEFAULT_LIMITS)  # before decoding: a file can be a decompression bomb
        except ImageTooLarge as exc:
            raise CameraError(f"camera {camera_id}: {path}: {exc}") from None
        except ImageError:
            encoding = None  # its header does not say its size: not decoded, refused below
    pixels = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED) if encoding else None
    if encoding is None or pixels is None:
        raise CameraError(f"camera {camera_id}: {path} is not a readable jpeg, png or bmp image")
    return CapturedImage(
        data, encoding, pixels.shape[1], pixels.shape[0], channels(pixels), uri, captured, pixels=pixels
    )
