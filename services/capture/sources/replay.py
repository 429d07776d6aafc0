"""The replay camera (`kind: replay`): a recorded video file, or a folder of images with their times, played back one
frame per trigger for offline evaluation: batch inspection of stored video, or a day's images run through a new model.

- A video file (anything OpenCV's FFMPEG backend reads: mp4, mkv, avi, ...): its frames in order, each at its own
  presentation time; encoded for the bus as `encoding` says.
- A folder: its images (jpg, png, bmp) under it, at any depth, passed on as they are encoded. An image archive's
  folder kind writes `<line>/<station>/<yyyy>/<mm>/<dd>/<inspection id>/image.<ext>`: such an image's time is its
  inspection id's (a UUIDv7 holds the trigger's millisecond); its overlay (boxes drawn on it) is never replayed and
  a pass's thumbnail only with `thumbnails: true`. Any other image's time is its file's modification time.

Every frame is given once, in recorded order, never skipped. `pace` says when: `recorded` (each frame no earlier
than its recorded time after the first, sped up `speed` times, a gap longer than `max_gap_s` shortened to it: a
night without parts does not stall a replay), `fixed` (`fps` frames a second) or `free` (as fast as triggers come).
A trigger earlier than its frame waits for it. A frame's captured time is when it was replayed; where it came from
(the file, the video's frame and time) is its source_uri."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import cv2
from pydantic import Field, model_validator

from lineguard.config import CameraSettings
from lineguard.contracts import now_ns
from lineguard.services.capture.sources import CameraError, CameraSource, CapturedImage
from lineguard.services.capture.sources.files import Reference, file_image, read_reference
from lineguard.v1.common_pb2 import Part

KEY = "replay"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
# The archive's kinds of image (services/results/archive/images.py): the frame as encoded, boxes drawn, a small one.
ARCHIVED_FRAME, ARCHIVED_OVERLAY, ARCHIVED_THUMBNAIL = "image", "overlay", "thumbnail"


class Settings(CameraSettings):
    kind: Literal["replay"] = "replay"
    path: str = Field(min_length=1, description="a video file, or a folder of images (an image archive's folder)")
    pace: Literal["recorded", "fixed", "free"] = Field(
        "recorded", description="recorded: at the recorded times (x speed); fixed: fps a second; free: as triggered"
    )
    speed: float = Field(1.0, gt=0, description="recorded: this many times faster than recorded")
    fps: float | None = Field(None, gt=0, description="fixed: frames a second")
    max_gap_s: float = Field(1.0, ge=0, description="recorded: a longer gap between frames is shortened to this")
    loop: bool = Field(False, description="from the start again after the last frame (off: a grab then fails)")
    thumbnails: bool = Field(False, description="an archive folder: also replay the passes kept only as thumbnails")
    encoding: Literal["png", "jpeg", "bmp"] = Field("png", description="a video's frames as they go on the bus")
    reference: str | None = Field(
        None, description="the golden (defect-free) image every frame is compared with by a paired model"
    )

    @model_validator(mode="after")
    def _pace(self) -> Settings:
        if (self.pace == "fixed") != (self.fps is not None):
            raise ValueError("fps is the rate of pace: fixed (and only of it)")
        return self


def open_camera(station_id: str, settings: Settings) -> CameraSource:
    return ReplaySource(station_id, settings)


@dataclass
class Pacer:
    """When each frame is due (time.monotonic()), from its recorded time in seconds; the clock starts at the first."""

    pace: str
    speed: float = 1.0
    fps: float | None = None
    max_gap_s: float = 1.0
    clock: Callable[[], float] = time.monotonic
    _start: float | None = field(default=None, init=False)
    _offset_s: float = field(default=0.0, init=False)
    _previous_s: float = field(default=0.0, init=False)
    _count: int = field(default=0, init=False)

    def due(self, recorded_s: float) -> float:
        if self._start is None:
            self._start, self._offset_s, self._count = self.clock(), 0.0, 0
        elif self.pace == "recorded":
            gap = min(max(recorded_s - self._previous_s, 0.0), self.max_gap_s)
            self._offset_s += gap / self.speed
        elif self.pace == "fixed" and self.fps:
            self._offset_s = self._count / self.fps
        self._previous_s = recorded_s
        self._count += 1
        return self._start + self._offset_s if self.pace != "free" else self.clock()

    def restart(self) -> None:
        """The clock starts again at the next frame (after a loop)."""
        self._start = None


@dataclass(frozen=True)
class Recorded:
    image: CapturedImage
    recorded_s: float  # the frame's time as recorded: a video's presentation time, an archived image's trigger


class VideoFrames:
    """A video file's frames, in order, encoded one by one as they are given."""

    def __init__(self, camera_id: str, path: Path, settings: Settings):
        self.camera_id, self.path, self.settings = camera_id, path, settings
        self.count = 0
        self._capture = self._open()

    def _open(self) -> cv2.VideoCapture:
        capture = cv2.VideoCapture(str(self.path), cv2.CAP_FFMPEG)
        if not capture.isOpened():
            capture.release()
            raise CameraError(f"camera {self.camera_id}: {self.path} is not a video OpenCV's FFMPEG can read")
        width, height = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
        if width * height > self.settings.max_pixels:
            capture.release()
            raise CameraError(
                f"camera {self.camera_id}: {self.path} is {width}x{height}, over max_pixels={self.settings.max_pixels}"
            )
        return capture

    def next(self) -> Recorded | None:
        ok, pixels = self._capture.read()
        if not ok:
            if self.count == 0:
                raise CameraError(f"camera {self.camera_id}: {self.path} holds no frame OpenCV's FFMPEG can decode")
            return None
        self.count += 1
        recorded_s = self._capture.get(cv2.CAP_PROP_POS_MSEC) / 1000
        encoding = self.settings.encoding
        uri = f"{self.path.resolve().as_uri()}#frame={self.count}&t={recorded_s:.3f}"
        image = CapturedImage.encoded(pixels, encoding, uri, now_ns())
        return Recorded(image, recorded_s)

    def rewind(self) -> None:
        self._capture.release()
        self._capture = self._open()
        self.count = 0


class FolderImages:
    """A folder's images under it, in recorded order (see the module's docstring for their times)."""

    def __init__(self, camera_id: str, folder: Path, settings: Settings):
        self.camera_id = camera_id
        skipped = {ARCHIVED_OVERLAY} | (set() if settings.thumbnails else {ARCHIVED_THUMBNAIL})
        timed = []
        for path in folder.rglob("*"):
            if not path.is_file() or path.suffix.lower() not in IMAGE_SUFFIXES or path.name.startswith("."):
                continue  # a dot file is the archive's half-written image
            archived = archived_time_s(path)
            if archived is not None and path.stem in skipped:
                continue
            timed.append((archived if archived is not None else path.stat().st_mtime, path.as_posix(), path))
        if not timed:
            raise CameraError(f"camera {camera_id}: folder {folder} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        timed.sort()
        self.items = [(recorded_s, path) for recorded_s, _, path in timed]
        self.count = 0

    def next(self) -> Recorded | None:
        if self.count >= len(self.items):
            return None
        recorded_s, path = self.items[self.count]
        self.count += 1
        return Recorded(file_image(self.camera_id, path, path.resolve().as_uri(), now_ns()), recorded_s)

    def rewind(self) -> None:
        self.count = 0


def archived_time_s(path: Path) -> float | None:
    """The trigger time of an image the archive keeps under its inspection's folder (a UUIDv7); None otherwise."""
    try:
        inspection = uuid.UUID(path.parent.name)
    except ValueError:
        return None
    return (inspection.int >> 80) / 1000 if inspection.version == 7 else None


class ReplaySource:
    def __init__(self, station_id: str, settings: Settings):
        self.camera_id = f"replay:{station_id}"
        path = Path(settings.path)
        if path.is_dir():
            self.frames: VideoFrames | FolderImages = FolderImages(self.camera_id, path, settings)
        elif path.is_file():
            self.frames = VideoFrames(self.camera_id, path, settings)
        else:
            raise CameraError(f"camera {self.camera_id}: {path} does not exist")
        self.path = path
        self.loop = settings.loop
        self.pacer = Pacer(settings.pace, settings.speed, settings.fps, settings.max_gap_s)
        self.reference = read_reference(self.camera_id, Path(settings.reference)) if settings.reference else Reference()
        self._lock = threading.Lock()  # one frame per grab, in order, whichever thread grabs

    def grab(self, part: Part) -> CapturedImage:
        with self._lock:
            recorded = self.frames.next()
            if recorded is None:
                if not self.loop:
                    raise CameraError(
                        f"camera {self.camera_id}: all {self.frames.count} frames of {self.path} were replayed "
                        "and loop is off"
                    )
                self.frames.rewind()
                self.pacer.restart()
                recorded = self.frames.next()
                assert recorded is not None  # it gave frames before
            wait_s = self.pacer.due(recorded.recorded_s) - time.monotonic()
            if wait_s > 0:
                time.sleep(wait_s)
        return replace(
            recorded.image,
            captured_unix_ns=now_ns(),
            reference=self.reference.data,
            reference_encoding=self.reference.encoding,
        )
