"""Capture's camera sources, the serial stamp, and trigger-to-frame, without a bus."""

from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import zxingcpp
from pydantic import ValidationError

from lineguard.config import LineConfig
from lineguard.contracts import SERIAL_PATTERN, new_inspection_id, serial_for_sequence
from lineguard.imaging import decode_image
from lineguard.samples import SAMPLE_BOARDS
from lineguard.services.capture.frames import CaptureError, StationCameras
from lineguard.services.capture.sources import CameraError, folder, open_source, simulator
from lineguard.services.capture.sources.folder import FolderSource
from lineguard.services.capture.sources.simulator import SimulatorSource, simulator_playlist
from lineguard.v1.common_pb2 import Part
from lineguard.v1.trigger_pb2 import Trigger


def part(seq: int = 1, station: str = "s1") -> Part:
    return Part(inspection_id=new_inspection_id(), line="l1", station=station, recipe_id="pcb-a", sequence=seq)


def test_serial_is_lg_and_eight_digits_of_the_sequence() -> None:
    assert serial_for_sequence(42) == "LG-00000042"
    assert serial_for_sequence(0) == "LG-00000000"
    assert serial_for_sequence(4_294_967_295) == "LG-94967295"  # the largest uint32 wraps to 8 digits
    assert all(re.fullmatch(SERIAL_PATTERN, serial_for_sequence(s)) for s in (1, 99_999_999, 100_000_000))
    with pytest.raises(ValueError, match="never negative"):
        serial_for_sequence(-1)


def test_simulator_playlist_alternates_boards_with_defects_and_their_templates() -> None:
    names = [p.name for p in simulator_playlist()]
    assert len(names) == 24
    assert names[:4] == ["00041000_test.jpg", "00041000_temp.jpg", "00041001_test.jpg", "00041001_temp.jpg"]
    assert all(n.endswith("_test.jpg") for n in names[0::2])
    assert all(n.endswith("_temp.jpg") for n in names[1::2])
    assert [n[:8] for n in names[0::2]] == sorted(n[:8] for n in names[0::2])


def test_simulator_grabs_in_playlist_order_and_loops() -> None:
    source = SimulatorSource("s1", simulator.Settings(stamp_serial=False))
    # A template's turn is the good part: its board repaired from the template.
    expected = [f"simulator:{p.name.replace('_temp.jpg', '_test.jpg#repaired')}" for p in simulator_playlist()]
    uris = [source.grab(part(i)).source_uri for i in range(len(expected) + 2)]
    assert uris == expected + expected[:2]
    again = SimulatorSource("s1", simulator.Settings(stamp_serial=False))
    assert again.grab(part()).source_uri == expected[0]  # a fresh run starts at the same board


def test_simulator_without_loop_says_when_it_ran_out() -> None:
    source = SimulatorSource("s1", simulator.Settings(stamp_serial=False, loop=False))
    for i in range(24):
        source.grab(part(i))
    with pytest.raises(CameraError, match=r"simulator:s1: all 24 images were given and loop is off"):
        source.grab(part(25))


def test_stamped_frame_is_640x800_and_its_code_reads_back_as_the_serial() -> None:
    image = SimulatorSource("s1", simulator.Settings()).grab(part(42))
    assert (image.encoding, image.width, image.height, image.channels) == ("png", 640, 800, 1)
    pixels = decode_image(image.data, expected_encoding="png")
    assert pixels.shape == (800, 640, 3)
    board = cv2.imread(str(SAMPLE_BOARDS / "00041000_test.jpg"), cv2.IMREAD_GRAYSCALE)
    assert np.array_equal(pixels[:640, :, 0], board)  # the board itself is untouched (lossless)
    codes = zxingcpp.read_barcodes(pixels[640:])
    assert [(c.format.name, c.text) for c in codes] == [("DataMatrix", "LG-00000042")]
    assert zxingcpp.read_barcodes(pixels[:640]) == []  # nothing code-like on the board


def test_unstamped_simulator_frame_is_the_sample_file_itself() -> None:
    image = SimulatorSource("s1", simulator.Settings(stamp_serial=False)).grab(part())
    assert image.data == (SAMPLE_BOARDS / "00041000_test.jpg").read_bytes()
    assert (image.encoding, image.width, image.height, image.channels) == ("jpeg", 640, 640, 1)


def test_simulator_frames_carry_the_boards_template_as_reference() -> None:
    for stamp in (True, False):
        source = SimulatorSource("s1", simulator.Settings(stamp_serial=stamp))
        board, good = source.grab(part(1)), source.grab(part(2))
        assert board.source_uri == "simulator:00041000_test.jpg"
        assert good.source_uri == "simulator:00041000_test.jpg#repaired"
        template = (SAMPLE_BOARDS / "00041000_temp.jpg").read_bytes()
        assert board.reference == good.reference == template and board.reference_encoding == "jpeg"
    # The good part is the board with its defects repaired from the template: its own capture elsewhere.
    pixels = decode_image(good.data, expected_encoding="png")[:, :, 0]
    damaged = cv2.imread(str(SAMPLE_BOARDS / "00041000_test.jpg"), cv2.IMREAD_GRAYSCALE)
    clean = cv2.imread(str(SAMPLE_BOARDS / "00041000_temp.jpg"), cv2.IMREAD_GRAYSCALE)
    inside = np.zeros(pixels.shape, bool)
    for line in (SAMPLE_BOARDS / "00041000.txt").read_text().splitlines():
        x1, y1, x2, y2 = (int(v) for v in line.split()[:4])
        inside[y1 - 2 : y2 + 2, x1 - 2 : x2 + 2] = True
    assert np.array_equal(pixels[inside], clean[inside]) and np.array_equal(pixels[~inside], damaged[~inside])
    assert not np.array_equal(pixels, clean)


def test_a_folder_camera_sends_its_golden_reference_with_every_frame(tmp_path: Path) -> None:
    _write(tmp_path / "a", 10, ".png")
    _write(tmp_path / "b", 20, ".png")
    golden = tmp_path.parent / f"{tmp_path.name}-golden.png"
    _write(golden, 15, ".png")
    source = FolderSource("s1", folder.Settings(path=str(tmp_path), reference=str(golden)))
    assert {source.grab(part(i)).reference for i in range(2)} == {golden.read_bytes()}
    assert FolderSource("s1", folder.Settings(path=str(tmp_path))).grab(part()).reference == b""
    with pytest.raises(CameraError, match=r"folder:s1: cannot read .*missing.png"):
        FolderSource("s1", folder.Settings(path=str(tmp_path), reference=str(tmp_path / "missing.png")))


def _write(path: Path, value: int, ext: str) -> None:
    assert cv2.imwrite(str(path.with_suffix(ext)), np.full((8, 12, 3), value, np.uint8))


def test_folder_source_replays_images_in_name_order_and_loops(tmp_path: Path) -> None:
    _write(tmp_path / "b", 20, ".png")
    _write(tmp_path / "c", 30, ".bmp")
    _write(tmp_path / "a", 10, ".jpg")
    (tmp_path / "notes.txt").write_text("not an image")
    source = open_source("s1", folder.Settings(path=str(tmp_path)))
    grabs = [source.grab(part(i)) for i in range(4)]
    assert [Path(g.source_uri).name for g in grabs] == ["a.jpg", "b.png", "c.bmp", "a.jpg"]
    assert [g.encoding for g in grabs[:3]] == ["jpeg", "png", "bmp"]
    assert all((g.width, g.height, g.channels) == (12, 8, 3) for g in grabs)
    assert grabs[1].data == (tmp_path / "b.png").read_bytes()


def test_folder_source_without_loop_stops(tmp_path: Path) -> None:
    _write(tmp_path / "only", 0, ".png")
    source = FolderSource("s1", folder.Settings(path=str(tmp_path), loop=False))
    source.grab(part())
    with pytest.raises(CameraError, match="all 1 images were given"):
        source.grab(part())


def test_folder_source_names_a_missing_or_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(CameraError, match=r"folder:s1: folder .*nowhere does not exist"):
        FolderSource("s1", folder.Settings(path=str(tmp_path / "nowhere")))
    (tmp_path / "readme.txt").write_text("x")
    with pytest.raises(CameraError, match=r"holds no images \(.jpg, .jpeg, .png, .bmp\)"):
        FolderSource("s1", folder.Settings(path=str(tmp_path)))
    with pytest.raises(ValidationError, match=r"path\n  Field required"):
        folder.Settings()  # type: ignore[call-arg]


def test_folder_source_names_a_file_that_is_not_an_image(tmp_path: Path) -> None:
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    source = FolderSource("s1", folder.Settings(path=str(tmp_path)))
    with pytest.raises(CameraError, match=r"broken.jpg is not a readable jpeg, png or bmp image"):
        source.grab(part())


def test_capture_builds_the_frame_of_the_triggered_part(line_config_dict) -> None:
    cameras = StationCameras.from_config(LineConfig(**line_config_dict()))
    trigger = Trigger(part=part(7), source="cli")
    frame = cameras.capture(trigger)
    assert frame.part == trigger.part
    assert (frame.camera_id, frame.encoding, frame.width, frame.height) == ("simulator:s1", "png", 640, 800)
    assert frame.source_uri == "simulator:00041000_test.jpg"
    assert frame.px_per_mm == pytest.approx(48.0)
    assert frame.captured_unix_ns >= trigger.part.triggered_unix_ns
    assert [t.stage for t in frame.timings] == ["capture"] and frame.timings[0].ms > 0
    assert decode_image(frame.data).shape == (800, 640, 3)
    assert frame.reference_data == (SAMPLE_BOARDS / "00041000_temp.jpg").read_bytes()
    assert frame.reference_encoding == "jpeg"


def test_capture_refuses_an_unknown_station(line_config_dict) -> None:
    cameras = StationCameras.from_config(LineConfig(**line_config_dict()))
    with pytest.raises(CaptureError, match=r"station 's9', which is not configured on line 'l1' \(known: s1\)"):
        cameras.capture(Trigger(part=part(station="s9")))


def test_capture_counts_each_production_frames_quality_in_the_stations_histograms(line_config_dict) -> None:
    from prometheus_client import REGISTRY

    def counted(figure: str) -> tuple[float, float]:
        labels = {"station": "s1"}
        count = REGISTRY.get_sample_value(f"lineguard_image_{figure}_count", labels) or 0.0
        return count, REGISTRY.get_sample_value(f"lineguard_image_{figure}_sum", labels) or 0.0

    figures = ("brightness", "contrast", "sharpness", "saturated_ratio")
    cameras = StationCameras.from_config(LineConfig(**line_config_dict()))
    before = {f: counted(f) for f in figures}
    frame = cameras.capture(Trigger(part=part(1)))
    after = {f: counted(f) for f in figures}
    for figure, value in zip(figures, ("brightness", "contrast", "sharpness", "saturated"), strict=True):
        assert after[figure][0] == before[figure][0] + 1, figure
        assert after[figure][1] - before[figure][1] == pytest.approx(getattr(frame.quality, value)), figure
    assert 0 < frame.quality.brightness < 255
    # A golden self-test part's image is not the line's lighting: measured on its frame, not counted.
    simulated = part(2)
    simulated.simulated = True
    assert cameras.capture(Trigger(part=simulated)).HasField("quality")
    assert {f: counted(f) for f in figures} == after
