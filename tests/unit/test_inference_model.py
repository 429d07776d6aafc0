"""The model loader's errors, and the shipped model over sample boards, frame to InferenceResult."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from lineguard.config import LineConfig
from lineguard.imaging import FrameError, encode_image
from lineguard.samples import __file__ as samples_init
from lineguard.services.inference.detect import infer_frame
from lineguard.testing.boards import board_frame
from lineguard.v1.frame_pb2 import Frame
from lineguard.vision.model import Detector, ModelLoadError, load_model, packaged_model_path

SAMPLES = Path(samples_init).parent / "deeppcb"
BOARDS = ("00041000", "50600001")


@pytest.fixture(scope="module")
def detector() -> Detector:
    return load_model(intra_op_threads=1)


@pytest.fixture(scope="module")
def config(line_config_dict) -> LineConfig:
    return LineConfig(**line_config_dict())


def frame_of(
    data: bytes, *, recipe: str = "pcb-a", encoding: str = "jpeg", px_per_mm: float = 48.0, stem: str = BOARDS[0]
) -> Frame:
    frame = board_frame(1, stem, data=data, recipe=recipe, px_per_mm=px_per_mm)
    frame.encoding = encoding
    return frame


def board(stem: str) -> bytes:
    return (SAMPLES / f"{stem}_test.jpg").read_bytes()


def test_the_packaged_model_and_its_card_are_in_the_package() -> None:
    path = packaged_model_path()
    card = json.loads(path.with_suffix(".json").read_text())
    assert path.is_file() and path.stat().st_size < 12 * 1024 * 1024
    assert card["classes"] == ["open", "short", "mousebite", "spur", "copper", "pin-hole"]
    # DeepPCB's 640 px boards run padded to 672, at their own scale: the geometry the model was validated at.
    assert (card["input"]["width"], card["input"]["scaleup"], card["input"]["mode"]) == (672, False, "paired")


def test_a_missing_model_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"model .*nowhere\.onnx: file not found") as err:
        load_model(tmp_path / "nowhere.onnx")
    assert err.value.path == tmp_path / "nowhere.onnx"


def test_a_file_that_is_not_onnx_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "model.onnx"
    path.write_bytes(b"this is a text file, not a protobuf graph")
    with pytest.raises(ModelLoadError, match=r"model .*model\.onnx: not a loadable ONNX model"):
        load_model(path)


def copy_model(tmp_path: Path, card: dict | None) -> Path:
    path = tmp_path / "m.onnx"
    shutil.copyfile(packaged_model_path(), path)
    if card is not None:
        path.with_suffix(".json").write_text(json.dumps(card))
    return path


def test_a_card_naming_fewer_classes_than_the_output_has_is_refused(tmp_path: Path) -> None:
    path = copy_model(
        tmp_path, {"model_id": "m", "version": "1", "classes": ["a", "b", "c", "d", "e"], "input": {"width": 640}}
    )
    with pytest.raises(
        ModelLoadError,
        match=r"output has 10 rows = 4 box \+ 6 class scores, "
        r"but the card / metadata names 5 classes",
    ):
        load_model(path)


def test_a_card_with_the_wrong_input_size_is_refused(tmp_path: Path) -> None:
    onnx = pytest.importorskip("onnx")
    card = json.loads(packaged_model_path().with_suffix(".json").read_text())
    card["input"]["width"] = 320
    del card["onnx_sha256"]  # the file is changed below: this card describes the shape, not the bytes
    path = copy_model(tmp_path, card)
    # The shipped export has open height and width; a model fixed at 640 x 640 must not be fed 320.
    model = onnx.load(str(path))
    for dim, size in zip(model.graph.input[0].type.tensor_type.shape.dim, (1, 3, 640, 640), strict=True):
        dim.dim_value = size
    onnx.save(model, str(path))
    with pytest.raises(ModelLoadError, match="input is 640x640 but the card says 320"):
        load_model(path)


def test_a_card_that_is_not_json_is_named(tmp_path: Path) -> None:
    path = copy_model(tmp_path, None)
    path.with_suffix(".json").write_text("{ not json")
    with pytest.raises(ModelLoadError, match=r"model card m\.json is not valid JSON"):
        load_model(path)


def test_without_a_card_the_ultralytics_metadata_names_the_classes(tmp_path: Path) -> None:
    loaded = load_model(copy_model(tmp_path, None))
    assert loaded.card.classes == ("open", "short", "mousebite", "spur", "copper", "pin-hole")
    assert loaded.card.input_size == 672
    assert loaded.card.model_id == "m"
    assert loaded.card.version.startswith("sha256:") and len(loaded.card.version) == len("sha256:") + 12


def test_settings_override_the_cards_id_and_version(tmp_path: Path) -> None:
    loaded = load_model(packaged_model_path(), model_id="pcb-defects", version="7")
    assert (loaded.card.model_id, loaded.card.version) == ("pcb-defects", "7")


@pytest.mark.parametrize("stem", BOARDS)
def test_the_shipped_model_turns_a_sample_board_into_a_valid_result(detector, config, stem: str) -> None:
    card = json.loads(packaged_model_path().with_suffix(".json").read_text())
    frame = frame_of(board(stem), stem=stem)
    result = infer_frame(frame, config, detector)
    assert result.part == frame.part
    assert (result.model_id, result.model_version) == (card["model_id"], card["version"])
    assert (result.image_width, result.image_height) == (640, 640)
    assert [t.stage for t in result.timings] == ["preprocess", "infer", "postprocess"]
    assert all(t.ms > 0 for t in result.timings)
    assert result.completed_unix_ns > 0
    scores = [d.score for d in result.detections]
    assert scores == sorted(scores, reverse=True)
    for det in result.detections:
        assert det.class_name == card["classes"][det.class_id]
        assert config.model.conf_threshold <= det.score <= 1
        assert 0 <= det.box.x1 < det.box.x2 <= 640 and 0 <= det.box.y1 < det.box.y2 <= 640
        assert det.area_px == pytest.approx((det.box.x2 - det.box.x1) * (det.box.y2 - det.box.y1), rel=1e-4)
        assert det.area_mm2 == pytest.approx(det.area_px / 48.0**2, rel=1e-4)


def test_boxes_stay_inside_the_recipes_inspect_roi(detector, config) -> None:
    roi_config = config.model_copy(deep=True)
    roi_config.recipes["pcb-a"].inspect_roi = [320, 0, 320, 640]
    roi_config.model.conf_threshold = 0.001  # enough boxes to see where they land
    result = infer_frame(frame_of(board(BOARDS[0])), roi_config, detector)
    assert result.detections
    assert all(d.box.x1 >= 320 and d.box.x2 <= 640 for d in result.detections)
    assert (result.image_width, result.image_height) == (640, 640)


def test_without_calibration_there_are_no_mm2_areas(detector, config) -> None:
    low = config.model_copy(deep=True)
    low.model.conf_threshold = 0.001
    result = infer_frame(frame_of(board(BOARDS[0]), px_per_mm=0.0), low, detector)
    assert result.detections and all(d.area_mm2 == 0 and d.area_px > 0 for d in result.detections)


def test_frames_that_cannot_be_inspected_say_why(detector, config) -> None:
    jpeg = board(BOARDS[0])
    outside = config.model_copy(deep=True)
    outside.recipes["pcb-a"].inspect_roi = [600, 0, 100, 100]
    object_frame = frame_of(b"")
    object_frame.object_key = "frames/abc"
    cases = [
        (frame_of(b"GIF89a nope"), config, "frame is not an image"),
        (frame_of(jpeg[: len(jpeg) // 2]), config, "truncated jpeg"),
        (frame_of(jpeg, recipe="pcb-z"), config, "unknown recipe 'pcb-z'"),
        (object_frame, config, "object_key 'frames/abc': its image was not fetched from the object store"),
        (
            frame_of(jpeg),
            outside,
            "(recipe 'pcb-a', inspect_roi [600, 0, 100, 100]): region 600,0 100x100 lies outside the 640x640 image",
        ),
        (
            frame_of(encode_image(np.zeros((8, 8, 3), np.uint8), "png")),
            config,
            "frame says encoding 'jpeg' but its bytes are png",
        ),
    ]
    for frame, cfg, reason in cases:
        with pytest.raises(FrameError, match=re.escape(reason)):
            infer_frame(frame, cfg, detector)
