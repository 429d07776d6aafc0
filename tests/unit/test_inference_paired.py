"""Reference comparison: the paired input, a paired model's card, and what happens without a reference."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from lineguard.config import LineConfig
from lineguard.contracts import new_inspection_id
from lineguard.imaging import ROI, FrameError, decode_image
from lineguard.samples import __file__ as samples_init
from lineguard.services.inference.batching import FrameBatcher
from lineguard.services.inference.detect import _reference, infer_frame, prepare_frame
from lineguard.v1.common_pb2 import Part
from lineguard.v1.frame_pb2 import Frame
from lineguard.vision.detect import detect, stored_input
from lineguard.vision.errors import UnpairedInput
from lineguard.vision.model import Detector, ModelLoadError, load_model, packaged_model_path
from lineguard.vision.paired import compose, paired_tensor, register
from lineguard.vision.preprocess import preprocess

SAMPLES = Path(samples_init).parent / "deeppcb"
STEM = "00041000"


def as_model(tmp_path: Path, mode: str) -> Path:
    """The packaged model with its card saying input mode `mode` (the weights do not matter here)."""
    target = tmp_path / f"{mode}.onnx"
    shutil.copyfile(packaged_model_path(), target)
    card = json.loads(packaged_model_path().with_suffix(".json").read_text())
    card["input"]["mode"] = mode
    target.with_suffix(".json").write_text(json.dumps(card))
    return target


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Detector]:
    folder = tmp_path_factory.mktemp("models")
    return {mode: load_model(as_model(folder, mode), intra_op_threads=1) for mode in ("image", "paired")}


def grey(suffix: str) -> np.ndarray:
    return cv2.imread(str(SAMPLES / f"{STEM}_{suffix}.jpg"), cv2.IMREAD_GRAYSCALE)


def boxes(found) -> list[tuple]:
    found = found.detections
    return [
        (int(c), *(round(float(v), 2) for v in box), round(float(s), 4))
        for c, box, s in zip(found.class_id, found.xyxy, found.confidence, strict=True)
    ]


def test_the_paired_input_is_image_reference_and_their_difference() -> None:
    board, template = grey("test"), grey("temp")
    paired = compose(cv2.cvtColor(board, cv2.COLOR_GRAY2BGR), template)
    assert paired.shape == (*board.shape, 3) and paired.dtype == np.uint8
    assert np.array_equal(paired[:, :, 0], board) and np.array_equal(paired[:, :, 1], template)
    assert np.array_equal(paired[:, :, 2], cv2.absdiff(board, template))
    assert not compose(template, template)[:, :, 2].any()
    with pytest.raises(ValueError, match=r"the reference image is 600x640 but the image is 640x640"):
        compose(board, template[:, :600])


def test_the_card_names_the_input_mode(models: dict[str, Detector], tmp_path: Path) -> None:
    assert models["paired"].card.input_mode == "paired" and models["image"].card.input_mode == "image"
    with pytest.raises(ModelLoadError, match=r"input mode 'stereo' is not one lineguard runs \(image, paired\)"):
        load_model(as_model(tmp_path, "stereo"))


def test_a_paired_model_sees_what_a_plain_one_sees_on_the_composed_input(models: dict[str, Detector]) -> None:
    board, template = grey("test"), grey("temp")
    composed = compose(board, template)
    for roi in (None, ROI(100, 40, 400, 500)):
        ours = detect(models["paired"], board, conf_threshold=0.01, iou_threshold=0.5, roi=roi, reference=template)
        plain = detect(models["image"], composed, conf_threshold=0.01, iou_threshold=0.5, roi=roi)
        assert boxes(ours) == boxes(plain) and ours.detections
    # A plain model ignores a reference.
    image = cv2.cvtColor(board, cv2.COLOR_GRAY2BGR)
    assert boxes(detect(models["image"], image, conf_threshold=0.01, iou_threshold=0.5, reference=template)) == boxes(
        detect(models["image"], image, conf_threshold=0.01, iou_threshold=0.5)
    )


def test_a_dataset_image_of_a_paired_model_is_split_back(models: dict[str, Detector]) -> None:
    composed = compose(grey("test"), grey("temp"))
    image, reference = stored_input(models["paired"], composed)
    assert np.array_equal(image, grey("test")) and np.array_equal(reference, grey("temp"))
    assert stored_input(models["image"], composed) == (composed, None)
    with pytest.raises(UnpairedInput, match=r"is a paired model: .*; this one has shape \(640, 640\)"):
        stored_input(models["paired"], grey("test"))


def test_a_plain_image_is_not_read_as_its_own_reference(models: dict[str, Detector]) -> None:
    # Split as a paired input, a plain grey board is image and reference at once: blank difference, nothing found.
    board = cv2.imread(str(SAMPLES / f"{STEM}_test.jpg"))
    with pytest.raises(UnpairedInput, match=r"third channel is not the difference of the first two: a plain image"):
        stored_input(models["paired"], board)
    identical = compose(grey("temp"), grey("temp"))  # a reference against itself is still a paired input
    image, reference = stored_input(models["paired"], identical)
    assert np.array_equal(image, grey("temp")) and np.array_equal(reference, grey("temp"))


def test_a_paired_frame_decodes_to_grey_as_the_importer_reads_it() -> None:
    for suffix in ("test", "temp"):
        decoded = decode_image((SAMPLES / f"{STEM}_{suffix}.jpg").read_bytes(), grey=True)
        assert decoded.shape == (640, 640) and np.array_equal(decoded, grey(suffix))


def frame(reference: bytes, *, encoding: str = "jpeg") -> Frame:
    part = Part(inspection_id=new_inspection_id(), line="l1", station="s1", recipe_id="pcb-a", sequence=1)
    return Frame(
        part=part,
        encoding="jpeg",
        data=(SAMPLES / f"{STEM}_test.jpg").read_bytes(),
        px_per_mm=48.0,
        reference_data=reference,
        reference_encoding=encoding,
    )


def test_frames_a_paired_model_cannot_judge_say_why(models: dict[str, Detector], line_config_dict) -> None:
    config = LineConfig(**line_config_dict())
    template = (SAMPLES / f"{STEM}_temp.jpg").read_bytes()
    small = cv2.imencode(".png", grey("temp")[:320])[1].tobytes()
    cases = [
        (frame(b""), "compares each image with the part's reference image, and none was given"),
        (frame(template[:3000]), "reference image: truncated jpeg"),
        (
            frame(small, encoding="png"),
            "inspect_roi [0, 0, 640, 640]): reference image: region 0,0 640x640 lies outside the 640x320 image",
        ),
    ]
    for bad, reason in cases:
        with pytest.raises(FrameError, match=re.escape(reason)):
            infer_frame(bad, config, models["paired"])
    result = infer_frame(frame(template), config, models["paired"])
    plain = detect(
        models["image"],
        compose(grey("test"), grey("temp")),
        conf_threshold=config.model.conf_threshold,
        iou_threshold=config.model.iou_threshold,
    )
    assert [(d.class_id, round(d.score, 4)) for d in result.detections] == [
        (int(c), round(float(s), 4))
        for c, s in zip(plain.detections.class_id, plain.detections.confidence, strict=True)
    ]


def test_a_frame_prepared_for_a_model_since_replaced_is_prepared_again(
    models: dict[str, Detector], line_config_dict
) -> None:
    # The pipeline prepares a frame while the model runs the one before; a promotion may swap the model
    # in between. The frame must then be judged whole by the new model, as if it had come after the swap.
    config = LineConfig(**line_config_dict())
    serving = {"model": models["paired"]}
    pipeline = FrameBatcher(SimpleNamespace(config=config), lambda: serving["model"])
    sent = frame((SAMPLES / f"{STEM}_temp.jpg").read_bytes())
    prepared = prepare_frame(sent, config, models["paired"])
    serving["model"] = models["image"]
    (result,) = pipeline._infer([prepared])

    def found(r) -> list[tuple]:
        return [(d.class_id, round(d.score, 4), round(d.box.x1, 1)) for d in r.detections]

    assert found(result) == found(infer_frame(sent, config, models["image"]))
    assert found(result) != found(infer_frame(sent, config, models["paired"]))


def test_the_paired_tensor_is_the_composed_image_letterboxed() -> None:
    # One pass from the planes must give exactly what composing and letterboxing the image gives, whether the
    # input is padded only, shrunk, or enlarged.
    board, template = grey("test"), grey("temp")
    large = cv2.resize(board, (800, 700)), cv2.resize(template, (800, 700))
    cases = [(board, template, 672, False), (*large, 640, False), (board[:300, :200], template[:300, :200], 640, True)]
    for image, reference, size, scaleup in cases:
        tensor, placement = paired_tensor(image, reference, size, scaleup=scaleup)
        expected, expected_placement = preprocess(compose(image, reference), size, scaleup=scaleup)
        assert np.array_equal(tensor, expected) and placement == expected_placement


def test_a_reference_is_decoded_once_for_every_frame_that_brings_it(
    models: dict[str, Detector], line_config_dict
) -> None:
    config = LineConfig(**line_config_dict())
    template = (SAMPLES / f"{STEM}_temp.jpg").read_bytes()
    _reference.cache_clear()
    first, second = (infer_frame(frame(template), config, models["paired"]) for _ in range(2))
    assert (_reference.cache_info().misses, _reference.cache_info().hits) == (1, 1)
    assert [d.score for d in first.detections] == [d.score for d in second.detections]
    for _ in range(2):  # a reference that does not decode is refused every time, never kept
        with pytest.raises(FrameError, match="reference image: truncated jpeg"):
            infer_frame(frame(template[:3000]), config, models["paired"])
    assert _reference.cache_info().currsize == 1


def moved(image: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """The image as a camera would see the part dx, dy px further on (the edge repeated where it came from)."""
    move = np.float32([[1, 0, dx], [0, 1, dy]])
    return cv2.warpAffine(image, move, image.shape[::-1], flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_REPLICATE)


def test_a_reference_is_shifted_onto_a_part_that_moved() -> None:
    board, template = grey("test"), grey("temp")
    assert np.array_equal(register(moved(board, 7, -4), template, 16), moved(template, 7, -4))
    assert register(board, template, 16) is not None and np.array_equal(register(board, template, 16), template)
    with pytest.raises(
        ValueError,
        match=r"the part sits \+7, -4 px from its reference, more than the 4 px the "
        r"recipe aligns \(align_reference_px\): it cannot be compared",
    ):
        register(moved(board, 7, -4), template, 4)


def test_a_part_that_moved_is_judged_as_if_it_had_not_when_the_recipe_aligns(models: dict[str, Detector]) -> None:
    board, template = grey("test"), grey("temp")
    settings = {"conf_threshold": 0.25, "iou_threshold": 0.45}
    still = detect(models["paired"], board, reference=template, **settings).detections
    part = moved(board, 7, -4)
    aligned = detect(models["paired"], part, reference=template, align_px=16, **settings).detections

    def placed(found, dx: int = 0, dy: int = 0) -> list[tuple]:
        names = models["paired"].card.classes
        return sorted(
            (names[c], round(float(box[0]) + dx), round(float(box[1]) + dy))
            for c, box in zip(found.class_id, found.xyxy, strict=True)
        )

    assert still and len(aligned) == len(still)
    for a, s in zip(placed(aligned), placed(still, 7, -4), strict=True):
        assert a[0] == s[0] and abs(a[1] - s[1]) <= 2 and abs(a[2] - s[2]) <= 2
    # Unaligned, the shift itself reads as defects: what a recipe without align_reference_px must not meet.
    unaligned = detect(models["paired"], part, reference=template, **settings).detections
    assert len(unaligned) > len(still)


def test_the_recipe_says_how_far_the_service_aligns(models: dict[str, Detector], line_config_dict) -> None:
    config_dict = line_config_dict()
    part = frame((SAMPLES / f"{STEM}_temp.jpg").read_bytes())
    part.data, part.encoding = cv2.imencode(".png", moved(grey("test"), 7, -4))[1].tobytes(), "png"
    config_dict["recipes"]["pcb-a"]["align_reference_px"] = 4
    with pytest.raises(FrameError, match=r"the part sits \+7, -4 px from its reference, more than the 4 px"):
        infer_frame(part, LineConfig(**config_dict), models["paired"])
    config_dict["recipes"]["pcb-a"]["align_reference_px"] = 16
    aligned = infer_frame(part, LineConfig(**config_dict), models["paired"])
    still = infer_frame(frame((SAMPLES / f"{STEM}_temp.jpg").read_bytes()), LineConfig(**config_dict), models["paired"])
    assert sorted(d.class_name for d in aligned.detections) == sorted(d.class_name for d in still.detections)
