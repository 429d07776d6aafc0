"""The replay camera: a video file written here and an image archive's folder written by the archive's own folder
kind, replayed in recorded order at recorded, fixed or free pace; bad input (no video, nothing left) said clearly."""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import uuid_utils
from pydantic import ValidationError

from lineguard.contracts import new_inspection_id
from lineguard.imaging import decode_image, encode_image
from lineguard.services.capture.sources import CameraError, open_source, replay
from lineguard.services.results.archive.archiver import image_key
from lineguard.services.results.archive.folder import FolderStore
from lineguard.services.results.archive.images import Rendered
from lineguard.v1.common_pb2 import Part
from lineguard.v1.frame_pb2 import Frame

VIDEO_FPS = 10


def part() -> Part:
    return Part(inspection_id=new_inspection_id(), line="l1", station="s1", recipe_id="pcb-a", sequence=1)


def grey(level: int, size: tuple[int, int] = (48, 64)) -> np.ndarray:
    return np.full((*size, 3), level, np.uint8)


@pytest.fixture
def video(tmp_path: Path) -> Path:
    """Eight frames at 10 frames/s, frame i all grey level 30 * i."""
    path = tmp_path / "shift.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), VIDEO_FPS, (64, 48))
    for i in range(8):
        writer.write(grey(30 * i))
    writer.release()
    return path


def archived(root: Path, at_s: float, level: int, kinds: tuple[str, ...] = ("image",)) -> str:
    """One part's images as the results archive's folder kind keeps them, its inspection id a UUIDv7 made at `at_s`."""
    inspection = str(uuid_utils.uuid7(nanoseconds=int(at_s * 1e9)))
    frame = Frame(part=Part(inspection_id=inspection, line="l1", station="s1", triggered_unix_ns=int(at_s * 1e9)))
    store = FolderStore(root)
    for kind in kinds:
        data = encode_image(grey(level), "png" if kind == "image" else "jpg")
        store.put(image_key(frame, Rendered(kind, data, "image/png", 64, 48)), data, "image/png")
    return inspection


def levels(source: object, count: int) -> list[int]:
    return [round(float(decode_image(source.grab(part()).data).mean())) for _ in range(count)]  # type: ignore[attr-defined]


def test_a_video_plays_in_order_at_its_recorded_pace(video: Path) -> None:
    source = open_source("s1", replay.Settings(path=str(video)))
    started = time.monotonic()
    images = [source.grab(part()) for _ in range(6)]
    # Frame 6 is due 0.5 s after frame 1 at the recorded 10 frames/s: never sooner.
    assert time.monotonic() - started >= 0.5 - 0.01
    assert [round(float(decode_image(i.data).mean()) / 30) for i in images] == [0, 1, 2, 3, 4, 5]
    assert (images[0].width, images[0].height, images[0].channels, images[0].encoding) == (64, 48, 3, "png")
    assert images[2].source_uri == f"{video.resolve().as_uri()}#frame=3&t=0.200"


def test_pace_recorded_sped_up_fixed_and_free_say_when_each_frame_is_due() -> None:
    now = [100.0]
    recorded = replay.Pacer("recorded", speed=2.0, max_gap_s=1.0, clock=lambda: now[0])
    # 0.4 s apart at speed 2 is 0.2 s; an hour's gap is shortened to max_gap_s (1 s, 0.5 s at speed 2).
    assert [recorded.due(t) for t in (50.0, 50.4, 3650.4, 3650.5)] == pytest.approx([100.0, 100.2, 100.7, 100.75])
    fixed = replay.Pacer("fixed", fps=4.0, clock=lambda: now[0])
    assert [fixed.due(t) for t in (0.0, 9.0, 9.1)] == pytest.approx([100.0, 100.25, 100.5])
    free = replay.Pacer("free", clock=lambda: now[0])
    now[0] = 120.0
    assert free.due(0.0) == free.due(500.0) == 120.0
    recorded.restart()
    assert recorded.due(7.0) == 120.0  # a loop starts the clock again


def test_an_archive_folder_replays_its_frames_in_trigger_order(tmp_path: Path) -> None:
    root = tmp_path / "images"
    # UUIDv7 ids made at these times; their folders' names do not sort as the times do across days.
    archived(root, 1_700_000_000.0, 10, ("image", "overlay"))  # a defect: the frame and its overlay
    archived(root, 1_700_000_000.3, 20, ("thumbnail",))  # a pass kept as a thumbnail only
    archived(root, 1_700_086_400.0, 30)  # the next day
    archived(root, 1_699_999_999.9, 40)
    source = open_source("s1", replay.Settings(path=str(root), pace="free"))
    assert levels(source, 3) == [40, 10, 30]  # overlays and thumbnails left out
    with pytest.raises(CameraError, match=r"camera replay:s1: all 3 frames of .* were replayed and loop is off"):
        source.grab(part())
    looped = open_source("s1", replay.Settings(path=str(root), pace="free", thumbnails=True, loop=True))
    assert levels(looped, 5) == [40, 10, 20, 30, 40]
    # Recorded pace over the archive: the day's gap shortened to max_gap_s.
    paced = open_source("s1", replay.Settings(path=str(root), max_gap_s=0.2))
    started = time.monotonic()
    assert levels(paced, 3) == [40, 10, 30]
    assert time.monotonic() - started >= 0.3 - 0.01  # 0.1 s between the first two, then 0.2 s for the day


def test_fixed_pace_video_and_its_end(video: Path) -> None:
    source = open_source("s1", replay.Settings(path=str(video), pace="fixed", fps=50, encoding="jpeg"))
    started = time.monotonic()
    assert [round(level / 30) for level in levels(source, 8)] == list(range(8))
    assert time.monotonic() - started >= 7 / 50 - 0.01
    with pytest.raises(CameraError, match=r"all 8 frames of .*shift.avi were replayed and loop is off"):
        source.grab(part())


def test_bad_input_is_named(tmp_path: Path) -> None:
    not_video = tmp_path / "notes.mp4"
    not_video.write_text("not a video at all\n" * 100)
    with pytest.raises(CameraError, match=r"camera replay:s1: .*notes.mp4 is not a video OpenCV's FFMPEG can read"):
        open_source("s1", replay.Settings(path=str(not_video)))
    with pytest.raises(CameraError, match=r"camera replay:s1: .*nowhere does not exist"):
        open_source("s1", replay.Settings(path=str(tmp_path / "nowhere")))
    (tmp_path / "empty").mkdir()
    with pytest.raises(CameraError, match=r"folder .*empty holds no images"):
        open_source("s1", replay.Settings(path=str(tmp_path / "empty")))
    with pytest.raises(ValidationError, match="fps is the rate of pace: fixed"):
        replay.Settings(path="x", fps=5)
    with pytest.raises(ValidationError, match="fps is the rate of pace: fixed"):
        replay.Settings(path="x", pace="fixed")
