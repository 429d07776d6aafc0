"""The folder camera (`kind: folder`): replays the images of a folder (jpg, png, bmp) in file-name order, one
per grab, each with the camera's golden reference when one is configured."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Literal

from pydantic import Field

from lineguard.config import CameraSettings
from lineguard.contracts import now_ns
from lineguard.services.capture.sources import CameraError, CameraSource, CapturedImage
from lineguard.services.capture.sources.files import Playlist, Reference, file_image, read_reference
from lineguard.v1.common_pb2 import Part

KEY = "folder"
FOLDER_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


class Settings(CameraSettings):
    kind: Literal["folder"] = "folder"
    path: str = Field(min_length=1, description="the folder of images to replay")
    loop: bool = Field(True, description="start again from the first image when the folder's images run out")
    reference: str | None = Field(
        None,
        description="the golden (defect-free) image every frame is compared with "
        "by a paired model, registered to the camera's view",
    )


def open_camera(station_id: str, settings: Settings) -> CameraSource:
    return FolderSource(station_id, settings)


class FolderSource:
    """Replays the images of a folder (jpg, png, bmp) in file-name order."""

    def __init__(self, station_id: str, settings: Settings):
        self.camera_id = f"folder:{station_id}"
        folder = Path(settings.path)
        if not folder.is_dir():
            raise CameraError(f"camera {self.camera_id}: folder {folder} does not exist")
        paths = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in FOLDER_SUFFIXES)
        if not paths:
            raise CameraError(
                f"camera {self.camera_id}: folder {folder} holds no images ({', '.join(FOLDER_SUFFIXES)})"
            )
        self.playlist = Playlist(self.camera_id, paths, settings.loop)
        self.reference = read_reference(self.camera_id, Path(settings.reference)) if settings.reference else Reference()

    def grab(self, part: Part) -> CapturedImage:
        path = self.playlist.next()
        return replace(
            file_image(self.camera_id, path, path.resolve().as_uri(), now_ns()),
            reference=self.reference.data,
            reference_encoding=self.reference.encoding,
        )
