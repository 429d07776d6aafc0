"""Where capture gets its images: one small interface, one source per camera kind.

Both sources replay files in a fixed order, one image per grab, so a run (and a
test) always sees the same parts in the same order."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from lineguard.config import CameraSettings
from lineguard.contracts import now_ns, serial_for_sequence
from lineguard.imaging import encode_image, sniff_encoding
from lineguard.modelops.deeppcb import DeepPCBError, read_boxes
from lineguard.samples import SAMPLE_BOARDS
from lineguard.services.capture.stamping import stamp_serial
from lineguard.v1.common_pb2 import Part
from lineguard.vision.paired import repaired_board

FOLDER_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


class CameraError(RuntimeError):
    """The camera cannot deliver an image; the message names the camera and the cause."""


@dataclass(frozen=True)
class CapturedImage:
    data: bytes            # the encoded file, as it goes into Frame.data
    encoding: str          # "png", "jpeg", "bmp"
    width: int
    height: int
    channels: int
    source_uri: str
    captured_unix_ns: int
    reference: bytes = b""          # the part's defect-free reference image, encoded; empty when none
    reference_encoding: str = ""


class CameraSource(Protocol):
    camera_id: str

    def grab(self, part: Part) -> CapturedImage:
        """One image of `part`; raises CameraError when there is none to give."""
        ...


def open_source(station_id: str, settings: CameraSettings) -> CameraSource:
    """The source the station's `camera.kind` names; raises CameraError when it cannot deliver."""
    if settings.kind == "simulator":
        return SimulatorSource(station_id, settings)
    if settings.kind == "folder":
        return FolderSource(station_id, settings)
    raise CameraError(f"station {station_id!r}: unknown camera kind {settings.kind!r}")


class _Playlist:
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


def simulator_playlist(folder: Path = SAMPLE_BOARDS) -> list[Path]:
    """The boards the simulator replays: each board with defects (`_test.jpg`) followed by its
    defect-free template (`_temp.jpg`), whose turn is a good part; boards in name order, so bad and
    good parts alternate."""
    paths: list[Path] = []
    for test in sorted(folder.glob("*_test.jpg")):
        paths.append(test)
        template = test.with_name(test.name.replace("_test.jpg", "_temp.jpg"))
        if template.is_file():
            paths.append(template)
    return paths


class SimulatorSource:
    """Replays sample boards; with `stamp_serial`, prints the part's serial below each board."""

    def __init__(self, station_id: str, settings: CameraSettings):
        self.camera_id = f"simulator:{station_id}"
        folder = Path(settings.path) if settings.path else SAMPLE_BOARDS
        if not folder.is_dir():
            raise CameraError(f"camera {self.camera_id}: board folder {folder} does not exist")
        paths = simulator_playlist(folder)
        if not paths:
            raise CameraError(f"camera {self.camera_id}: board folder {folder} holds no *_test.jpg boards")
        self.playlist = _Playlist(self.camera_id, paths, settings.loop)
        self.stamp = settings.stamp_serial
        self._boards: dict[Path, np.ndarray] = {}
        self._references: dict[Path, _Reference] = {}

    def grab(self, part: Part) -> CapturedImage:
        path = self.playlist.next()
        captured = now_ns()
        reference = self._reference(path)
        repair = _repair_sources(path)
        uri = f"simulator:{repair[0].name}#repaired" if repair else f"simulator:{path.name}"
        if not self.stamp and not repair:
            return replace(_file_image(self.camera_id, path, uri, captured), reference=reference.data,
                           reference_encoding=reference.encoding)
        image = self._board(path)
        if self.stamp:
            # The serial strip goes below the board, so the board keeps its place and the reference
            # (the board's size) still covers the recipe's inspect_roi.
            image = stamp_serial(image, serial_for_sequence(part.sequence))
        # PNG: lossless, so the printed code reads back exactly.
        return CapturedImage(encode_image(image, "png"), "png", image.shape[1], image.shape[0], _channels(image),
                             uri, captured, reference.data, reference.encoding)

    def _reference(self, path: Path) -> _Reference:
        """A board's defect-free template (DeepPCB's `_temp.jpg`); a template is its own reference."""
        found = self._references.get(path)
        if found is None:
            template = path.with_name(path.name.replace("_test.jpg", "_temp.jpg"))
            found = self._references[path] = _read_reference(self.camera_id, template) if template.is_file() \
                else _Reference(b"", "")
        return found

    def _board(self, path: Path) -> np.ndarray:
        """The board's pixels; for a template's turn, the good part: the board with defects repaired from the
        template where its boxes are known, else the template itself (lineguard.vision.paired.repaired_board), so
        that a good part carries its own capture noise as on a real line, rather than its reference's exact copy."""
        board = self._boards.get(path)
        if board is None:
            board = self._read(path)
            repair = _repair_sources(path)
            if repair:
                test, annotation = repair
                damaged = self._read(test)
                try:
                    boxes = read_boxes(annotation, damaged.shape[1], damaged.shape[0])
                except DeepPCBError as exc:
                    raise CameraError(f"camera {self.camera_id}: {exc}") from None
                board = repaired_board(damaged, board, [box[1:] for box in boxes])
            self._boards[path] = board
        return board

    def _read(self, path: Path) -> np.ndarray:
        board = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if board is None:
            raise CameraError(f"camera {self.camera_id}: cannot read board image {path}")
        return board


def _repair_sources(path: Path) -> tuple[Path, Path] | None:
    """For a template's turn, the board with defects and its boxes to repair it from, when both are there."""
    if not path.name.endswith("_temp.jpg"):
        return None
    test = path.with_name(path.name.replace("_temp.jpg", "_test.jpg"))
    annotation = path.with_name(path.name.replace("_temp.jpg", ".txt"))
    return (test, annotation) if test.is_file() and annotation.is_file() else None


class FolderSource:
    """Replays the images of a folder (jpg, png, bmp) in file-name order."""

    def __init__(self, station_id: str, settings: CameraSettings):
        self.camera_id = f"folder:{station_id}"
        if not settings.path:
            raise CameraError(f"camera {self.camera_id}: camera.path must name the folder to replay")
        folder = Path(settings.path)
        if not folder.is_dir():
            raise CameraError(f"camera {self.camera_id}: folder {folder} does not exist")
        paths = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in FOLDER_SUFFIXES)
        if not paths:
            raise CameraError(f"camera {self.camera_id}: folder {folder} holds no images ({', '.join(FOLDER_SUFFIXES)})")
        self.playlist = _Playlist(self.camera_id, paths, settings.loop)

        self.reference = _read_reference(self.camera_id, Path(settings.reference)) if settings.reference \
            else _Reference(b"", "")

    def grab(self, part: Part) -> CapturedImage:
        path = self.playlist.next()
        return replace(_file_image(self.camera_id, path, path.resolve().as_uri(), now_ns()),
                       reference=self.reference.data, reference_encoding=self.reference.encoding)


@dataclass(frozen=True)
class _Reference:
    data: bytes
    encoding: str


def _read_reference(camera_id: str, path: Path) -> _Reference:
    image = _file_image(camera_id, path, path.as_posix(), 0)
    return _Reference(image.data, image.encoding)


def _file_image(camera_id: str, path: Path, uri: str, captured: int) -> CapturedImage:
    """An image file passed on as it is, with its size read from the pixels."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CameraError(f"camera {camera_id}: cannot read {path}: {exc.strerror or exc}") from None
    encoding = sniff_encoding(data)
    pixels = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED) if encoding else None
    if pixels is None:
        raise CameraError(f"camera {camera_id}: {path} is not a readable jpeg, png or bmp image")
    return CapturedImage(data, encoding, pixels.shape[1], pixels.shape[0], _channels(pixels), uri, captured)


def _channels(image: np.ndarray) -> int:
    return 1 if image.ndim == 2 else image.shape[2]
