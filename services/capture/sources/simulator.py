"""The simulated camera (`kind: simulator`, the default): replays DeepPCB boards in a fixed order, one per
grab, so a run (and a test) always sees the same parts in the same order."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
from pydantic import Field

from lineguard.config import CameraSettings
from lineguard.contracts import now_ns, serial_for_sequence
from lineguard.deeppcb_format import DeepPCBError, read_boxes
from lineguard.imaging import FAST_PNG, encode_image
from lineguard.samples import SAMPLE_BOARDS
from lineguard.services.capture.sources import CameraError, CameraSource, CapturedImage, channels
from lineguard.services.capture.sources.files import Playlist, Reference, file_image, read_reference
from lineguard.services.capture.stamping import stamp_serial
from lineguard.v1.common_pb2 import Part
from lineguard.vision.paired import repaired_board

KEY = "simulator"


class Settings(CameraSettings):
    kind: Literal["simulator"] = "simulator"
    path: str | None = Field(
        None,
        description="folder of DeepPCB boards (<stem>_test.jpg, <stem>_temp.jpg, "
        "<stem>.txt); the default is the packaged sample boards",
    )
    stamp_serial: bool = Field(True, description="print the part's serial as a DataMatrix in a strip below the board")
    loop: bool = Field(True, description="start again from the first board when the boards run out")


def open_camera(station_id: str, settings: Settings) -> CameraSource:
    return SimulatorSource(station_id, settings)


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
    """Replays sample boards; with `stamp_serial`, prints the part's serial below each board. Each frame
    carries the board's own template as its reference."""

    def __init__(self, station_id: str, settings: Settings):
        self.camera_id = f"simulator:{station_id}"
        folder = Path(settings.path) if settings.path else SAMPLE_BOARDS
        if not folder.is_dir():
            raise CameraError(f"camera {self.camera_id}: board folder {folder} does not exist")
        paths = simulator_playlist(folder)
        if not paths:
            raise CameraError(f"camera {self.camera_id}: board folder {folder} holds no *_test.jpg boards")
        self.playlist = Playlist(self.camera_id, paths, settings.loop)
        self.stamp = settings.stamp_serial
        self._boards: dict[Path, np.ndarray] = {}
        self._references: dict[Path, Reference] = {}

    def grab(self, part: Part) -> CapturedImage:
        path = self.playlist.next()
        captured = now_ns()
        reference = self._reference(path)
        repair = _repair_sources(path)
        uri = f"simulator:{repair[0].name}#repaired" if repair else f"simulator:{path.name}"
        if not self.stamp and not repair:
            return replace(
                file_image(self.camera_id, path, uri, captured),
                reference=reference.data,
                reference_encoding=reference.encoding,
            )
        image = self._board(path)
        if self.stamp:
            # The serial strip goes below the board, so the board keeps its place and the reference
            # (the board's size) still covers the recipe's inspect_roi.
            image = stamp_serial(image, serial_for_sequence(part.sequence))
        # PNG: lossless, so the printed code reads back exactly; written for a cheap decode (FAST_PNG).
        return CapturedImage(
            encode_image(image, "png", FAST_PNG),
            "png",
            image.shape[1],
            image.shape[0],
            channels(image),
            uri,
            captured,
            reference.data,
            reference.encoding,
            pixels=image,
        )

    def _reference(self, path: Path) -> Reference:
        """A board's defect-free template (DeepPCB's `_temp.jpg`); a template is its own reference."""
        found = self._references.get(path)
        if found is None:
            template = path.with_name(path.name.replace("_test.jpg", "_temp.jpg"))
            found = self._references[path] = (
                read_reference(self.camera_id, template) if template.is_file() else Reference()
            )
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
